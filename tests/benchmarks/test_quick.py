"""The benchmark's quick mode runs end to end, so the benchmark cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.methods import all_methods


def test_quick_benchmark_writes_a_report_plots_and_raw_results(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run/s" in proc.stderr or "s/run" in proc.stderr  # the progress bar
    rows = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]
    assert len(rows) == len(all_methods())
    assert {r["workload"] for r in rows} == {"digits-mlp"}
    assert all(r["steps"] == 1500 for r in rows)
    lrtune = next(r for r in rows if r["method"] == "lrtune-default")
    assert 0 < lrtune["explore_share"] <= 0.25 and lrtune["stages"]
    report = (out / "report.md").read_text()
    for name in (
        "grid-oracle",
        "lrtune-default",
        "lrtune-greedy",
        "lrtune-paper",
        "schedulefree-adamw",
        "prodigy-cosine",
    ):
        assert f"| {name} |" in report
    assert "geometric mean" in report and "Command: `python -m benchmarks --quick" in report
    assert "lrtune-default reaches the oracle's median test loss" in report and "It beats schedulefree-adamw" in report
    assert "## Ablations" in report and "| no-cooldown-probe |" in report and "| power |" in report
    png = (out / "digits-mlp.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # The search-cost check re-runs the oracle's pick on the steps lrtune kept.
    cost = subprocess.run(
        [sys.executable, "-m", "benchmarks.search_cost", "--results", str(out)], capture_output=True, text=True
    )
    assert cost.returncode == 0, cost.stderr[-3000:]
    table = (out / "search_cost.md").read_text()
    assert "| digits-mlp | " in table and "| geometric mean |" in table
    (row,) = json.loads((out / "search_cost.json").read_text())
    assert 0 < row["kept_steps"] < 1500 and row["oracle_on_kept_steps"] > 0 and row["hindsight_on_kept_steps"] > 0
    assert row["hindsight_trial"].startswith("grid-")
    # Called again, it reads its runs back instead of training them again, to the same figures.
    cost = subprocess.run(
        [sys.executable, "-m", "benchmarks.search_cost", "--results", str(out)], capture_output=True, text=True
    )
    assert cost.returncode == 0, cost.stderr[-3000:]
    assert "of which this invocation trained 0" in (out / "search_cost.md").read_text()
    assert json.loads((out / "search_cost.json").read_text()) == [row]
    # A second call finds every run done and only rewrites the report.
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 0 and len((out / "raw.jsonl").read_text().splitlines()) == len(rows)
