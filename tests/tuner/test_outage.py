"""Outages at the tuner: segments carry the plan, offline steps count in the budget, nothing runs on foreign weights."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from lrtune.tuner import InvalidReportError, Segment, Tuner, TunerConfig, export_lr
from lrtune.tuner.segment import OfflinePiece, Piece
from tests.tuner.driver import toy_step

CONFIGS: dict[str, dict[str, Any]] = {
    "greedy": {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 1500, "seed": 4, "preset": "greedy"},
    "paper": {
        **{"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 1500, "seed": 5},
        **{"preset": "paper", "tau": 60, "tau_max": 120},
    },
    "plan": {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 3000, "seed": 1, "preset": "plan"},
    "wsd": {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 700, "strategy": "wsd", "warmup_steps": 50},
}


@dataclass
class Worker:
    """A simulated worker whose state remembers the LR of every step its weights saw."""

    state: dict[str, Any] = field(default_factory=lambda: {"loss": 3.0, "seen": []})
    snaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: int = 0  # optimizer steps run, all of them
    course: tuple[Piece, ...] = ()  # the continuation of the last segment run
    last: tuple[str, int | None, int | None] = ("none", None, None)  # what last moved the weights
    probes_checked: int = 0

    def step(self, lr: float) -> float:
        self.state["seen"].append(lr)
        self.ran += 1
        return toy_step(self.state, lr)

    def run(self, seg: Segment) -> tuple[list[float], list[float] | None]:
        if seg.restore is not None:
            self.state = copy.deepcopy(self.snaps[seg.restore])
            self.last = ("restore", None, None)
        for name in seg.drop:
            self.snaps.pop(name, None)
        if seg.snapshot is not None:
            self.snaps[seg.snapshot] = copy.deepcopy(self.state)
        if _is_probe(seg):
            # A cooldown probe: it must start from its own candidate's end state, nothing else.
            assert self.last == ("explore", seg.stage, seg.candidate), f"probe {seg.segment_id} after {self.last}"
            self.probes_checked += 1
        losses = [self.step(seg.lr_at(j)) for j in range(seg.steps)]
        vals = [self.state["loss"]] * (seg.steps // seg.eval_every) if seg.eval_every else None
        if seg.keep is not None:
            self.snaps[seg.keep] = copy.deepcopy(self.state)
        self.course = seg.then
        self.last = (seg.phase, seg.stage, seg.candidate)
        return losses, vals

    def offline(self, start: int, steps: int) -> tuple[list[OfflinePiece], list[float]]:
        """Run ``steps`` steps from job step ``start`` on the course, as a worker cut off from the service does."""
        pieces: list[OfflinePiece] = []
        losses: list[float] = []
        at, left = start, steps
        for p in self.course:
            if left == 0 or p.end_step <= at:
                continue
            part = p.tail(at)
            ran = min(left, part.steps)
            pieces.append(OfflinePiece(**{**part.to_dict(), "ran": ran}))
            losses += [self.step(part.lr_at(j)) for j in range(ran)]
            at, left = at + ran, left - ran
        if left:
            lr = self.state["seen"][-1] if self.state["seen"] else 0.01
            pieces.append(OfflinePiece(at, left, "constant", lr, lr, ran=left))
            losses += [self.step(lr) for _ in range(left)]
        self.last = ("offline", None, None)
        return pieces, losses


def play(config: dict[str, Any], outages: dict[int, int]) -> tuple[Tuner, Worker]:
    """Run a job to its end; before the segments whose index is in ``outages`` the worker runs that many steps
    offline instead (the segment it was handed is then reported as not run)."""
    tuner = Tuner(TunerConfig(**config))
    w = Worker()
    seg = tuner.next_segment()
    index = 0
    while not seg.done:
        offline = outages.get(index, 0)
        index += 1
        left = tuner.settings.total_steps - tuner.steps_used
        if offline and left > 0:
            pieces, losses = w.offline(tuner.steps_used, min(offline, left))
            used = tuner.steps_used
            seg = tuner.report(seg.segment_id, losses, offline=pieces)
            assert tuner.steps_used == used + len(losses)
            continue
        losses, vals = w.run(seg)
        seg = tuner.report(seg.segment_id, losses, vals)
        assert index < 2000
    return tuner, w


def _is_probe(seg: Segment) -> bool:
    return seg.phase == "explore" and seg.shape == "linear" and seg.restore is None and seg.candidate is not None


def _realized(tuner: Tuner) -> list[float]:
    export = json.loads(json.dumps(tuner.export()))
    return [export_lr(export, j) for j in range(export["steps"])]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_offline_steps_count_in_the_budget_and_the_export_is_what_the_weights_saw(name: str) -> None:
    outages = {i: 37 + 11 * (i % 5) for i in range(2, 60, 3)}  # an outage before every third segment
    tuner, w = play(CONFIGS[name], outages)
    total = CONFIGS[name]["total_steps"]
    assert w.ran == total == tuner.steps_used  # exactly the budget, outages or not
    assert tuner.done
    assert _realized(tuner) == w.state["seen"]  # the schedule we report is the one the final weights ran
    records = tuner.schedule()["segments"]
    offline = [r for r in records if r["phase"] == "offline"]
    assert offline and sum(r["steps"] for r in records) == total


def test_without_outages_the_export_is_unchanged_by_lineage() -> None:
    tuner, w = play(CONFIGS["greedy"], {})
    assert _realized(tuner) == w.state["seen"]
    flagged = [r for r in tuner.schedule()["segments"] if not r["rolled_back"]]
    assert sum(r["steps"] for r in flagged) == len(w.state["seen"])


def test_a_probe_whose_candidate_ran_into_an_outage_is_dropped_not_run_on_other_weights() -> None:
    config = CONFIGS["greedy"]
    tuner = Tuner(TunerConfig(**config))
    w = Worker()
    seg = tuner.next_segment()
    dropped = 0
    while not seg.done:
        if _is_probe(seg) and dropped < 2:
            dropped += 1
            pieces, losses = w.offline(tuner.steps_used, 20)
            seg = tuner.report(seg.segment_id, losses, offline=pieces)
            assert not _is_probe(seg)
            continue
        losses, vals = w.run(seg)
        seg = tuner.report(seg.segment_id, losses, vals)
    assert dropped == 2 and w.probes_checked > 0
    lost = [c for st in tuner.dump()["stages"] for c in st["candidates"] if (c.get("probe") or {}).get("lost")]
    assert len(lost) == 2
    assert w.ran == config["total_steps"] == tuner.steps_used
    assert _realized(tuner) == w.state["seen"]


@pytest.mark.parametrize("name", ["greedy", "plan", "wsd"])
def test_every_segment_carries_the_rest_of_the_budget_as_its_continuation(name: str) -> None:
    tuner = Tuner(TunerConfig(**CONFIGS[name]))
    w = Worker()
    seg = tuner.next_segment()
    total = CONFIGS[name]["total_steps"]
    while not seg.done:
        if seg.end_step == total:
            assert seg.then == ()
            losses, vals = w.run(seg)
            seg = tuner.report(seg.segment_id, losses, vals)
            continue
        assert seg.then, f"segment {seg.segment_id} carries no continuation"
        assert seg.then[0].start_step == seg.end_step and seg.then[-1].end_step == total
        for a, b in zip(seg.then, seg.then[1:], strict=False):
            assert b.start_step == a.end_step
        assert all(p.lr_at(j) >= 0 for p in seg.then for j in (0, p.steps - 1))
        last = seg.then[-1]
        if name == "greedy":  # the continuation ends in its anneal
            assert last.lr_at(last.steps - 1) < 0.5 * seg.then[0].lr_at(0) or seg.then[0].lr_at(0) == 0
        elif name == "plan":  # the planned continuation ends below where it starts (or at the range's floor)
            first = seg.then[0].lr_at(0)
            assert last.lr_at(last.steps - 1) < first or first <= CONFIGS[name]["min_lr"] * (1 + 1e-9)
        losses, vals = w.run(seg)
        seg = tuner.report(seg.segment_id, losses, vals)
    assert seg.then == ()


def test_the_plan_continuation_gives_the_plan_lr_at_every_step() -> None:
    tuner, _ = play(CONFIGS["plan"], {})
    recovered = Tuner.recover(tuner.dump())
    assert recovered.export() == tuner.export()
    tuner = Tuner(TunerConfig(**CONFIGS["plan"]))
    w = Worker()
    seg = tuner.next_segment()
    from lrtune.tuner.planner import Plan

    checked = 0
    while not seg.done:
        plan = tuner.dump()["online"]["plan"] if tuner.dump().get("online") else None
        if plan is not None and seg.phase == "train" and checked < 5:
            p = Plan.from_dict(plan)
            for piece in seg.then:
                for j in range(0, piece.steps, max(1, piece.steps // 7)):
                    assert piece.lr_at(j) == pytest.approx(p.lr_at(piece.start_step + j), rel=1e-9)
            checked += 1
        losses, vals = w.run(seg)
        seg = tuner.report(seg.segment_id, losses, vals)
    assert checked == 5


def test_offline_reports_are_checked_and_idempotent() -> None:
    tuner = Tuner(TunerConfig(**CONFIGS["greedy"]))
    w = Worker()
    seg = tuner.next_segment()
    losses, _ = w.run(seg)
    seg = tuner.report(seg.segment_id, losses)
    before = tuner.dump()
    start = tuner.steps_used
    piece = OfflinePiece(start, 10, "constant", 0.01, 0.01, ran=10)
    bad: list[tuple[list[OfflinePiece], list[float], str]] = [
        ([OfflinePiece(start + 1, 10, "constant", 0.01, 0.01, ran=10)], [1.0] * 10, "start at step"),
        ([piece], [1.0] * 9, "10 offline steps but 9 losses"),
        ([OfflinePiece(start, 10, "constant", 0.01, 0.01, ran=11)], [1.0] * 11, "ran must be"),
        ([OfflinePiece(start, 10, "constant", -0.01, 0.01, ran=10)], [1.0] * 10, "negative"),
        ([OfflinePiece(start, 10**6, "constant", 0.01, 0.01, ran=10**6)], [1.0] * 10**6, "of the budget are left"),
        ([piece, OfflinePiece(start + 11, 5, "constant", 0.01, 0.01, ran=5)], [1.0] * 15, "follow each other"),
    ]
    for pieces, values, fragment in bad:
        with pytest.raises(InvalidReportError, match=fragment):
            tuner.report(seg.segment_id, values, offline=pieces)
        assert tuner.dump() == before
    with pytest.raises(InvalidReportError, match="malformed"):
        tuner.report(seg.segment_id, [1.0], offline=[{"start_step": start}])
    nxt = tuner.report(seg.segment_id, [1.0] * 10, offline=[piece])
    again = tuner.report(seg.segment_id, [1.0] * 10, offline=[piece.to_dict()])
    assert again == nxt and tuner.steps_used == start + 10


def test_the_default_plan_decays_at_least_linearly_to_the_floor_over_the_last_fifth_of_the_budget() -> None:
    # The model chooses the LR (a steeper or earlier decay too); the tail keeps its final decay from being a short
    # drop at the very end, online and offline alike: from the plan's anchor (where the line starts, at or before
    # the last fifth) the LR stays under a line down to zero (at the range's floor), give or take the segments'
    # exponential steps between planned points, and the last knots' log-linear approach to the floor.
    config = CONFIGS["plan"]
    total, last, floor = config["total_steps"], config["total_steps"] // 5, config["min_lr"]

    def under_the_line(seen: list[float], at: int, top: float) -> bool:
        # The weights' own LRs, the last of them at the budget's last step (rolled-back steps are not among them).
        ran = seen[at - total :]
        line = [max(top * (total - s) / (total - at), floor) for s in range(at, total)]
        return all(lr <= 1.1 * bound or lr <= 1.5 * floor for lr, bound in zip(ran, line, strict=True))

    for outages in ({}, {i: 37 for i in range(20, 60, 4)}):
        tuner, w = play(config, outages)
        at, top = tuner.dump()["online"]["plan"]["anchor"]
        assert total - last - total / 23 <= at <= total - last
        assert under_the_line(w.state["seen"], at, top) and w.state["seen"][-1] == pytest.approx(floor, rel=0.01)
    tuner, w = play({**config, "decay_tail": 0.0}, {})  # switched off: the model's own ending, a late drop
    assert "anchor" not in tuner.dump()["online"]["plan"]
    assert not under_the_line(w.state["seen"], total - last, w.state["seen"][-last - 1])
