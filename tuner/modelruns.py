"""The loss model's view of the segment records: each record a run with its exact LR trajectory.

Every reported segment is data for the schedule-aware loss model (:mod:`lrtune.tuner.lossmodel`): the sweep, the
candidates, their cooldown probes and the kept line, each with its per-step LRs; a record's ``parent`` is the run
whose end state it starts from, so rolled-back branches share their parent's prefix. :class:`RecordMemo` keeps what
is derived from the records on a tuner object between reports (never in the stored state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from lrtune.tuner import lossmodel
from lrtune.tuner.lossmodel import Fit, History, Run
from lrtune.tuner.records import SegmentRecord
from lrtune.tuner.replan import Knobs
from lrtune.tuner.segment import curve_lr
from lrtune.tuner.spectral import ModeHistory, RowCache

#: A history type: either model's (each extends itself by a run's per-step LRs with ``then``).
_H = TypeVar("_H", History, ModeHistory)

#: A segment record, or its stored form (``SegmentRecord.to_dict()``, as a dumped state holds it).
AnyRecord = SegmentRecord | Mapping[str, Any]


def _record(rec: AnyRecord) -> SegmentRecord:
    return rec if isinstance(rec, SegmentRecord) else SegmentRecord.from_dict(rec)


def record_lrs(rec: AnyRecord) -> NDArray[np.float64]:
    """Per-step LR of a reported segment record, shape (steps,)."""
    r = _record(rec)
    n = r.steps
    planned = max(r.planned_steps, 1)
    pos = r.curve_start + (r.curve_end_planned - r.curve_start) * np.arange(n) / planned
    shape = r.shape
    f, t = float(r.curve_from), float(r.curve_to)
    if shape == "constant":
        return np.full(n, f)
    if shape == "exp":
        p = np.clip(pos, 0.0, 1.0)
        return np.asarray(f * (t / f) ** p if f > 0 and t > 0 else np.full(n, f), dtype=float)
    return np.array([curve_lr(shape, f, t, float(p)) for p in pos])


def runs_of(
    records: Sequence[AnyRecord], objective: str = "train", memo: RecordMemo | None = None
) -> tuple[list[Run], dict[int, int]]:
    """The loss model's runs from the segment records, and each segment id's run index.

    Args:
        records: Reported segment records, in report order (parents first).
        objective: ``train`` uses the binned training losses, ``val`` the validation losses.
        memo: Reuse the runs (and so the geometry each run caches) built on earlier calls.
    """
    runs: list[Run] = []
    index: dict[int, int] = {}
    for rec in map(_record, records):
        if rec.steps == 0:
            continue
        parent = rec.parent
        p = index.get(parent) if parent is not None else None
        sid = rec.segment_id
        hit = None if memo is None else memo.runs.get((objective, sid))
        if hit is not None and hit[0] is rec and hit[1].parent == p:
            run = hit[1]
        else:
            start = rec.start_step
            source = rec.val if objective == "val" else rec.curve
            points = tuple((round(float(e)) - start, m) for e, m in source)
            lrs = record_lrs(rec) if memo is None else memo.lrs_of(rec)
            run = Run(p, lrs, points)  # type: ignore[arg-type]
            if memo is not None:
                memo.runs[objective, sid] = (rec, run)
        index[sid] = len(runs)
        runs.append(run)
    return runs, index


def path_lrs(
    records: Sequence[SegmentRecord], segment_id: int | None, memo: RecordMemo | None = None
) -> list[NDArray[np.float64]]:
    """Per-step LRs of the segments from the initial weights to the end of segment ``segment_id``, first first.

    Args:
        records: Reported segment records.
        segment_id: The last segment of the path (None: the empty path).
        memo: Reuse the LRs computed on earlier calls.
    """
    return [record_lrs(rec) if memo is None else memo.lrs_of(rec) for rec in path(records, segment_id)]


def path(records: Sequence[SegmentRecord], segment_id: int | None) -> list[SegmentRecord]:
    """The records from the initial weights to the end of segment ``segment_id``, first first."""
    by_id = {r.segment_id: r for r in records}
    chain: list[SegmentRecord] = []
    sid = segment_id
    while sid is not None and sid in by_id:
        rec = by_id[sid]
        chain.append(rec)
        sid = rec.parent
    return chain[::-1]


@dataclass
class RecordMemo:
    """What the loss model derives from the segment records, kept on a tuner object between reports.

    Never part of the dumped state: a recovered tuner starts with an empty memo and computes the same values.
    Records only ever gain new entries and flip ``rolled_back``, which nothing here reads; every entry keeps the
    record object it was computed from and is recomputed when the state holds another one.

    Attributes:
        lrs: Per segment id, the record and its per-step LRs (:func:`record_lrs`), shape (steps,).
        runs: Per (objective, segment id), the record and its loss-model run.
        histories: Per segment id, the record, the history it extends (its parent's) and the history of the path
            to the end of the segment.
        empty: The history of the empty path (the root every path's history extends).
        modes: As ``histories``, for the spectral model's per-mode state (:class:`ModeHistory`).
        mode_root: The spectral state of the initial weights (on the grid the ``modes`` were computed on).
        spectral_rows: The spectral model's rows of each run (:class:`lrtune.tuner.spectral.RowCache`).
    """

    lrs: dict[int, tuple[SegmentRecord, NDArray[np.float64]]] = field(default_factory=dict)
    runs: dict[tuple[str, int], tuple[SegmentRecord, Run]] = field(default_factory=dict)
    histories: dict[int, tuple[SegmentRecord, History, History]] = field(default_factory=dict)
    empty: History = field(default_factory=lambda: History.of([]))
    modes: dict[int, tuple[SegmentRecord, ModeHistory, ModeHistory]] = field(default_factory=dict)
    mode_root: ModeHistory | None = None
    spectral_rows: RowCache = field(default_factory=RowCache)

    def lrs_of(self, rec: SegmentRecord) -> NDArray[np.float64]:
        """:func:`record_lrs` of a record, computed once."""
        sid = rec.segment_id
        hit = self.lrs.get(sid)
        if hit is not None and hit[0] is rec:
            return hit[1]
        lrs = record_lrs(rec)
        self.lrs[sid] = (rec, lrs)
        return lrs

    def history(self, records: Sequence[SegmentRecord], segment_id: int | None) -> History:
        """``History.of(path_lrs(records, segment_id))``, extending the histories of the path's prefixes."""
        return self._walk(records, segment_id, self.empty, self.histories)

    def mode_history(
        self, records: Sequence[SegmentRecord], segment_id: int | None, h: NDArray[np.float64]
    ) -> ModeHistory:
        """The spectral model's state at the end of segment ``segment_id`` on the curvature grid ``h``."""
        root = self.mode_root
        if root is None or not np.array_equal(root.h, h):
            root = self.mode_root = ModeHistory.start(h)
            self.modes.clear()
        return self._walk(records, segment_id, root, self.modes)

    def _walk(
        self,
        records: Sequence[SegmentRecord],
        segment_id: int | None,
        root: _H,
        cache: dict[int, tuple[SegmentRecord, _H, _H]],
    ) -> _H:
        """The history at the end of segment ``segment_id``, from ``root`` through each record on its path.

        Each record's history is kept in ``cache`` with the one it extends, so a path shared with an earlier call
        is not recomputed (a hit needs the very record and the very history it extended).
        """
        history = root
        for rec in path(records, segment_id):
            sid = rec.segment_id
            hit = cache.get(sid)
            if hit is not None and hit[0] is rec and hit[1] is history:
                history = hit[2]
                continue
            longer = history.then(self.lrs_of(rec))
            cache[sid] = (rec, history, longer)
            history = longer
        return history


def fit_model(
    records: Sequence[AnyRecord],
    knobs: Knobs,
    floor: float | None,
    objective: str,
    start: lossmodel.Params | None = None,
    memo: RecordMemo | None = None,
    beta: float | None = None,
) -> Fit | None:
    """Fit the loss model to every reported segment (None while it cannot tell yet).

    Args:
        records: Reported segment records, in report order (or their stored form).
        knobs: The planning settings (the fit's window and kernel).
        floor: Lowest value the loss can take, or None.
        objective: ``train`` or ``val``.
        start: A previous fit's parameters to start a short search from (None: the multi-start search).
        memo: Reuse the runs built on earlier calls.
        beta: Hold the noise-response exponent at this value (the rival fit), or None.
    """
    runs, _ = runs_of(records, objective, memo)
    return lossmodel.fit(runs, loss_floor=floor, window=knobs.window, start=start, tied=knobs.tied, beta=beta)
