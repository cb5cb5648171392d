"""What every run shows: the job's dashboard URL when it is created, a one-paragraph summary at the end, strict."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from lrtune.client import AutoLRSCallback, RetryPolicy
from lrtune.client.errors import ServiceUnavailableError
from tests.client.helpers import SMALL, Link, make_batches, make_model, train

FAST_RETRY = RetryPolicy(initial_s=1e-4, max_s=1e-3)


def _cb(
    link: Link | None, total: int = 120, **kw: Any
) -> tuple[torch.nn.Module, torch.optim.Optimizer, AutoLRSCallback]:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if link is not None:
        kw.update(http_client=link.client(), retry=FAST_RETRY)
    cb = AutoLRSCallback(model, opt, None, 1e-3, 1.0, total, config=SMALL, **kw)
    return model, opt, cb


def _run_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lrtune.client.run" and r.levelno >= logging.WARNING]


def test_a_created_job_logs_its_dashboard_url_and_the_end_a_summary(
    link: Link, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lrtune.client.run"):
        model, opt, cb = _cb(link, preset="greedy")  # it explores even on a budget this small
        train(cb, model, opt, make_batches())
        cb.on_train_end()
        cb.on_train_end()  # said once
    lines = _run_lines(caplog)
    assert len(lines) == 2
    assert f"/jobs/{cb.job_id}" in lines[0] and lines[0].count(cb.job_id or "-") == 2
    end = lines[1]
    assert f"job {cb.job_id}: 120 of 120 steps" in end and "exploring" in end
    assert "answered throughout" in end and "NaN" not in end
    explored = sum(s.steps for s in cb.history if s.phase == "explore")
    assert f"{cb.stats.explore_steps / 120:.0%}" in end and 0 < cb.stats.explore_steps <= explored


def test_the_summary_says_when_the_service_was_away_and_what_became_of_those_steps(
    link: Link, caplog: pytest.LogCaptureFixture
) -> None:
    model, opt, cb = _cb(link)

    def before_step(step: int) -> None:
        link.mode = "down" if 30 <= step < 55 else "up"

    with caplog.at_level(logging.WARNING, logger="lrtune.client.run"):
        train(cb, model, opt, make_batches(), before_step=before_step)
        cb.on_train_end()
    end = _run_lines(caplog)[-1]
    assert "unreachable 1 time:" in end and f"{cb.offline_steps:,} steps" in end
    assert "all reported to the job" in end and cb.offline_steps > 0


def test_the_summary_warns_when_every_loss_was_nan(caplog: pytest.LogCaptureFixture) -> None:
    _, _, cb = _cb(None, total=60)
    with caplog.at_level(logging.WARNING, logger="lrtune.client.run"):
        while not cb.done:
            cb.on_train_batch_end(float("nan"))
        cb.on_train_end()
    assert "Every loss was NaN or infinite" in _run_lines(caplog)[-1]


def test_strict_makes_an_unreachable_service_an_error(link: Link) -> None:
    link.mode = "down"
    with pytest.raises(ServiceUnavailableError, match="strict=True"):
        _cb(link, strict=True)
    link.mode = "up"
    model, opt, cb = _cb(link, strict=True)

    def before_step(step: int) -> None:
        if step == 30:
            link.mode = "down"

    with pytest.raises(ServiceUnavailableError, match="did not answer"):
        train(cb, model, opt, make_batches(), before_step=before_step)
    assert cb.step < 120 and cb.offline_steps == 0  # it stopped at the first segment end without an answer


def test_strict_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="strict"):
        _cb(None, strict="yes")
