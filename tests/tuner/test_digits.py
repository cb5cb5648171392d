"""End to end: a real MLP on scikit-learn's digits, its LR chosen by the tuner through the public API."""

import copy
import math
from collections.abc import Callable

import pytest
import torch
from sklearn.datasets import load_digits

from lrtune.tuner import Segment, Tuner, TunerConfig
from lrtune.tuner.online import TRUST_GROWTH

MIN_LR, MAX_LR, STEPS = 1e-3, 3.0, 1500


class Digits:
    """Train/validation splits and a seeded batch stream whose position is part of the training state."""

    def __init__(self) -> None:
        data = load_digits()
        x = torch.tensor(data.data, dtype=torch.float32) / 16.0
        y = torch.tensor(data.target)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        self.x_train, self.y_train = x[perm[:1300]], y[perm[:1300]]
        self.x_val, self.y_val = x[perm[1300:]], y[perm[1300:]]


def new_state(seed: int = 0) -> dict[str, object]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=MIN_LR, momentum=0.9)
    return {"model": model, "opt": opt, "gen": torch.Generator().manual_seed(seed)}


def snapshot(state: dict[str, object]) -> dict[str, object]:
    return {
        "model": copy.deepcopy(state["model"].state_dict()),  # type: ignore[attr-defined]
        "opt": copy.deepcopy(state["opt"].state_dict()),  # type: ignore[attr-defined]
        "gen": state["gen"].get_state(),  # type: ignore[attr-defined]
    }


def restore(state: dict[str, object], snap: dict[str, object]) -> None:
    state["model"].load_state_dict(snap["model"])  # type: ignore[attr-defined]
    state["opt"].load_state_dict(snap["opt"])  # type: ignore[attr-defined]
    state["gen"].set_state(snap["gen"])  # type: ignore[attr-defined]


def train_step(state: dict[str, object], data: Digits, lr: float) -> float:
    model, opt, gen = state["model"], state["opt"], state["gen"]
    for group in opt.param_groups:  # type: ignore[attr-defined]
        group["lr"] = lr
    idx = torch.randint(0, len(data.y_train), (32,), generator=gen)  # type: ignore[arg-type]
    loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])  # type: ignore[operator]
    opt.zero_grad()  # type: ignore[attr-defined]
    loss.backward()
    opt.step()  # type: ignore[attr-defined]
    return float(loss.detach())


def val_loss(state: dict[str, object], data: Digits) -> float:
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(state["model"](data.x_val), data.y_val)  # type: ignore[operator]
    value = float(loss)
    return value if math.isfinite(value) else math.inf


def run_constant(data: Digits, lr: float) -> float:
    state = new_state()
    for _ in range(STEPS):
        train_step(state, data, lr)
    return val_loss(state, data)


def drive(tuner: Tuner, data: Digits, seed: int = 0, before: Callable[[Segment], None] | None = None) -> float:
    """Train through ``tuner`` as a worker does (snapshots, restores, a candidate cut at a non-finite loss).

    Args:
        tuner: The job.
        data: The splits.
        seed: Seed of the network's initialization and batch stream.
        before: Called with each segment before it runs.

    Returns:
        The final validation loss.
    """
    state = new_state(seed)
    snaps: dict[str, dict[str, object]] = {}
    seg = tuner.next_segment()
    while not seg.done:
        if before is not None:
            before(seg)
        if seg.restore:
            restore(state, snaps[seg.restore])
        for name in seg.drop:
            snaps.pop(name, None)
        if seg.snapshot:
            snaps[seg.snapshot] = snapshot(state)
        losses: list[float] = []
        for j in range(seg.steps):
            losses.append(train_step(state, data, seg.lr_at(j)))
            if not math.isfinite(losses[-1]):
                break
        if seg.keep:
            snaps[seg.keep] = snapshot(state)
        seg = tuner.report(seg.segment_id, losses)
    return val_loss(state, data)


def run_tuned(data: Digits) -> tuple[float, Tuner]:
    tuner = Tuner(TunerConfig(min_lr=MIN_LR, max_lr=MAX_LR, total_steps=STEPS, seed=0))
    return drive(tuner, data), tuner


@pytest.fixture(scope="module")
def data() -> Digits:
    return Digits()


def test_tuned_run_beats_a_constant_lr_at_either_bound(data: Digits) -> None:
    tuned, tuner = run_tuned(data)
    low, high = run_constant(data, MIN_LR), run_constant(data, MAX_LR)
    print(f"validation loss: tuned {tuned:.4f}, constant {MIN_LR:g} {low:.4f}, constant {MAX_LR:g} {high:.4f}")
    print("winners:", [f"{s['winner_lr']:.3g}" for s in tuner.schedule()["stages"]])
    assert tuned < low and tuned < high
    assert tuner.steps_used == STEPS


def run_seeded(data: Digits, seed: int) -> tuple[Tuner, dict[str, object], dict[int, float]]:
    """:func:`run_tuned` from the network and batch stream of ``seed``.

    Returns:
        The tuner, its final state and the planner's trusted LR when each segment was handed out (by segment id).
    """
    tuner = Tuner(TunerConfig(min_lr=MIN_LR, max_lr=MAX_LR, total_steps=STEPS, seed=0))
    trusted: dict[int, float] = {}

    def note_trust(seg: Segment) -> None:
        online = tuner.dump().get("online")
        if online is not None and "trusted" in online:
            trusted[seg.segment_id] = online["trusted"]

    drive(tuner, data, seed, note_trust)
    return tuner, tuner.dump(), trusted


@pytest.mark.parametrize("seed", [2, 5])
def test_a_search_goes_past_the_trust_region_only_where_a_cooldown_probe_says_it_pays(data: Digits, seed: int) -> None:
    # Plans go at most TRUST_GROWTH times above the trusted LR (the highest the kept line ran at as the model
    # predicted). A search's candidate above that is probed (a short decay right after it), and the job continues
    # from it only if its probe ended below the incumbent's (same snapshot, same batches). A search's winner once
    # handed its plan the stability cap, up to 7.5 times the trusted LR: one segment there can wreck a network.
    tuner, state, trusted = run_seeded(data, seed)
    assert tuner.steps_used == STEPS
    assert state["wasted_steps"] <= 0.15 * STEPS  # type: ignore[operator]
    stages = {s["index"]: s for s in state["stages"]}  # type: ignore[attr-defined]
    above = 0
    for rec in state["segments"]:  # type: ignore[attr-defined]
        if rec["segment_id"] not in trusted or rec["phase"] not in ("train", "explore"):
            continue
        bound = TRUST_GROWTH * trusted[rec["segment_id"]] * (1 + 1e-9)
        if max(rec["curve_from"], rec["curve_to"]) <= bound or rec["curve_to"] == 0.0:  # within it, or a probe
            continue
        stage = stages.get(rec["stage"])
        where = f"segment {rec['segment_id']} above {bound:.3g}"
        assert stage is not None and stage["k"] > 1 and rec["candidate"], where
        cand, incumbent = stage["candidates"][rec["candidate"]], stage["candidates"][0]
        if rec["diverged"]:
            continue
        above += 1
        assert cand["probe"] is not None, f"candidate at {cand['lr']:.3g} above the trust region not probed"
        if stage["winner"] == cand["index"]:
            assert cand["probe"]["loss"] < incumbent["probe"]["loss"] and "barred" not in cand
        elif cand["probe"]["loss"] >= incumbent["probe"]["loss"]:
            # It could not win whatever its forecast, and the job says why (the schedule, the CLI, the dashboard).
            assert "trust region" in cand["barred"] and f"{cand['probe']['loss']:.4g}" in cand["barred"]
            shown = tuner.schedule()["stages"][stage["index"]]["candidates"][cand["index"]]
            assert shown["barred"] == cand["barred"]
    assert above, "no candidate above the trust region was tried"
