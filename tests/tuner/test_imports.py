"""The light modules of ``lrtune.tuner`` import no torch, botorch or gpytorch; the heavy names still resolve."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "botorch", "gpytorch")


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    "module",
    ["lrtune.tuner.segment", "lrtune.tuner.config", "lrtune.tuner.schedules", "lrtune.tuner.errors", "lrtune.tuner"],
)
def test_light_modules_import_no_torch(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    assert run_fresh(code) == ""


def test_light_modules_together_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import lrtune.tuner.segment, lrtune.tuner.config, lrtune.tuner.schedules\n"
        "from lrtune.tuner import Segment, TunerConfig, export_lr, resolve\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert run_fresh(code) == ""


def test_heavy_names_resolve_on_access() -> None:
    code = (
        "from lrtune import tuner\n"
        "from lrtune.tuner import SCHEMA_VERSION, Forecast, forecast_loss, sweep_suggestion\n"
        "import lrtune.tuner.stages\n"
        "assert tuner.Tuner is lrtune.tuner.stages.Tuner\n"
        "t = tuner.Tuner(tuner.TunerConfig(min_lr=1e-4, max_lr=1e-1, total_steps=1000))\n"
        "assert t.next_segment().steps > 0\n"
        "assert set(tuner.__all__) <= set(dir(tuner))\n"
        "print('ok')"
    )
    assert run_fresh(code) == "ok"


def test_unknown_name_is_an_attribute_error() -> None:
    from lrtune import tuner

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = tuner.no_such_name
