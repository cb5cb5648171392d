"""The examples train for real: in process (short budgets), and the plain one against ``lrtune serve``."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lrtune.server.launch import REDIS_URL_ENV
from tests.procs import Service

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["plain_pytorch", "lightning_example", "hf_trainer_example"])
def test_example_trains_in_process(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    accuracy = _load(name).main(["--local", "--steps", "300"])
    assert accuracy > 0.5  # ten classes: well above chance after 300 steps
    assert "validation accuracy" in capsys.readouterr().out


def _tensorboard_tags(logdir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    runs.Reload()
    return {tag for run in runs.Runs().values() for tag in run.get("scalars", [])}


def test_plain_example_writes_lrtune_to_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    _load("plain_pytorch").main(["--local", "--steps", "300", "--tensorboard", str(tmp_path)])
    assert {"lrtune/lr", "lrtune/phase", "lrtune/loss", "lrtune/loss_rolled_back"} <= _tensorboard_tags(tmp_path)


def test_lightning_example_logs_lrtune_beside_the_modules_metrics(tmp_path: Path) -> None:
    _load("lightning_example").main(["--local", "--steps", "300", "--logdir", str(tmp_path)])
    (metrics,) = tmp_path.glob("digits/version_*/metrics.csv")
    with open(metrics) as f:
        header = next(csv.reader(f))
    assert {"train_loss", "lrtune/lr", "lrtune/phase", "lrtune/rolled_back"} <= set(header)


def test_hf_example_reports_lrtune_to_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    _load("hf_trainer_example").main(
        ["--local", "--steps", "300", "--report-to", "tensorboard", "--output-dir", str(tmp_path)]
    )
    tags = _tensorboard_tags(tmp_path)
    assert {"train/loss", "train/learning_rate", "train/lrtune/lr", "train/lrtune/phase"} <= tags


def test_plain_example_against_lrtune_serve(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRTUNE_")}
    service = Service({REDIS_URL_ENV: ""}, tmp_path)
    service.start()
    try:
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "plain_pytorch.py"), "--url", service.url, "--steps", "300"],
            capture_output=True,
            text=True,
            timeout=240,
            check=True,
            env={**env, "PYTHONPATH": str(EXAMPLES.parent)},
        ).stdout
    finally:
        service.stop()
    assert f"{service.url}/v1/jobs/" in out and "after 300 steps" in out
