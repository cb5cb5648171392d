"""Time of one BO suggestion (GP fit + acquisition), one forecast, and one re-planning report, by size.

A re-planning report is a training segment's report under the ``plan`` preset (with each loss model, ``power``
and ``spectral``): the loss model is refitted to every segment the job ran and the rest of the budget is planned
again. It is timed on noisy-quadratic jobs, by the number of segments already reported (each segment is up to 32
binned losses for the model).

Everything runs on ``--threads`` threads (torch and, where threadpoolctl is installed, BLAS; default 1, as the
service runs one job per worker). The machine's load average is written with the results, and so is each
re-planning median relative to the 1-observation suggestion's median of the same run: on a busy machine both
slow down, the ratio less.

Run: ``.venv/bin/python -m benchmarks.suggest_time [--repeats 50] [--replan-seeds 3] [--threads 1]
[--out benchmarks/results/suggest_time.md]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lrtune.tuner.forecast import forecast_loss
from lrtune.tuner.search import Observation, Surrogate


def time_suggest(n: int, repeats: int, learn_noise: bool) -> list[float]:
    rng = np.random.default_rng(n)
    xs = rng.uniform(0, 1, n)
    obs = [Observation(float(x), float((x - 0.6) ** 2 + rng.normal(0, 0.02)), 0.02**2) for x in xs]
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        Surrogate(obs, learn_noise=learn_noise).suggest(avoid=list(xs))
        out.append((time.perf_counter() - start) * 1000)
    return out


def time_forecast(points: int, repeats: int) -> list[float]:
    t = np.arange(1, points + 1, dtype=float)
    y = np.exp(-t / points) + 0.5 + np.random.default_rng(0).normal(0, 0.01, points)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        forecast_loss(t, y, 10 * points, floor=0.0)
        out.append((time.perf_counter() - start) * 1000)
    return out


def time_replan(seeds: int, loss_model: str = "power") -> dict[int, list[float]]:
    """Milliseconds of each training-segment report of plan-preset jobs, by segments reported before it."""
    from benchmarks.nqm import LANDSCAPES, run_tuner

    out: dict[int, list[float]] = {}
    for seed in range(seeds):
        result = run_tuner(LANDSCAPES["base"], 20_000, seed, "plan", loss_model=loss_model)
        for n, phase, ms in result["reports"]:
            if phase == "train":
                out.setdefault(n, []).append(ms)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        "max_ms": round(max(ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/suggest_time.md"))
    parser.add_argument("--replan-seeds", type=int, default=3, help="noisy-quadratic jobs timed for re-planning")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    args = parser.parse_args()
    with _threads(args.threads):
        run(args)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Limit torch (and BLAS, where threadpoolctl is installed) to ``n`` threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
        except ImportError:
            yield
        else:
            with threadpool_limits(n):
                yield
    finally:
        torch.set_num_threads(before)


def run(args: argparse.Namespace) -> None:
    load_start = os.getloadavg()[0]
    time_suggest(3, 3, False)  # warm up imports and kernels
    rows: list[dict[str, Any]] = []
    for n in (1, 5, 10, 20, 40):
        for learn_noise in (False, True):
            s = summary(time_suggest(n, args.repeats, learn_noise))
            rows.append({"what": "suggest", "observations": n, "noise": "learned" if learn_noise else "fixed", **s})
            label = f"suggest  n={n:3d} noise={rows[-1]['noise']:7s}"
            print(f"{label} median {s['median_ms']:6.2f} ms  p95 {s['p95_ms']:6.2f} ms")
    for points in (50, 200, 800):
        s = summary(time_forecast(points, args.repeats))
        rows.append({"what": "forecast", "observations": points, "noise": "-", **s})
        print(f"forecast points={points:4d}          median {s['median_ms']:6.2f} ms  p95 {s['p95_ms']:6.2f} ms")
    unit = rows[0]["median_ms"]  # the 1-observation, fixed-noise suggestion of this run
    for model in ("power", "spectral"):
        by_n = time_replan(args.replan_seeds, model)
        for lo, hi in ((1, 20), (20, 40), (40, 60), (60, 100)):
            ms = [v for n, vals in by_n.items() if lo <= n < hi for v in vals]
            if ms:
                s = summary(ms)
                what = f"re-plan report, {model} model"
                rows.append({"what": what, "observations": f"{lo}-{hi - 1} segments", "noise": "-", **s})
                rows[-1]["vs_suggest_1"] = round(s["median_ms"] / unit, 2) if unit > 0 else None
                print(
                    f"re-plan ({model:8s}) segments {lo:3d}-{hi - 1:3d}  median {s['median_ms']:6.2f} ms  "
                    f"p99 {s['p99_ms']:6.2f} ms  ({rows[-1]['vs_suggest_1']}x the 1-observation suggestion)"
                )
    load_end = os.getloadavg()
    meta = {
        "command": f"python -m benchmarks.suggest_time --repeats {args.repeats} --replan-seeds {args.replan_seeds} "
        f"--threads {args.threads}",
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "threads": args.threads,
        "load_start": round(load_start, 2),
        "load_end": [round(v, 2) for v in load_end],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# BO suggestion and forecast time",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        f"Date: {meta['date']}",
        "",
        f"Threads: {args.threads}  ",
        f"Load average (1 min) at the start: {load_start:.2f}; at the end: {load_end[0]:.2f} (5 min: "
        f"{load_end[1]:.2f}, 15 min: {load_end[2]:.2f}). Timings on a busy machine are longer.",
        "",
        "Targets: under 50 ms per suggestion for up to 20 observations; a re-planning report at most 50 ms median "
        "and 150 ms p99 with 40 observations.",
        "",
        "Re-planning medians relative to this run's 1-observation suggestion (fixed noise, "
        f"{unit} ms median), which slows down alike when the machine is busy: "
        + ", ".join(
            f"{r['what'].split(', ')[1]} {r['observations']} {r['vs_suggest_1']}x"
            for r in rows
            if r["what"].startswith("re-plan")
        )
        + ".",
        "",
        "| what | observations | GP noise | median ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['what']} | {r['observations']} | {r['noise']} | {r['median_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
        f"{r['max_ms']} |"
        for r in rows
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
