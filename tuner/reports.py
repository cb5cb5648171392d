"""Reports at the tuner's door: losses as floats, what a report of a segment must hold, and its digest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lrtune.tuner.errors import InvalidReportError
from lrtune.tuner.segment import OfflinePiece, Segment, diverged

#: Largest loss magnitude taken as a number. A loss beyond it (either sign) is a diverged point, like NaN: the loss
#: model squares and sums losses and the GP standardizes them, and values near the float64 limit (1e155 squared
#: is inf) overflow there. No real training loss comes near 1e30; subnormals and other tiny values are kept.
MAX_ABS_LOSS = 1e30


_PLAIN = {float, type(None)}
#: Losses converted or hashed per slice (one short call each, so that other threads get their turn).
_DIGEST_SLICE = 1 << 16


def as_floats(values: Sequence[float | None], name: str) -> list[float]:
    """Convert reported losses to floats: ``None``, NaN, ±inf and any magnitude above :data:`MAX_ABS_LOSS` → NaN.

    Raises:
        InvalidReportError: Not a list, or an entry that is neither a number nor ``None``.
    """
    if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
        raise InvalidReportError(f"{name} must be a list of numbers")
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":  # what the service parses large bodies to
        return _finite_part(np.array(values, dtype=np.float64))
    if set(map(type, values)) <= _PLAIN:  # what the service's parser hands over: one vectorized pass
        return _finite_part(np.array([math.nan if v is None else v for v in values], dtype=np.float64))
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


def _finite_part(arr: np.ndarray[Any, np.dtype[np.float64]]) -> list[float]:
    """The values as floats, NaN for those beyond :data:`MAX_ABS_LOSS` (and for NaN and inf)."""
    arr[~(np.abs(arr) <= MAX_ABS_LOSS)] = math.nan
    out: list[float] = []
    for i in range(0, len(arr), _DIGEST_SLICE):  # a slice at a time: other threads run in between
        out += arr[i : i + _DIGEST_SLICE].tolist()
    return out


def digest(
    segment_id: int, train: list[float], val: list[float] | None, offline: list[OfflinePiece] | None = None
) -> str:
    """A fingerprint of a report: the same report twice has the same digest.

    The losses are hashed as float64 bytes, a slice at a time: a report of 10^6 losses takes about 20 ms and never
    holds the interpreter for long (hashing a large buffer lets other threads, such as the service's event loop,
    run).
    """
    h = hashlib.sha256(json.dumps([segment_id, None if val is None else len(val)]).encode())
    for values in (train, val or []):
        for i in range(0, len(values), _DIGEST_SLICE):
            h.update(np.asarray(values[i : i + _DIGEST_SLICE], dtype=np.float64).tobytes())
    if offline is not None:
        h.update(json.dumps([dataclasses.astuple(p) for p in offline]).encode())
    return "2:" + h.hexdigest()[:32]


def check_report(seg: Segment, train: list[float], val: list[float] | None) -> None:
    """Check that losses ``train`` (and ``val``) fit segment ``seg``.

    Raises:
        InvalidReportError: They do not.
    """
    steps = seg.steps
    n = len(train)
    if n == 0:
        raise InvalidReportError(f"segment {seg.segment_id} needs losses for its {steps} steps, got none")
    if n > steps:
        raise InvalidReportError(f"segment {seg.segment_id} has {steps} steps but the report has {n} losses")
    if n < steps and not (seg.phase == "explore" and diverged(train, seg.abort_above)):
        raise InvalidReportError(
            f"segment {seg.segment_id} has {steps} steps but the report has {n} losses; only a candidate "
            "whose loss diverged may stop early"
        )
    every = seg.eval_every
    if every is None:
        if val:
            raise InvalidReportError(
                f"segment {seg.segment_id} asked for no validation losses, but the report has {len(val)}"
            )
        return
    want = n // every
    got = 0 if val is None else len(val)
    if got != want:
        raise InvalidReportError(
            f"segment {seg.segment_id} evaluates every {every} steps: {want} validation losses expected "
            f"for {n} steps, got {got}"
        )
