"""The dashboard as a person uses it: a real service process, a real training job, headless Chromium.

Screenshots land in ``test-artifacts/dashboard/``. ``LRTUNE_DOCS_SCREENSHOTS=1`` also runs the test that
refreshes ``docs/images/dashboard-*.png``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lrtune.server.launch import (
    ADMIN_KEY_ENV,
    REDIS_URL_ENV,
    free_port,
    local_program,
    start_local,
    stop_local,
    wait_ready,
)
from tests.dashboard.helpers import (
    JOB_CONFIG,
    PLAN_CONFIG,
    PLAN_LABEL_NOISE,
    ROOT,
    Worker,
    chromium_or_skip,
    close_browser,
    fit_page,
    make_browser,
    screenshot,
    severe_console_errors,
)

ADMIN_KEY = "browser-test-admin-key"
WAIT_S = 20.0

pytestmark = pytest.mark.timeout(240)


def start_service(tmp: Path, name: str, admin_key: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    # No job quota: one test creates a thousand jobs from this machine (the quota has its own tests).
    env = {ADMIN_KEY_ENV: admin_key, REDIS_URL_ENV: "", "LRTUNE_MAX_JOBS_PER_CLIENT": "0"}
    proc = start_local(port, env, tmp / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url, proc


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lrtune serve`` on a free loopback port, embedded store, no admin key."""
    url, proc = start_service(tmp_path_factory.mktemp("service"), "open", "")
    try:
        yield url
    finally:
        stop_local(proc)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Any]:
    chromium_or_skip()
    driver = make_browser(downloads)
    try:
        yield driver
    finally:
        close_browser(driver)


def wait(driver: Any, condition: Callable[[Any], Any], message: str, timeout_s: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(condition, message)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    found: list[Any] = driver.find_elements(By.CSS_SELECTOR, selector)
    return found


def attr(driver: Any, selector: str, name: str) -> str | None:
    """An attribute of the first match, read in one script (the page re-renders while it polls)."""
    value: str | None = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
        selector,
        name,
    )
    return value


def text(driver: Any, selector: str) -> str:
    """The text of the first match, or ''."""
    value: str = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector
    )
    return value


def click(driver: Any, selector: str) -> None:
    """Click the first match like a person would, finding it again if a re-render replaced it."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt(d: Any) -> bool:
        try:
            found = css(d, selector)
            if not found:
                return False
            found[0].click()
            return True
        except StaleElementReferenceException:
            return False

    wait(driver, attempt, f"cannot click {selector}")


def count(driver: Any, selector: str) -> int:
    n: int = driver.execute_script("return document.querySelectorAll(arguments[0]).length;", selector)
    return n


def points(driver: Any, chart: str) -> int:
    return int(attr(driver, f'svg[data-chart="{chart}"]', "data-points") or 0)


def series_points(driver: Any, chart: str, series: str) -> int:
    return int(attr(driver, f'svg[data-chart="{chart}"] g[data-series="{series}"]', "data-n") or 0)


def series_x(driver: Any, chart: str, series: str) -> tuple[float, float]:
    """The leftmost and rightmost x (pixels) of a line series' path."""
    xs: list[float] = driver.execute_script(
        "const p = document.querySelector(`svg[data-chart='${arguments[0]}'] g[data-series='${arguments[1]}'] path`);"
        "return p ? [...p.getAttribute('d').matchAll(/[ML](-?[0-9.]+),/g)].map((m) => Number(m[1])) : [];",
        chart,
        series,
    )
    assert xs, f"{chart}/{series} has no path"
    return min(xs), max(xs)


def test_a_running_job_in_the_list_and_on_its_page(service: str, browser: Any, downloads: Path) -> None:
    worker = Worker(service, name="digits-live")
    worker.run(until_step=260)  # a few stages in, still running
    job = worker.job_id

    browser.get(service + "/")
    wait(browser, lambda d: count(d, f'tr[data-job-id="{job}"]'), "the job is not in the list")
    row = text(browser, f'tr[data-job-id="{job}"]')
    assert "digits-live" in row and "running" in row and ("explore" in row or "train" in row)
    assert f"/ {JOB_TOTAL:,}" in row  # progress: steps used of the budget
    screenshot(browser, "list")

    browser.execute_script("window.notReloaded = true")
    click(browser, f'tr[data-job-id="{job}"] a.job-link')
    wait(browser, lambda d: points(d, "loss") > 0 and points(d, "posterior") > 0, "the job page has no charts")
    assert browser.current_url == f"{service}/jobs/{job}"
    assert series_points(browser, "loss", "train") > 50
    assert series_points(browser, "lr", "lr-train") >= 2 and series_points(browser, "lr", "lr-warmup") >= 2
    assert count(browser, 'svg[data-chart="candidates"] circle.forecast') >= 2
    assert count(browser, 'svg[data-chart="posterior"] circle.forecast.winner') == 1
    assert series_points(browser, "posterior", "posterior-band") == 96
    assert count(browser, "table.stages tbody tr") >= 2
    # A greedy job makes no plan: no model, prediction or planned-LR layers, and its candidates have forecasts at tau.
    assert count(browser, 'g[data-series^="plan-"]') == 0 and count(browser, ".plan-line, [data-plan-final]") == 0
    assert series_points(browser, "candidates", "forecasts") >= 2
    assert series_points(browser, "candidates", "extrapolation") >= 2
    assert "Forecast" in text(browser, "table.candidates thead")
    assert "Predicted final loss" not in text(browser, ".job")
    assert count(browser, "#split .part") >= 3
    labels = browser.execute_script(
        "return [...document.querySelectorAll('svg.chart text.axis-label')].map((e) => e.textContent)"
    )
    assert {"loss", "learning rate", "learning rate (log scale)", "gradient steps used (exploration included)"} <= set(
        labels
    )
    screenshot(browser, "job-running")

    # A report made after the page loaded shows up without a reload, and keeps the zoom and the hidden series.
    drag(browser, "lr", 60, 200)
    wait(browser, lambda d: attr(d, 'svg[data-chart="loss"]', "data-zoomed") == "true", "the drag did not zoom")
    zoomed = x_window(browser, "loss")
    click(browser, 'ul.legend[data-chart="lr"] button[data-series="bounds"]')
    wait(browser, lambda d: series_points(d, "lr", "bounds") == 0, "the search range was not hidden")
    used = int(attr(browser, ".job", "data-steps-used") or 0)
    segments = int(attr(browser, ".job", "data-segments") or 0)
    ran = worker.step()
    wait(browser, lambda d: int(attr(d, ".job", "data-segments") or 0) > segments, "the page did not update")
    assert int(attr(browser, ".job", "data-steps-used") or 0) == used + ran.steps
    assert browser.execute_script("return window.notReloaded") is True
    assert x_window(browser, "loss") == zoomed == x_window(browser, "lr")
    assert attr(browser, 'svg[data-chart="lr"] g[data-series="bounds"]', "data-hidden") == "true"
    click(browser, "#chart-lr button.reset-zoom")
    wait(browser, lambda d: x_window(d, "loss") == (0, JOB_TOTAL), "Reset zoom did not zoom out")
    click(browser, 'ul.legend[data-chart="lr"] button[data-series="bounds"]')
    wait(browser, lambda d: series_points(d, "lr", "bounds") == 4, "the search range did not come back")

    # To the end: the page follows, and the last stage's posterior is shown.
    worker.run()
    wait(browser, lambda d: attr(d, ".job", "data-status") == "done", "the page did not see the job finish")
    assert "done" in text(browser, ".job-head .badge")
    sched = worker.http.get(f"/v1/jobs/{job}/schedule").json()
    latest = max(st["index"] for st in sched["stages"] if st["candidates"])
    assert attr(browser, ".stage-detail", "data-stage") == str(latest)
    assert sched["sweep"] is not None and attr(browser, "[data-sweep]", "data-sweep") == "done"
    assert "suggested LR" in text(browser, "[data-sweep]")
    screenshot(browser, "job-done")

    # Pick stage 0: its candidates and its posterior replace the latest stage's.
    click(browser, 'table.stages tr[data-stage="0"]')
    wait(browser, lambda d: attr(d, ".stage-detail", "data-stage") == "0", "stage 0 was not shown")
    wait(
        browser,
        lambda d: (
            count(d, 'svg[data-chart="candidates"] circle.forecast')
            == sum(c["forecast"] is not None for c in sched["stages"][0]["candidates"])
        ),
        "stage 0's forecasts are not drawn",
    )
    assert count(browser, "table.candidates tbody tr") == len(sched["stages"][0]["candidates"])

    # Exports download what the schedule route answers.
    for fmt, suffix in [("json", "schedule.json"), ("csv", "schedule.csv"), ("lambdalr", "lambdalr.json")]:
        click(browser, f'button[data-export="{fmt}"]')
        target = downloads / f"lrtune-{job}-{suffix}"
        wait(browser, lambda _d, t=target: t.is_file() and t.stat().st_size > 0, f"no {fmt} download")
        expected = worker.http.get(f"/v1/jobs/{job}/schedule", params={"format": fmt}).content
        assert target.read_bytes() == expected, fmt
    assert not severe_console_errors(browser)
    worker.close()


JOB_TOTAL = 600


def test_a_plan_preset_job_shows_its_plan_and_the_predicted_loss(service: str, browser: Any) -> None:
    worker = Worker(service, name="digits-plan", config=dict(PLAN_CONFIG), label_noise=PLAN_LABEL_NOISE)
    worker.run(until_step=400)  # past its one search, on the plan
    sched = worker.http.get(f"/v1/jobs/{worker.job_id}/schedule").json()
    plan = sched["plan"]
    assert plan is not None and plan["fitted"] and plan["predicted"] and plan["final_loss"] is not None
    stage = sched["stages"][0]
    assert stage["kind"] == "plan"

    browser.get(f"{service}/jobs/{worker.job_id}")
    wait(
        browser,
        lambda d: points(d, "posterior") > 0 and series_points(d, "loss", "plan-predicted") > 0,
        "the plan is not drawn",
    )
    # The loss chart: the model along the kept line, then its prediction under the plan (dashed) with a 90% band
    # over the rest of the budget; the LR chart: the planned LR (dashed).
    assert series_points(browser, "loss", "plan-fitted") == len(plan["fitted"])
    assert series_points(browser, "loss", "plan-predicted") == len(plan["predicted"]) + 1  # joined to the fit
    assert series_points(browser, "loss", "plan-band") == len(plan["predicted"])
    assert series_points(browser, "loss", "plan-final") == 1
    assert series_points(browser, "lr", "plan-lr") == len(plan["lr"]) + 1
    for chart, series in (("loss", "plan-predicted"), ("lr", "plan-lr")):
        assert attr(browser, f'svg[data-chart="{chart}"] g[data-series="{series}"] path', "stroke-dasharray")
    fitted, predicted, train = (series_x(browser, "loss", s) for s in ("plan-fitted", "plan-predicted", "train"))
    assert abs(predicted[0] - fitted[1]) < 1 and predicted[1] > train[1] + 100  # from now to the end of the budget
    assert attr(browser, ".plan-line", "data-plan-start") == str(plan["start"])
    assert "predicts a final loss of" in text(browser, ".plan-line")
    assert "Predicted final loss" in text(browser, "[data-plan-final]")

    # Candidates are judged by predicted final loss: labelled so, and drawn at the end of the budget, not at a
    # short horizon, with no extrapolation from their short curves.
    assert "Predicted final loss" in text(browser, "table.candidates thead")
    assert "Forecast" not in text(browser, "table.candidates thead")
    assert "(to end)" in text(browser, 'table.stages tr[data-stage="0"]')
    assert "judged by predicted final loss" in text(browser, ".stage-detail h3")
    shown = [st for st in sched["stages"] if st["candidates"]][-1]  # the latest stage with candidates
    assert shown["kind"] == "plan"
    judged = sum(c["forecast"] is not None for c in shown["candidates"])
    assert series_points(browser, "candidates", "final-losses") == judged
    assert series_points(browser, "candidates", "forecasts") == 0
    assert series_points(browser, "candidates", "extrapolation") == 0
    end_x = float(attr(browser, 'svg[data-chart="candidates"] g[data-series="budget-end"] line', "x1") or 0)
    marks = browser.execute_script(
        "return [...document.querySelectorAll(`svg[data-chart='candidates'] g[data-series='final-losses'] "
        "circle.forecast`)].map((c) => Number(c.getAttribute('cx')))"
    )
    assert len(marks) == judged and all(abs(x - end_x) < 40 for x in marks)
    assert "predicted final loss" in (attr(browser, 'svg[data-chart="candidates"]', "aria-label") or "")
    assert "predicted final loss" in (attr(browser, 'svg[data-chart="posterior"]', "aria-label") or "")
    screenshot(browser, "job-plan")

    # Every training segment re-plans: the page follows.
    worker.step()
    wait(
        browser,
        lambda d: attr(d, ".plan-line", "data-plan-start") not in (None, str(plan["start"])),
        "the page did not show the new plan",
    )
    assert not severe_console_errors(browser)
    worker.close()


def path_vertices(driver: Any, chart: str, series: str) -> list[list[tuple[float, float]]]:
    """The vertices (pixels) of each path a series drew, one list per path."""
    runs: list[list[list[float]]] = driver.execute_script(
        "const g = `svg[data-chart='${arguments[0]}'] g[data-series='${arguments[1]}'] path`;"
        "return [...document.querySelectorAll(g)]"
        ".map((p) => [...p.getAttribute('d').matchAll(/[ML](-?[0-9.]+),(-?[0-9.]+)/g)].map((m) => [+m[1], +m[2]]));",
        chart,
        series,
    )
    return [[(x, y) for x, y in run] for run in runs]


def x_window(driver: Any, chart: str) -> tuple[float, float]:
    """The steps a chart shows, from its first to its last."""
    return float(attr(driver, f'svg[data-chart="{chart}"]', "data-x0") or "nan"), float(
        attr(driver, f'svg[data-chart="{chart}"]', "data-x1") or "nan"
    )


def offset_of_step(driver: Any, chart: str, step: float) -> tuple[int, int]:
    """Where step ``step`` is on a chart, mid-height of its plot, as an offset from the chart's centre (Selenium's);
    scrolls the chart into view."""
    box: dict[str, float] = driver.execute_script(
        "const s = document.querySelector(`svg[data-chart='${arguments[0]}']`);"
        "if (s.getBoundingClientRect().bottom > innerHeight || s.getBoundingClientRect().top < 0)"
        " s.scrollIntoView({block: 'center'});"
        "const f = s.querySelector('rect.frame');"
        "return {w: +s.getAttribute('width'), h: +s.getAttribute('height'), x: +f.getAttribute('x'),"
        " y: +f.getAttribute('y'), fw: +f.getAttribute('width'), fh: +f.getAttribute('height')};",
        chart,
    )
    x0, x1 = x_window(driver, chart)
    px = box["x"] + (step - x0) / (x1 - x0) * box["fw"]
    return round(px - box["w"] / 2), round(box["y"] + box["fh"] / 2 - box["h"] / 2)


def hover(driver: Any, chart: str, step: float) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    dx, dy = offset_of_step(driver, chart, step)
    ActionChains(driver).move_to_element_with_offset(css(driver, f'svg[data-chart="{chart}"]')[0], dx, dy).perform()


def drag(driver: Any, chart: str, from_step: float, to_step: float) -> None:
    """Press the mouse at one step of a chart, move to another, release."""
    from selenium.webdriver.common.action_chains import ActionChains

    (x_from, y_mid), (x_to, _) = offset_of_step(driver, chart, from_step), offset_of_step(driver, chart, to_step)
    plot = css(driver, f'svg[data-chart="{chart}"]')[0]
    ActionChains(driver).move_to_element_with_offset(plot, x_from, y_mid).click_and_hold().move_by_offset(
        x_to - x_from, 0
    ).release().perform()


def readout(driver: Any, chart: str) -> tuple[int | None, str]:
    """The step and text of a chart's readout, (None, '') while it is hidden."""
    shown: list[Any] = driver.execute_script(
        "const r = document.querySelector(`#chart-${arguments[0]} .readout`);"
        "return r && !r.hidden ? [Number(r.dataset.step), r.textContent] : [null, ''];",
        chart,
    )
    return shown[0], shown[1]


def total_variation(vertices: list[tuple[float, float]]) -> float:
    return sum(abs(b[1] - a[1]) for a, b in zip(vertices, vertices[1:], strict=False))


def test_the_loss_and_lr_charts_zoom_read_out_hide_series_and_smooth(service: str, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    worker = Worker(service, name="digits-zoom")
    worker.run()  # finished: the page stays as it is while the test works it
    sched = worker.http.get(f"/v1/jobs/{worker.job_id}/schedule").json()
    segments = sched["segments"]
    browser.get(f"{service}/jobs/{worker.job_id}")
    wait(browser, lambda d: attr(d, ".job", "data-status") == "done" and points(d, "loss") > 0, "the job page")
    assert x_window(browser, "loss") == (0, JOB_TOTAL) and x_window(browser, "lr") == (0, JOB_TOTAL)

    # Rolled-back stretches are drawn apart: one path each (dashed on the LR chart, faded on the loss chart), and
    # the kept line has no vertex inside any of them (it is never joined across them).
    rolled = [s for s in segments if s["rolled_back"] and any(p[1] is not None for p in s["curve"])]
    assert len(rolled) >= 3
    stretches = path_vertices(browser, "loss", "rolled-back")
    assert len(stretches) == len(rolled)
    ran = sum(s["rolled_back"] and s["steps"] > 0 for s in segments)
    assert len(path_vertices(browser, "lr", "rolled-back")) == ran
    assert attr(browser, 'svg[data-chart="lr"] g[data-series="rolled-back"] path', "stroke-dasharray")
    assert float(attr(browser, 'svg[data-chart="loss"] g[data-series="rolled-back"] path', "opacity") or 1) < 1
    kept_x = [x for run in path_vertices(browser, "loss", "train") for x, _ in run]
    for run in stretches:
        lo, hi = min(x for x, _ in run), max(x for x, _ in run)
        assert not [x for x in kept_x if lo + 0.5 < x < hi - 0.5], "the kept line runs through a rolled-back stretch"

    # Hovering shows the step and each series' value there, on both charts (they share the step axis).
    last = segments[-1]
    step = last["start_step"] + last["steps"] // 2
    hover(browser, "loss", step)
    wait(browser, lambda d: readout(d, "loss")[0] is not None, "no readout on the loss chart")
    at, shown = readout(browser, "loss")
    assert at is not None and abs(at - step) <= 2 and f"step {at}" in shown and "training loss" in shown
    at_lr, shown_lr = readout(browser, "lr")
    assert at_lr == at and f"LR ({last['phase']})" in shown_lr
    candidate = next(s for s in rolled if s["stage"] is not None and s["steps"] >= 8)
    hover(browser, "loss", candidate["start_step"] + candidate["steps"] / 2)
    wait(browser, lambda d: "rolled back: " in readout(d, "loss")[1], "the readout does not name a rolled-back stretch")
    assert f"stage {candidate['stage']} candidate #{candidate['candidate']}" in readout(browser, "loss")[1]

    # Drag across the loss chart to zoom: both charts show those steps; their tick labels say so.
    drag(browser, "loss", 150, 300)
    wait(browser, lambda d: attr(d, 'svg[data-chart="loss"]', "data-zoomed") == "true", "the drag did not zoom")
    for chart in ("loss", "lr"):
        lo, hi = x_window(browser, chart)
        assert abs(lo - 150) < 4 and abs(hi - 300) < 4, (chart, lo, hi)
        ticks = browser.execute_script(
            "const q = `svg[data-chart='${arguments[0]}'] g.axes text.tick[text-anchor='middle']`;"
            "return [...document.querySelectorAll(q)]"
            ".map((t) => Number(t.textContent))",
            chart,
        )
        assert len(ticks) >= 3 and all(lo <= t <= hi for t in ticks), (chart, ticks)
    assert count(browser, "#chart-loss button.reset-zoom") == 1
    # Double-click zooms out to the whole budget (the zoom drew a new chart).
    plot = css(browser, 'svg[data-chart="loss"]')[0]
    ActionChains(browser).move_to_element_with_offset(
        plot, 0, offset_of_step(browser, "loss", 0)[1]
    ).double_click().perform()
    wait(browser, lambda d: x_window(d, "loss") == (0, JOB_TOTAL), "double-click did not reset the zoom")
    assert x_window(browser, "lr") == (0, JOB_TOTAL) and count(browser, "button.reset-zoom") == 0

    # A legend entry hides its series, and shows it again; the readout leaves a hidden series out.
    toggle = 'ul.legend[data-chart="loss"] button[data-series="rolled-back"]'
    click(browser, toggle)
    layer = 'svg[data-chart="loss"] g[data-series="rolled-back"]'
    wait(browser, lambda d: attr(d, layer, "data-hidden") == "true", "the series was not hidden")
    assert series_points(browser, "loss", "rolled-back") == 0 and not path_vertices(browser, "loss", "rolled-back")
    assert attr(browser, toggle, "aria-pressed") == "false"
    assert series_points(browser, "lr", "rolled-back") > 0  # the other chart keeps its own
    hover(browser, "loss", candidate["start_step"] + candidate["steps"] / 2)
    wait(browser, lambda d: readout(d, "loss")[0] is not None, "no readout")
    assert "rolled back: " not in readout(browser, "loss")[1]
    click(browser, toggle)
    wait(browser, lambda d: len(path_vertices(d, "loss", "rolled-back")) == len(rolled), "not shown again")
    assert attr(browser, toggle, "aria-pressed") == "true"

    # Smoothing (off by default) draws the loss as an EMA over the faint raw line; each stretch on its own.
    smoothing = Select(css(browser, "#loss-smoothing")[0])
    assert smoothing.first_selected_option.get_attribute("value") == "0"
    raw = path_vertices(browser, "loss", "train")
    smoothing.select_by_value("0.9")
    wait(browser, lambda d: series_points(d, "loss", "train-raw") > 0, "smoothing drew no raw line")
    smoothed = path_vertices(browser, "loss", "train")
    # (as many vertices or more: on a log axis a loss of 0 has none, its average has one)
    assert smoothed != raw and sum(map(len, smoothed)) >= sum(map(len, raw))
    assert path_vertices(browser, "loss", "train-raw") == raw
    assert total_variation([v for r in smoothed for v in r]) < 0.6 * total_variation([v for r in raw for v in r])
    assert len(path_vertices(browser, "loss", "rolled-back")) == len(rolled)
    assert "EMA 0.9" in text(browser, 'svg[data-chart="loss"] g[data-series="train"] path title')
    screenshot(browser, "job-smoothed")
    Select(css(browser, "#loss-smoothing")[0]).select_by_value("0")
    wait(browser, lambda d: path_vertices(d, "loss", "train") == raw, "smoothing off did not restore the line")
    assert count(browser, 'svg[data-chart="loss"] g[data-series="train-raw"]') == 0
    assert not severe_console_errors(browser)
    worker.close()


def test_a_thousand_jobs_page_and_sort_quickly(service: str, browser: Any) -> None:
    with httpx.Client(base_url=service, timeout=30) as http:  # one after the other: creation order is known
        for i in range(1000):
            body = {"name": f"bulk-{i:04d}", "config": {"min_lr": 1e-4, "max_lr": 1.0, "total_steps": 1000 + i}}
            assert http.post("/v1/jobs", json=body).status_code == 201
    total = httpx.get(f"{service}/v1/jobs?limit=1").json()["total"]
    assert total >= 1000

    def first_name(d: Any) -> str:
        return text(d, "#jobs tbody tr .job-link")

    def timed(action: Callable[[], None], condition: Callable[[Any], Any], message: str) -> float:
        started = time.perf_counter()
        action()
        wait(browser, condition, message)
        return time.perf_counter() - started

    browser.get(service + "/?q=bulk")
    wait(browser, lambda d: count(d, "#jobs tbody tr") == 50, "the first page did not load")
    assert first_name(browser) == "bulk-0999"  # newest first
    pages = text(browser, ".page-info")
    assert "1–50 of 1,000" in pages and "page 1 of 20" in pages

    elapsed = timed(
        lambda: click(browser, 'button[data-page="next"]'),
        lambda d: first_name(d) == "bulk-0949",
        "next page",
    )
    assert elapsed < 3.0
    elapsed = timed(
        lambda: click(browser, 'button[data-page="last"]'),
        lambda d: first_name(d) == "bulk-0049",
        "last page",
    )
    assert elapsed < 3.0
    assert "offset=950" in browser.current_url  # the page is in the address: reloading keeps it

    elapsed = timed(
        lambda: click(browser, 'button[data-sort="progress"]'),
        lambda d: first_name(d) == "bulk-0999" and "page 1 of 20" in text(d, ".page-info"),
        "sort by progress",
    )
    assert elapsed < 3.0
    assert attr(browser, "th.col-progress", "aria-sort") == "descending"
    click(browser, 'button[data-sort="name"]')
    wait(browser, lambda d: first_name(d) == "bulk-0000", "sort by name")
    assert attr(browser, "th.col-name", "aria-sort") == "ascending"

    search = css(browser, 'input[type="search"]')[0]
    search.clear()
    search.send_keys("bulk-0123")
    wait(browser, lambda d: count(d, "#jobs tbody tr") == 1 and first_name(d) == "bulk-0123", "filter by name")
    screenshot(browser, "list-filtered", full_page=False)
    assert not severe_console_errors(browser)


def test_a_new_job_a_fixed_schedule_and_an_unknown_id_render_without_errors(service: str, browser: Any) -> None:
    body = {"name": "not-started", "config": {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 800}}
    fresh = httpx.post(f"{service}/v1/jobs", json=body).json()["job_id"]
    browser.get(f"{service}/jobs/{fresh}")
    wait(browser, lambda d: attr(d, ".job", "data-job-id") == fresh, "a job without reports has no page")
    assert points(browser, "loss") == 0 and "no losses reported yet" in text(browser, 'svg[data-chart="loss"]')
    # The proposed first segment: the LR range sweep, rising, drawn at the points the schedule gives.
    opened = httpx.get(f"{service}/dashboard/api/jobs/{fresh}/schedule").json()["open"]
    assert opened["phase"] == "explore" and opened["shape"] == "exp" and len(opened["lr_points"]) > 2
    assert series_points(browser, "lr", "open") == len(opened["lr_points"])
    assert attr(browser, "[data-sweep]", "data-sweep") == "running"
    assert "No stage has started yet" in text(browser, "body")

    cosine = Worker(service, name="fixed-cosine", config={**JOB_CONFIG, "strategy": "cosine"})
    cosine.run()
    browser.get(f"{service}/jobs/{cosine.job_id}")
    wait(browser, lambda d: attr(d, ".job", "data-status") == "done", "a fixed schedule has no page")
    assert series_points(browser, "lr", "lr-schedule") > 10 and points(browser, "loss") > 50
    assert "fixed cosine schedule" in text(browser, ".job")
    cosine.close()

    browser.get(f"{service}/jobs/0123456789abcdef")
    wait(browser, lambda d: "Job not found" in text(d, "#app"), "an unknown id is not reported")
    browser.get(f"{service}/jobs/not-a-job")
    wait(browser, lambda d: "Job not found" in text(d, "#app"), "a malformed id is not reported")
    errors = [m for m in severe_console_errors(browser) if "404" not in m and "422" not in m]
    assert not errors


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lrtune serve`` with an admin key."""
    url, proc = start_service(tmp_path_factory.mktemp("keyed"), "keyed", ADMIN_KEY)
    try:
        yield url
    finally:
        stop_local(proc)


def test_with_an_admin_key_the_dashboard_shows_nothing_until_given_the_key(keyed_service: str, browser: Any) -> None:
    created = httpx.post(
        f"{keyed_service}/v1/jobs",
        json={"name": "classified-run", "config": {"min_lr": 1e-4, "max_lr": 1.0, "total_steps": 500}},
    ).json()
    job = created["job_id"]
    browser.get(f"{keyed_service}/jobs/{job}")
    wait(browser, lambda d: css(d, "#login")[0].is_displayed(), "no key prompt")
    assert "classified-run" not in browser.page_source
    assert not css(browser, ".job") and not css(browser, "svg.chart")
    screenshot(browser, "login", full_page=False)

    def submit(key: str) -> int:
        """Type a key into the prompt and send it; return how many times the page had asked until then."""
        asked = int(attr(browser, "#login", "data-prompts") or 0)
        css(browser, "#login-key")[0].send_keys(key)
        click(browser, "#login-form button")
        return asked

    # A wrong key, and a job's own token, are refused: the page asks again and shows nothing.
    for wrong in ("not-the-key", created["token"]):
        asked = submit(wrong)
        wait(browser, lambda d, n=asked: int(attr(d, "#login", "data-prompts") or 0) > n, "a wrong key got in")
        assert css(browser, "#login")[0].is_displayed()
        assert "not this service's admin key" in text(browser, "#login-why")
        assert "classified-run" not in browser.page_source and not css(browser, ".job")

    submit(ADMIN_KEY)
    wait(browser, lambda d: attr(d, ".job", "data-job-id") == job, "the right key did not open the job")
    assert "classified-run" in text(browser, ".job-head h1")
    assert ADMIN_KEY not in browser.current_url
    assert browser.execute_script("return sessionStorage.getItem('lrtune.adminKey')") == ADMIN_KEY

    click(browser, ".crumbs a")
    wait(browser, lambda d: css(d, f'tr[data-job-id="{job}"]'), "the list did not open with the key")

    click(browser, "#signout")
    wait(browser, lambda d: css(d, "#login")[0].is_displayed(), "forgetting the key did not lock the page")
    assert not css(browser, "tr[data-job-id]")
    assert browser.execute_script("return sessionStorage.getItem('lrtune.adminKey')") is None
    assert not severe_console_errors(browser) or all("401" in m or "403" in m for m in severe_console_errors(browser))


@pytest.mark.skipif(os.environ.get("LRTUNE_DOCS_SCREENSHOTS") != "1", reason="set LRTUNE_DOCS_SCREENSHOTS=1")
def test_docs_screenshots(service: str, browser: Any) -> None:
    """Refresh ``docs/images/dashboard-job.png`` (a plan-preset job halfway, on its plan, the pointer on its loss
    chart) and ``-list.png``, and write what ``lrtune jobs show`` says of that job to
    ``test-artifacts/dashboard/jobs-show.txt`` (the sample in ``docs/dashboard.md``)."""
    Worker(service, name="digits-mlp-greedy", config=GREEDY_DOCS_CONFIG, label_noise=0.3).run()
    Worker(service, name="digits-mlp", config=DOCS_CONFIG, label_noise=0.3).run()
    running = Worker(service, name="digits-mlp-seed1", config={**DOCS_CONFIG, "seed": 1}, label_noise=0.3)
    running.run(until_step=700)
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1400, 540)
    browser.get(f"{service}/")
    wait(browser, lambda d: css(d, f'tr[data-job-id="{running.job_id}"]'), "list")
    browser.save_screenshot(str(images / "dashboard-list.png"))
    browser.get(f"{service}/jobs/{running.job_id}")
    wait(browser, lambda d: points(d, "posterior") > 0 and series_points(d, "loss", "plan-predicted") > 0, "job page")
    fit_page(browser)
    wait(browser, lambda d: points(d, "posterior") > 0, "job page after resize")
    hover(browser, "loss", 560)  # the readout, at a step the job has run
    wait(browser, lambda d: readout(d, "loss")[0] is not None, "job page readout")
    browser.save_screenshot(str(images / "dashboard-job.png"))
    browser.set_window_size(1400, 1000)
    shown = subprocess.run(
        [local_program(), "jobs", "show", running.job_id, "--url", service], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    artifacts = ROOT / "test-artifacts" / "dashboard"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "jobs-show.txt").write_text(shown.stdout)


#: The docs' jobs: the plan preset (it plans the budget) on 1500 steps of digits.
DOCS_CONFIG: dict[str, Any] = {
    "preset": "plan",
    "min_lr": 1e-3,
    "max_lr": 1.0,
    "total_steps": 1500,
    "warmup_steps": 50,
    "seed": 0,
}
#: A greedy job next to them in the list.
GREEDY_DOCS_CONFIG: dict[str, Any] = {
    **DOCS_CONFIG,
    "preset": "greedy",
    "tau": 100,
    "tau_max": 400,
    "k": 6,
    "k_warm": 3,
    "objective": "auto",
}
