"""`lrtune demo` trains against a real service over HTTP, with either training loop it offers."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from lrtune.client.protocol import JobConfig
from lrtune.server.cli import app
from lrtune.server.demo import callback_available, run_demo

SMALL = JobConfig(min_lr=1e-3, max_lr=1.0, total_steps=400, warmup_steps=20, tau=40, k=3, k_warm=2, seed=0)


@pytest.mark.parametrize("loop", ["callback", "httpx"])
def test_demo_trains_over_http_and_prints_the_schedule(loop: str) -> None:
    if loop == "callback":
        assert callback_available()
    lines: list[str] = []
    out = run_demo(echo=lines.append, config=SMALL, baseline=True, loop=loop)  # type: ignore[arg-type]
    text = "\n".join(lines)
    assert "service running at http://127.0.0.1:" in text
    assert "[  400/400]" in text  # progress reached the end of the budget
    assert "stage 0" in text and "<- winner" in text and "exploration:" in text
    assert math.isfinite(out["val_loss"]) and out["val_accuracy"] > 0.8  # chance is 0.1
    assert "constant LR" in text and math.isfinite(out["baseline_val_loss"])


def test_demo_cli_refuses_an_unknown_loop() -> None:
    result = CliRunner().invoke(app, ["demo", "--loop", "nope"])
    assert result.exit_code == 2
