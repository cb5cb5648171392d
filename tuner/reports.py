"""Reports at the tuner's door: losses as floats, what a report of a segment must hold, and its digest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tuner.errors import InvalidReportError
from tuner.segment import OfflinePiece, diverged

#: Largest loss magnitude taken as a number. A loss beyond it (either sign) is a diverged point, like NaN: the loss
#: model squares and sums losses and the GP standardizes them, and values near the float64 limit (1e155 squared
#: is inf) overflow there. No real training loss comes near 1e30; subnormals and other tiny values are kept.
MAX_ABS_LOSS = 1e30


_PLAIN = {float, type(None)}


def as_floats(values: Sequence[float | None], name: str) -> list[float]:
    """Convert reported losses to floats: ``None``, NaN, ±inf and any magnitude above :data:`MAX_ABS_LOSS` → NaN.

    Raises:
        InvalidReportError: Not a list, or an entry that is neither a number nor ``None``.
    """
    if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
        raise InvalidReportError(f"{name} must be a list of numbers")
    if set(map(type, values)) <= _PLAIN:  # what the service's parser hands over: one vectorized pass
        arr = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        arr[~(np.abs(arr) <= MAX_ABS_LOSS)] = math.nan
        return arr.tolist()  # type: ignore[no-any-return]
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
            raise InvalidReportError(f"{name}[{i}] must be a number or null, got {type(v).__name__}")
        try:
            x = float(v)
        except OverflowError:  # an int beyond float64
            x = math.inf
        out.append(x if abs(x) <= MAX_ABS_LOSS else math.nan)
    return out


def digest(
    segment_id: int, train: list[float], val: list[float] | None, offline: list[OfflinePiece] | None = None
) -> str:
    """A fingerprint of a report: the same report twice has the same digest."""
    values = [segment_id, [repr(v) for v in train], None if val is None else [repr(v) for v in val]]
    if offline is not None:
        values.append([repr(dataclasses.astuple(p)) for p in offline])
    payload = json.dumps(values)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def check_report(seg: dict[str, Any], train: list[float], val: list[float] | None) -> None:
    """Check that losses ``train`` (and ``val``) fit segment ``seg`` (``Segment.to_dict()``).

    Raises:
        InvalidReportError: They do not.
    """
    steps = seg["steps"]
    n = len(train)
    if n == 0:
        raise InvalidReportError(f"segment {seg['segment_id']} needs losses for its {steps} steps, got none")
    if n > steps:
        raise InvalidReportError(f"segment {seg['segment_id']} has {steps} steps but the report has {n} losses")
    if n < steps and not (seg["phase"] == "explore" and diverged(train, seg["abort_above"])):
        raise InvalidReportError(
            f"segment {seg['segment_id']} has {steps} steps but the report has {n} losses; only a candidate "
            "whose loss diverged may stop early"
        )
    every = seg["eval_every"]
    if every is None:
        if val:
            raise InvalidReportError(
                f"segment {seg['segment_id']} asked for no validation losses, but the report has {len(val)}"
            )
        return
    want = n // every
    got = 0 if val is None else len(val)
    if got != want:
        raise InvalidReportError(
            f"segment {seg['segment_id']} evaluates every {every} steps: {want} validation losses expected "
            f"for {n} steps, got {got}"
        )
