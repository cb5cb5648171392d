"""Importing an adapter without its framework names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [("lrtune.client.lightning", "lightning", "lrtune[lightning]"), ("lrtune.client.hf", "transformers", "lrtune[hf]")],
)
def test_an_adapter_without_its_framework_says_which_extra_to_install(module: str, framework: str, extra: str) -> None:
    code = f"import sys\nsys.modules[{framework!r}] = None  # as if it were not installed\nimport {module}\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:") and f"pip install '{extra}'" in last, out.stderr
