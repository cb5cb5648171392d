"""The selection workloads build, keep their held-out splits apart, train, and are reported as the selection set."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmarks.methods import Method, schedule_config
from benchmarks.report import grid_spread, markdown, summarize
from benchmarks.run import run
from benchmarks.workloads import WORKLOADS, Split, Workload, perl_corpus

pytestmark = pytest.mark.usefixtures("one_thread")


# fmnist-linear needs the Fashion-MNIST package, which only the benchmark's set-up installs.
@pytest.fixture(scope="module", params=["perl-gru", "digits-cnn", "teacher-student-deep"])
def workload(request: pytest.FixtureRequest) -> Workload:
    return WORKLOADS[request.param]()


def test_the_perl_corpus_is_split_by_module_and_covers_the_budget_less_than_once() -> None:
    train, tune, test = perl_corpus()
    assert len(train) > 5_000_000 and len(tune) > 100_000 and len(test) > 100_000
    assert test[:4096] not in train and tune[:4096] not in train
    lm = WORKLOADS["perl-gru"]()
    assert lm.steps * lm.batch_size * lm.train.x.shape[1] < lm.train.x.numel()


def test_held_out_splits_are_fixed_and_apart(workload: Workload) -> None:
    again = WORKLOADS[workload.name]()
    assert torch.equal(again.test.x, workload.test.x) and torch.equal(again.tune.y, workload.tune.y)
    assert len(workload.tune) >= workload.eval_examples
    n = min(len(workload.tune), len(workload.test))
    assert not torch.equal(workload.tune.x[:n], workload.test.x[:n])


def test_a_few_steps_train_and_the_report_says_selection_set(workload: Workload) -> None:
    small = {k: Split(getattr(workload, k).x[:128], getattr(workload, k).y[:128]) for k in ("tune", "test")}
    short = dataclasses.replace(workload, steps=40, eval_examples=64, **small)
    method = Method("grid-cosine-3.2e-03", "grid", tuner=schedule_config("cosine", 3.2e-3))
    result = run(short, method, seed=0)
    assert result.steps == 40 and 0 < result.test_loss < 10
    rows = [result.to_dict()]
    meta = {"command": "test", "machine": "test", "date": "today", "code": "test", "runs_now": 1, "runs_total": 1}
    report = markdown(summarize(rows), {**meta, "seeds": 1, "grid_trials": 1}, grid_spread(rows))
    assert "The selection set, not the evaluation" in report and "## Long horizon" not in report
