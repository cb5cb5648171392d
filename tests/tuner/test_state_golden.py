"""Stored jobs keep going: a dump recovers, writes back what it read, and continues as the job would have.

The service keeps every job as its tuner's ``dump()`` (in Redis) and recovers it on each report, so a dump written
by one version of the tuner must recover under the next one and the job must continue exactly as it would have:
the same segments, the same schedule, summary and export, and a state that is written back in the format it was
read in (``SCHEMA_VERSION`` unchanged). ``data/state_golden.json.gz`` holds jobs as an earlier version ran them: every
preset and the standard strategies, driven by a deterministic simulated worker on a 1-D landscape (candidates that
diverge, a poisoned loss, steps run offline during outages, a cooldown probe lost to an outage, validation losses),
each with the dump the store held at a point in the middle, the segments handed out before and after it, and the
final state and views. The tests here check that

* a stored dump recovers and is written back unchanged, with the same views;
* a stored job, recovered, continues exactly as the version that stored it continued it;
* a new job runs exactly as the stored one did;
* a job recovered from its dump (through JSON) at any point continues exactly as the original;
* dumps written before some keys existed (``sweep``, ``line``, ``snaps``, ``ref_spread``, a record's ``parent``,
  a stage's ``start_spread``, a candidate's ``probe`` and ``abort_above``) still recover and continue.

A change that means to change what the tuner does recaptures the fixture on purpose::

    python -m tests.tuner.test_state_golden

(the job configs compare as configs, so a new config field with a default does not need a recapture). Floats
compare within each case's ``rtol``, since machines differ in the last bits of their arithmetic.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lrtune.tuner import Segment, Tuner, TunerConfig
from lrtune.tuner.config import Defaults
from lrtune.tuner.segment import OfflinePiece, Piece

FIXTURE = Path(__file__).parent / "data" / "state_golden.json.gz"


@dataclass(frozen=True)
class Case:
    """A job and what happens to it.

    Attributes:
        config: The job's config.
        outages: Before the segment with this index (counting every segment handed out) the worker runs this many
            steps offline instead, and reports them.
        lost_probes: The first this many cooldown probes are not run: an outage of 20 steps comes instead.
        poison: Segments (by index) whose third loss is reported as None.
        dump_at: Index of the segment open when the store's dump is taken.
        legacy: Also check a dump of this job stripped of the keys later versions added.
        defaults: What ``default`` and unset choices stood for when the job was created, where that is not today's
            (the stored ``defaults`` of a job an earlier version created).
        rtol: How far (relative) a float may be from the stored one. Machines differ in the last bits of their
            linear algebra; the ``plan`` preset's loss-model fit is ill-conditioned and turns those bits into
            parameters and planned LRs that differ by up to 2x, so its cases check their decisions (every
            segment's phase, steps, snapshots and restores, each stage's winner) exactly and their floats only
            for sign and finiteness.
    """

    config: dict[str, Any]
    outages: dict[int, int] = field(default_factory=dict)
    lost_probes: int = 0
    poison: frozenset[int] = frozenset()
    dump_at: int = 10
    legacy: bool = False
    defaults: dict[str, Any] | None = None
    rtol: float = 1e-6


_PLAN_RTOL = 1.0
_BASE = {"min_lr": 1e-3, "max_lr": 1.0}
_DEFAULT = Case(
    {**_BASE, "total_steps": 2400, "seed": 1},
    outages={6: 50, 14: 35},
    lost_probes=1,
    poison=frozenset({12}),
    dump_at=11,
    legacy=True,
    rtol=_PLAN_RTOL,
)
CASES: dict[str, Case] = {
    "greedy": Case(
        {**_BASE, "total_steps": 1500, "seed": 4, "preset": "greedy"},
        outages={3: 40, 11: 25, 19: 60},
        lost_probes=1,
        poison=frozenset({6, 15}),
        dump_at=9,
        legacy=True,
    ),
    "greedy-val-sweep": Case(
        {
            **{**_BASE, "total_steps": 1500, "seed": 2, "preset": "greedy", "objective": "val"},
            **{"sweep_fraction": 0.04, "warmup_steps": 40},
        },
        outages={0: 12, 8: 30},
        poison=frozenset({10}),
        dump_at=12,
        legacy=True,
    ),
    "greedy-prior": Case(
        {
            **{**_BASE, "total_steps": 1200, "seed": 7, "preset": "greedy", "prior_lr": 0.02},
            **{"keep_winner": False, "noise_from_forecast": False, "power_law": True, "anneal_fraction": 0.1},
        },
        outages={5: 33},
        dump_at=7,
    ),
    "paper": Case(
        {**_BASE, "total_steps": 1000, "seed": 5, "preset": "paper", "tau": 60, "tau_max": 120},
        outages={4: 20, 17: 45},
        poison=frozenset({9}),
        dump_at=14,
        legacy=True,
    ),
    # The default job's outages, lost probe and poisoned loss, planned with the multi-power-law model.
    "plan-power": dataclasses.replace(_DEFAULT, config={**_DEFAULT.config, "preset": "plan", "loss_model": "power"}),
    "default": _DEFAULT,
    # The default job as the version before plans had a decay tail created it: it goes on without one.
    "default-before-tail": dataclasses.replace(
        _DEFAULT, legacy=False, defaults={"preset": "plan", "loss_model": "spectral"}
    ),
    # The default job as the version before the fall check created it: it goes on without the check.
    "default-before-fall-check": dataclasses.replace(
        _DEFAULT, legacy=False, defaults={"preset": "plan", "loss_model": "spectral", "decay_tail": 0.2}
    ),
    # The default job as the version before a checked rise lifted the fall check's floor created it.
    "default-before-lift": dataclasses.replace(
        _DEFAULT,
        legacy=False,
        defaults={"preset": "plan", "loss_model": "spectral", "decay_tail": 0.2, "verify_fall": True},
    ),
    "plan-switches": Case(
        {
            **{**_BASE, "total_steps": 2400, "seed": 3, "preset": "plan", "loss_model": "power", "objective": "val"},
            **{"probe_all": True, "probe_judge": True, "robust_plan": True, "later_searches": True},
        },
        outages={9: 40},
        dump_at=13,
        rtol=_PLAN_RTOL,
    ),
    "plan-prior-cosine": Case(
        {
            **{**_BASE, "total_steps": 2000, "seed": 6, "preset": "plan", "loss_model": "power"},
            **{"prior_lr": 0.05, "plan_shape": "cosine"},
        },
        outages={4: 25},
        dump_at=8,
        rtol=_PLAN_RTOL,
    ),
    "wsd": Case({**_BASE, "total_steps": 700, "strategy": "wsd", "warmup_steps": 50}, outages={2: 37}, dump_at=3),
    "cosine": Case({**_BASE, "total_steps": 400, "strategy": "cosine", "warmup_steps": 20}, outages={1: 15}, dump_at=2),
    "linear": Case({**_BASE, "total_steps": 300, "strategy": "linear", "max_segment_steps": 64}, dump_at=2),
    "rex": Case({**_BASE, "total_steps": 300, "strategy": "rex", "max_segment_steps": 50}, outages={3: 20}, dump_at=2),
    "constant": Case({**_BASE, "total_steps": 300, "strategy": "constant", "max_segment_steps": 100}, dump_at=1),
}


# ---------------------------------------------------------------------- the simulated worker


def _landscape_step(state: dict[str, Any], lr: float) -> float:
    """One step of a 1-D landscape: the loss decays towards a floor that grows with the LR; above 0.5 it diverges."""
    if lr > 0.5:
        state["loss"] = state["loss"] * 1.5 + 1.0
    else:
        floor = 0.1 + 2.0 * lr
        state["loss"] = floor + (state["loss"] - floor) * (1.0 - 0.2 * lr)
    state["t"] += 1
    state["seen"].append(lr)
    wiggle = 0.01 * math.sin(state["t"] * 12.9898)
    return state["loss"] + wiggle if math.isfinite(state["loss"]) else math.inf


@dataclass
class Worker:
    """A worker that follows every snapshot instruction; its state remembers the LR of every step it saw."""

    state: dict[str, Any] = field(default_factory=lambda: {"loss": 3.0, "t": 0, "seen": []})
    snaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    course: tuple[Piece, ...] = ()  # the continuation of the last segment run

    def run(self, seg: Segment, poison: bool) -> tuple[list[float | None], list[float | None] | None]:
        """Run a segment as a client does: a candidate stops early once the divergence guard trips."""
        if seg.restore is not None:
            self.state = copy.deepcopy(self.snaps[seg.restore])
        for name in seg.drop:
            self.snaps.pop(name, None)
        if seg.snapshot is not None:
            self.snaps[seg.snapshot] = copy.deepcopy(self.state)
        losses: list[float | None] = []
        vals: list[float | None] = []
        for j in range(seg.steps):
            losses.append(_landscape_step(self.state, seg.lr_at(j)))
            if seg.eval_every and (j + 1) % seg.eval_every == 0:
                vals.append(1.02 * self.state["loss"] + 0.01 if math.isfinite(self.state["loss"]) else None)
            if seg.phase == "explore" and (j + 1) % 8 == 0:
                tail = [v for v in losses[-5:] if v is not None]
                bad = len(tail) < 5 or any(not math.isfinite(v) for v in tail)
                if bad or (seg.abort_above is not None and sum(tail) / len(tail) > seg.abort_above):
                    break
        if poison and len(losses) > 3:
            losses[2] = None
        if seg.keep is not None:
            self.snaps[seg.keep] = copy.deepcopy(self.state)
        self.course = seg.then
        return losses, (vals if seg.eval_every else None)

    def offline(self, start: int, steps: int) -> tuple[list[OfflinePiece], list[float | None]]:
        """Run ``steps`` steps from job step ``start`` on the course, as a worker cut off from the service does."""
        pieces: list[OfflinePiece] = []
        losses: list[float | None] = []
        at, left = start, steps
        for p in self.course:
            if left == 0 or p.end_step <= at:
                continue
            part = p.tail(at)
            ran = min(left, part.steps)
            pieces.append(OfflinePiece(**{**part.to_dict(), "ran": ran}))
            losses += [_landscape_step(self.state, part.lr_at(j)) for j in range(ran)]
            at, left = at + ran, left - ran
        if left:
            lr = self.state["seen"][-1] if self.state["seen"] else 0.01
            pieces.append(OfflinePiece(at, left, "constant", lr, lr, ran=left))
            losses += [_landscape_step(self.state, lr) for _ in range(left)]
        return pieces, losses


def _is_probe(seg: Segment) -> bool:
    return seg.phase == "explore" and seg.shape == "linear" and seg.restore is None and seg.candidate is not None


@dataclass
class Job:
    """A case in progress: the worker, and what decides each report."""

    case: Case
    worker: Worker = field(default_factory=Worker)
    probes: int = 0

    def act(self, tuner: Tuner | None, seg: Segment, i: int) -> Segment | None:
        """Run (or skip) segment ``i`` and report it to ``tuner``; without a tuner only the worker moves."""
        total = int(self.case.config["total_steps"])
        offline = self.case.outages.get(i, 0)
        if _is_probe(seg):
            self.probes += 1
            if self.probes <= self.case.lost_probes:
                offline = 20
        left = total - seg.start_step
        if offline and left > 0:
            pieces, losses = self.worker.offline(seg.start_step, min(offline, left))
            return None if tuner is None else tuner.report(seg.segment_id, losses, offline=pieces)
        losses, vals = self.worker.run(seg, i in self.case.poison)
        if tuner is None:
            return None
        nxt = tuner.report(seg.segment_id, losses, vals)
        if i % 5 == 0:  # a repeated report (a retry) changes nothing
            assert tuner.report(seg.segment_id, losses, vals) == nxt
        return nxt


def views(tuner: Tuner) -> dict[str, Any]:
    """Everything a user reads of a job: summary, schedule, export, each stage's outcome and the last posterior."""
    stages = len(tuner.schedule()["stages"])
    return dict(
        _plain(
            {
                "summary": tuner.summary(),
                "schedule": tuner.schedule(),
                "export": tuner.export(),
                "stage_outcome": [tuner.stage_outcome(i) for i in range(stages)],
                "posterior": tuner.posterior(),
            }
        )
    )


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def play(case: Case, recover_every: int | None = None) -> dict[str, Any]:
    """Run a new job to its end; with ``recover_every`` swap the tuner for one recovered from its dump that often."""
    job = Job(case)
    tuner = Tuner(TunerConfig(**case.config))
    if case.defaults is not None:
        tuner = Tuner.recover({**tuner.dump(), "defaults": case.defaults})
    out: dict[str, Any] = {"segments": []}
    seg = tuner.next_segment()
    i = 0
    while not seg.done:
        assert seg.start_step == tuner.steps_used
        out["segments"].append(seg.to_dict())
        if i == case.dump_at:
            out["mid"] = {"dump": _plain(tuner.dump()), "views": views(tuner)}
        if recover_every and i % recover_every == recover_every - 1:
            tuner = Tuner.recover(json.loads(json.dumps(tuner.dump())))
            assert tuner.next_segment() == seg
        nxt = job.act(tuner, seg, i)
        assert nxt is not None
        seg, i = nxt, i + 1
        assert i < 2000
    out["segments"].append(seg.to_dict())
    out["final"] = {"dump": _plain(tuner.dump()), "views": views(tuner)}
    assert "mid" in out, "dump_at is past the end of the job"
    return out


def resume(case: Case, stored: list[dict[str, Any]], state: dict[str, Any]) -> dict[str, Any]:
    """Continue a stored job: replay the worker over the segments handed out before ``state`` was dumped, recover
    the tuner from ``state`` and run on to the end."""
    job = Job(case)
    for i in range(case.dump_at):
        job.act(None, Segment.from_dict(stored[i]), i)
    tuner = Tuner.recover(copy.deepcopy(state))
    out: dict[str, Any] = {"segments": [], "views_at_recovery": views(tuner)}
    seg = tuner.next_segment()
    i = case.dump_at
    while not seg.done:
        out["segments"].append(seg.to_dict())
        nxt = job.act(tuner, seg, i)
        assert nxt is not None
        seg, i = nxt, i + 1
        assert i < 2000
    out["segments"].append(seg.to_dict())
    out["final"] = {"dump": _plain(tuner.dump()), "views": views(tuner)}
    return out


# ---------------------------------------------------------------------- dumps of earlier versions


def strip_later_keys(state: dict[str, Any]) -> dict[str, Any]:
    """A dump as versions before lineage, the LR range sweep, spreads and probes wrote it (same schema)."""
    old = copy.deepcopy(state)
    for key in ("line", "snaps", "ref_spread"):
        old.pop(key, None)
    if old.get("sweep") is None:
        old.pop("sweep", None)
    for rec in old["segments"]:
        rec.pop("parent", None)
    for stage in old["stages"]:
        stage.pop("start_spread", None)
        for cand in stage["candidates"]:
            cand.pop("abort_above", None)
            if cand.get("probe") is None:
                cand.pop("probe", None)
    return old


def with_defaults(state: dict[str, Any]) -> dict[str, Any]:
    """A dump with the keys :func:`strip_later_keys` takes out put back at their defaults where missing."""
    new = copy.deepcopy(state)
    for key, default in (("line", None), ("snaps", {}), ("ref_spread", None), ("sweep", None)):
        new.setdefault(key, default)
    for rec in new["segments"]:
        rec.setdefault("parent", None)
    for stage in new["stages"]:
        stage.setdefault("start_spread", None)
        for cand in stage["candidates"]:
            cand.setdefault("abort_above", None)
            cand.setdefault("probe", None)
    return new


# ---------------------------------------------------------------------- capture


def views_with_defaults(seen: dict[str, Any]) -> dict[str, Any]:
    """Views with the keys :func:`strip_later_keys` takes out of the records put back at their defaults."""
    new = copy.deepcopy(seen)
    for rec in new["schedule"]["segments"]:
        rec.setdefault("parent", None)
    return new


def _rounded(value: Any) -> Any:
    """``value`` with every float to 10 significant digits (what the fixture keeps of a value it compares)."""
    if isinstance(value, float):
        return float(f"{value:.10g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _as_config(value: Any) -> Any:
    """A dump with its config read as a config (so a new config field with a default compares equal)."""
    if isinstance(value, dict) and "schema" in value and "config" in value:
        return {**value, "config": TunerConfig.from_dict(value["config"]).to_dict()}
    return value


def differences(got: Any, want: Any, rtol: float, path: str = "") -> list[str]:
    """Where ``got`` and ``want`` differ: in structure, in any non-float, or in a float by more than ``rtol``.

    Floats are compared relative to the larger magnitude of the two; non-finite floats must match exactly. With a
    tolerance, a report's ``digest`` (a hash of its losses) is not compared.

    Returns:
        One line per difference (its path and both values), at most 5.
    """
    out: list[str] = []

    def walk(a: Any, b: Any, at: str) -> None:
        if len(out) >= 5:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                out.append(f"{at}: keys {sorted(a.keys() ^ b.keys())} on one side only")
                return
            for k in a:
                if k == "digest" and rtol > 0:
                    continue  # a report's fingerprint hashes its losses: it is as exact as they are
                walk(a[k], b[k], f"{at}.{k}")
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                out.append(f"{at}: {len(a)} items, {len(b)} stored")
                return
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{at}[{i}]")
        elif isinstance(a, float) and isinstance(b, float):
            if a == b or (math.isnan(a) and math.isnan(b)):
                return
            if not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > rtol * max(abs(a), abs(b)):
                out.append(f"{at}: {a!r}, stored {b!r}")
        elif type(a) is not type(b) or a != b:
            out.append(f"{at}: {a!r}, stored {b!r}")

    walk(_as_config(got), _as_config(want), path or "$")
    return out


def assert_matches(got: Any, want: Any, rtol: float, what: str) -> None:
    """Fail with the first differences (see :func:`differences`) if ``got`` is not ``want`` within ``rtol``."""
    diff = differences(_plain(got), want, rtol, what)
    assert not diff, "\n".join(diff)


def assert_final_matches(got: dict[str, Any], want: dict[str, Any], rtol: float) -> None:
    """The final dump and views of a job match the stored ones (see :func:`assert_matches`)."""
    assert_matches(got["dump"], want["dump"], rtol, "final dump")
    assert_matches(got["views"], want["views"], rtol, "final views")


def capture() -> dict[str, Any]:
    """Run every case and record what this version of the tuner does: the fixture's content.

    The store's dump and the segments handed out before it are kept exactly (they are replayed); everything
    else with floats to 10 significant digits (it is compared within the case's ``rtol``).
    """
    out: dict[str, Any] = {}
    for name, case in CASES.items():
        run = play(case)
        entry: dict[str, Any] = {
            "before": run["segments"][: case.dump_at],
            "mid": {"dump": run["mid"]["dump"], "views": _rounded(run["mid"]["views"])},
            "after": _rounded(run["segments"][case.dump_at :]),
            "final": _rounded(run["final"]),
        }
        if case.legacy:
            legacy = resume(case, run["segments"], strip_later_keys(run["mid"]["dump"]))
            entry["legacy"] = _rounded(
                {**legacy, "final": {**legacy["final"], "dump": with_defaults(legacy["final"]["dump"])}}
            )
        out[name] = entry
    return out


@functools.cache
def _fixture() -> dict[str, Any]:
    return dict(json.loads(gzip.decompress(FIXTURE.read_bytes())))


@functools.cache
def _fresh(name: str) -> str:
    return json.dumps(play(CASES[name]))


@pytest.mark.parametrize("name", list(CASES))
def test_a_stored_dump_recovers_and_is_written_back_unchanged(name: str) -> None:
    case, stored = CASES[name], _fixture()[name]
    state = stored["mid"]["dump"]
    tuner = Tuner.recover(copy.deepcopy(state))
    for again in (tuner.dump(), tuner.dump(copy=False)):
        assert _plain(again) == {**state, "config": _plain(again)["config"]}  # exactly, not just rounded
        assert_matches(again, state, 0.0, "dump")
    assert_matches(views(tuner), stored["mid"]["views"], case.rtol, "views")
    assert_matches(tuner.next_segment().to_dict(), stored["after"][0], case.rtol, "next segment")


@pytest.mark.parametrize("name", list(CASES))
def test_a_stored_job_continues_as_the_version_that_stored_it(name: str) -> None:
    case, stored = CASES[name], _fixture()[name]
    got = resume(case, stored["before"], stored["mid"]["dump"])
    assert_matches(got["segments"], stored["after"], case.rtol, "segments after the dump")
    assert_final_matches(got["final"], stored["final"], case.rtol)


@pytest.mark.parametrize("name", list(CASES))
def test_a_new_job_runs_as_the_stored_one_did(name: str) -> None:
    case, stored, got = CASES[name], _fixture()[name], json.loads(_fresh(name))
    assert_matches(got["segments"][: case.dump_at], stored["before"], case.rtol, "segments before the dump")
    assert_matches(got["mid"]["dump"], stored["mid"]["dump"], case.rtol, "dump")
    assert_matches(got["mid"]["views"], stored["mid"]["views"], case.rtol, "views")
    assert_matches(got["segments"][case.dump_at :], stored["after"], case.rtol, "segments after the dump")
    assert_final_matches(got["final"], stored["final"], case.rtol)


@pytest.mark.parametrize("name", list(CASES))
def test_a_job_recovered_from_its_dump_continues_exactly_as_the_original(name: str) -> None:
    assert json.dumps(play(CASES[name], recover_every=3)) == _fresh(name)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.legacy])
def test_dumps_without_the_keys_later_versions_added_still_recover(name: str) -> None:
    case, stored = CASES[name], _fixture()[name]
    old = strip_later_keys(stored["mid"]["dump"])
    tuner = Tuner.recover(copy.deepcopy(old))
    assert_matches(with_defaults(_plain(tuner.dump())), with_defaults(old), 0.0, "dump")
    got = resume(case, stored["before"], old)
    want = stored["legacy"]
    assert_matches(
        got["views_at_recovery"], views_with_defaults(want["views_at_recovery"]), case.rtol, "views at recovery"
    )
    assert_matches(got["segments"], want["segments"], case.rtol, "segments after the dump")
    assert_matches(with_defaults(got["final"]["dump"]), want["final"]["dump"], case.rtol, "final dump")
    assert_matches(got["final"]["views"], views_with_defaults(want["final"]["views"]), case.rtol, "final views")
    # A missing key reads as its default: the same job with the defaults written in continues alike.
    again = resume(case, stored["before"], with_defaults(old))
    assert json.dumps(again["segments"]) == json.dumps(got["segments"])


# Jobs stored before the state kept its defaults: what their configs said, where a job of today spells it out.
UNPINNED: dict[str, dict[str, Any]] = {"greedy-val-sweep": {"preset": "default"}, "plan-power": {"loss_model": None}}


@pytest.mark.parametrize("name", list(UNPINNED))
def test_a_job_stored_before_the_default_preset_changed_continues_as_it_ran(name: str) -> None:
    # Then ``default`` stood for ``greedy`` and the plan preset's loss model was the power law; such a dump has no
    # ``defaults``. It must not turn into today's default halfway through.
    case, stored = CASES[name], _fixture()[name]
    old = copy.deepcopy(stored["mid"]["dump"])
    del old["defaults"]
    old["config"] = {**old["config"], **UNPINNED[name]}
    tuner = Tuner.recover(copy.deepcopy(old))
    assert "defaults" not in tuner.dump()
    assert TunerConfig.from_dict(tuner.dump()["config"]) == TunerConfig.from_dict(old["config"])
    # Its schedule says what it runs: the greedy job stored under ``default`` does not plan.
    assert tuner.schedule()["planner"] is (name == "plan-power")
    got = resume(case, stored["before"], old)
    assert_matches(got["segments"], stored["after"], case.rtol, "segments after the dump")
    final = {**stored["final"]["dump"], "config": old["config"]}
    del final["defaults"]
    assert_matches(got["final"]["dump"], final, case.rtol, "final dump")
    # The same config in a new job is today's default (the spectral plan), which runs otherwise.
    fresh = play(Case({**case.config, **UNPINNED[name]}, dump_at=0))
    assert fresh["final"]["dump"]["defaults"] == Defaults().to_dict()
    assert fresh["final"]["dump"]["defaults"]["preset"] == "plan"
    assert fresh["segments"] != stored["before"] + stored["after"]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(capture(), separators=(",", ":")) + "\n"
    target.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")
