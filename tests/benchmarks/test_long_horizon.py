"""The long-horizon benchmark runs end to end on a tiny budget and reports both objectives."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks import long_horizon as lh


@pytest.fixture(autouse=True, scope="module")
def keep_threads() -> Iterator[None]:
    """The command sets torch's thread count (one by default); put it back for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_tiny_run_spends_exactly_its_budget_and_reports_both_objectives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--steps", "300", "--seeds", "1", "--workloads", "teacher-student"]
    argv += ["--methods", "lrtune-default", "grid-wsd-4.4e-03", "--out", str(tmp_path)]
    assert lh.main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/2] teacher-student lrtune-default seed 0: val " in printed and "(elapsed " in printed
    rows = [json.loads(line) for line in (tmp_path / "raw.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in rows) == ["grid-wsd-4.4e-03", "lrtune-default"]
    assert all(r["steps"] == r["budget"] == 300 for r in rows)  # exploration included, not one step more
    tuned = next(r for r in rows if r["method"] == "lrtune-default")
    assert 0 < tuned["rolled_back_share"] <= tuned["explore_share"] <= 0.25
    assert all(0 < r["train_loss"] < 3 and 0 < r["test_loss"] < 3 for r in rows)

    report = (tmp_path / "report.md").read_text()
    assert "Command: `python -m benchmarks.long_horizon --steps 300" in report
    assert "2 CPU cores" in report or "CPU cores" in report
    assert "Load average (1, 5, 15 min): " in report and "at the end" in report
    assert "| method | val (test) loss | train loss | tune loss | val vs oracle | train vs oracle |" in report
    assert "| lrtune-default | " in report and "| grid-oracle | " in report
    assert "lrtune-default, validation (test) loss:" in report and "lrtune-default, training loss:" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    oracle = summary["summary"]["teacher-student"]["grid-oracle"]
    assert oracle["test_loss_vs_oracle"] == oracle["train_loss_vs_oracle"] == 1.0
    assert summary["meta"]["grid_trials"] == 1 and "a subset of the harness's 24-trial grid" in report

    # A second call finds the runs done: nothing is trained again.
    assert lh.main(argv) == 0
    assert "0 runs to do (2 already" in capsys.readouterr().out
    assert len((tmp_path / "raw.jsonl").read_text().splitlines()) == 2


def test_teacher_student_never_repeats_a_training_example() -> None:
    lw = lh.teacher_student_long(steps=1000)
    w = lw.workload
    assert lw.passes is None and len(w.train) == 0
    xs = torch.cat([x for x, _ in itertools.islice(w.batches(0), 400)])
    held_out = torch.cat([w.tune.x, w.test.x, lw.train_probe.x])
    assert len(torch.unique(xs, dim=0)) == len(xs) == 400 * w.batch_size
    assert len(torch.unique(torch.cat([xs, held_out]), dim=0)) == len(xs) + len(held_out)


def test_the_default_set_is_lrtune_the_range_test_and_the_whole_grid() -> None:
    names = [m.name for m in lh.methods_for(None)]
    assert {"lrtune-default", "lrtune-greedy", "lrtune-plan-power", "range-test-cosine"} <= set(names)
    assert sum(n.startswith("grid-") for n in names) == 24 and len(names) == 28
    with pytest.raises(ValueError, match="unknown"):
        lh.methods_for(["no-such-method"])


def test_the_language_model_reads_its_corpus_at_most_about_twice() -> None:
    lw = lh.stdlib_byte_mlp()
    w = lw.workload
    assert w.steps == lh.STEPS and lw.passes is not None and lw.passes <= 2.0
    assert len(w.train) * w.train.x.shape[1] > 8_000_000  # bytes of training text
    assert w.tune.x.shape[1:] == w.test.x.shape[1:] == lw.train_probe.x.shape[1:]
    model = w.make_model()
    logits = model(w.tune.x[:4])
    assert logits.shape == (4, w.tune.x.shape[1], 256)
