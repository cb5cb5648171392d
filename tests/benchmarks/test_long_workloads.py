"""The long-horizon workloads build, have the documented splits, stream deterministic data and train."""

from __future__ import annotations

import itertools

import pytest
import torch

from benchmarks.methods import Method, schedule_config
from benchmarks.report import grid_spread, markdown, summarize
from benchmarks.run import run
from benchmarks.workloads import (
    LONG_WORKLOADS,
    SELECTION_WORKLOADS,
    SHORT_WORKLOADS,
    WORKLOADS,
    Split,
    Workload,
    stdlib_corpus,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=LONG_WORKLOADS)
def workload(request: pytest.FixtureRequest) -> Workload:
    return WORKLOADS[request.param]()


def _take(w: Workload, seed: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(w.batches(seed), n))


def test_the_long_and_selection_sets_are_registered_apart_from_the_short_one() -> None:
    sets = [set(LONG_WORKLOADS), set(SHORT_WORKLOADS), set(SELECTION_WORKLOADS)]
    assert set.union(*sets) == set(WORKLOADS)
    assert sum(map(len, sets)) == len(WORKLOADS)  # no workload in two sets


def test_long_workloads_have_a_long_budget_and_fixed_held_out_splits(workload: Workload) -> None:
    assert 20_000 <= workload.steps <= 50_000
    assert len(workload.tune) >= workload.eval_examples and len(workload.test) >= 4096
    assert workload.tune.x.shape[1:] == workload.test.x.shape[1:]
    again = WORKLOADS[workload.name]()
    assert torch.equal(again.test.x, workload.test.x) and torch.equal(again.test.y, workload.test.y)
    assert torch.equal(again.tune.y, workload.tune.y)
    assert not torch.equal(workload.tune.x[: len(workload.tune) // 2], workload.test.x[: len(workload.tune) // 2])


def test_teacher_student_streams_fresh_samples_and_stdlib_lm_sees_its_corpus_about_once() -> None:
    ts = WORKLOADS["teacher-student"]()
    assert len(ts.train) == 0 and ts.stream is not None and ts.classification
    lm = WORKLOADS["stdlib-lm"]()
    tokens = lm.steps * lm.batch_size * lm.train.x.shape[1]
    assert 0.5 <= tokens / lm.train.x.numel() <= 2.0  # the budget covers the training text once or twice
    train, tune, test = stdlib_corpus()
    assert len(train) > 8_000_000 and len(tune) > 100_000 and len(test) > 100_000
    assert tune not in train and test[:4096] not in train


def test_the_training_stream_is_deterministic_per_seed(workload: Workload) -> None:
    a, b, c = _take(workload, 0, 5), _take(workload, 0, 5), _take(workload, 1, 5)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0])
    x, y = a[0]
    assert x.shape[0] == workload.batch_size and y.dtype == torch.long
    assert x.shape[1:] == workload.test.x.shape[1:]
    if workload.stream is not None:  # fresh samples: no batch repeats
        assert not torch.equal(a[0][0], a[1][0])


def test_a_few_steps_train_and_score(workload: Workload) -> None:
    import dataclasses

    small = {k: Split(getattr(workload, k).x[:256], getattr(workload, k).y[:256]) for k in ("tune", "test")}
    short = dataclasses.replace(workload, steps=60, eval_examples=64, **small)
    method = Method("grid-cosine-3.2e-03", "grid", tuner=schedule_config("cosine", 3.2e-3))
    result = run(short, method, seed=0)
    assert result.steps == 60 and result.curve and result.cpu_s and 0 < result.test_loss < 10
    rows = [result.to_dict()]
    report = markdown(summarize(rows), _meta(), grid_spread(rows))
    assert "## Long horizon" in report and f"### {workload.name}" in report and "## Headline" not in report
    assert "| cpu s |" in report
    assert f"| {workload.name} | grid-cosine-3.2e-03" in report


def _meta() -> dict[str, object]:
    return {
        "command": "test",
        "machine": "test",
        "date": "today",
        "code": "test",
        "runs_now": 1,
        "runs_total": 1,
        "seeds": 1,
        "grid_trials": 1,
    }
