"""The import names live under ``lrtune``: nothing of ours can be shadowed by, or shadow, a user's module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BARE = ("client", "server", "tuner")


def test_no_module_imports_the_bare_names() -> None:
    # Runs after the whole suite is collected: every test module, and what it imported, is in sys.modules.
    bare = sorted(m for m in sys.modules if m.split(".")[0] in BARE)
    assert not bare, f"imported under the old top-level names (use lrtune.<name>): {bare}"


def test_a_users_own_client_module_does_not_shadow_ours(tmp_path: Path) -> None:
    for name in BARE:
        (tmp_path / f"{name}.py").write_text("raise SystemExit('the user module was imported')\n")
    code = (
        "from lrtune.client import AutoLRSCallback\n"
        "from lrtune.tuner import TunerConfig\n"
        "from lrtune.server.cli import main\n"
        "import client\n"  # the user's own module still imports as itself
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "the user module was imported" in done.stderr, done.stderr


@pytest.mark.timeout(300)
def test_the_wheel_installs_only_the_lrtune_package(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("lrtune", *BARE):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("lrtune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"lrtune"}
    for module in ("lrtune/client/callback.py", "lrtune/tuner/segment.py", "lrtune/server/app.py"):
        assert module in names
    assert any(n.startswith("lrtune/server/dashboard/static/") and n.endswith(".js") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "lrtune = lrtune.server.cli:main" in entry
