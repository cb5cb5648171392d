"""What lrtune did, for the experiment tracker a user already has: segment logs, their fate, TensorBoard.

:class:`lrtune.client.AutoLRSCallback` takes ``log_fn``: a function it calls with a :class:`SegmentLog` once at the
end of every segment, from the losses it syncs there anyway (no extra device sync), and once more, with ``rolled_back``
set, when a later segment discards that segment's steps. Whether a segment is rolled back is not known when it
ends: a candidate LR is rolled back once the search picks another candidate (the next segment restores the stage
snapshot or the winner's end state, and the candidate's end state is dropped). The callback follows the weights
through every snapshot it saves, restores and drops, and reports a segment as rolled back once no state it still
holds descends from it: exactly the steps the job's schedule marks as rolled back.

:class:`TensorBoardLog` is such a ``log_fn``: it writes the LR, the phase and the loss to a TensorBoard
``SummaryWriter``, with the loss of rolled-back steps under a tag of their own so that the loss curve shows the
steps the final weights went through and, next to it, the discarded exploration.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from lrtune.client.protocol import WireSegment

#: Numeric code of each phase, for trackers that plot only numbers (``lrtune/phase``). ``offline``: steps run
#: while no segment was open (the service unreachable).
PHASE_CODES: dict[str, int] = {"offline": 0, "warmup": 1, "train": 2, "anneal": 3, "schedule": 4, "explore": 5}


def phase_code(phase: str | None) -> int:
    """The :data:`PHASE_CODES` entry of ``phase`` (None: ``offline``)."""
    return PHASE_CODES.get(phase or "offline", PHASE_CODES["offline"])


@dataclass(frozen=True)
class SegmentLog:
    """The steps of one segment (or one stretch of offline steps), as the callback ran them.

    Attributes:
        segment_id: The segment's id in its job; None for steps run while no segment was open.
        phase: ``warmup``, ``explore`` (an LR range sweep, a candidate LR or its cooldown probe), ``train``,
            ``anneal``, ``schedule`` or ``offline``.
        stage: The search stage, for ``explore`` and ``train`` segments of a search, else None.
        candidate: The candidate's index within its stage, for candidates, else None.
        steps: Shape (n,). The callback's step count after each step (1 for the first step of the run; the same
            numbering as ``trainer.global_step`` in Lightning and ``state.global_step`` in the HF Trainer).
        lrs: Shape (n,). The LR each step ran at.
        losses: Shape (n,). Each step's training loss (averaged over DDP ranks; NaN or inf as they came).
        val_steps: Shape (m,). The steps after which a validation loss was taken.
        val_losses: Shape (m,). Those validation losses.
        rolled_back: False when the segment ends; True in the later call that reports its steps as discarded.
    """

    segment_id: int | None
    phase: str
    stage: int | None
    candidate: int | None
    steps: tuple[int, ...]
    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    val_steps: tuple[int, ...] = ()
    val_losses: tuple[float, ...] = ()
    rolled_back: bool = False

    @property
    def explore(self) -> bool:
        """True for exploration (a sweep, a candidate, a probe): steps that may be rolled back later."""
        return self.phase == "explore"

    @classmethod
    def of_segment(
        cls, seg: WireSegment, last_step: int, losses: list[float], val_losses: list[float] | None
    ) -> SegmentLog:
        """The log of ``seg``, which ran ``len(losses)`` steps up to the callback's step ``last_step``."""
        n = len(losses)
        first = last_step - n + 1
        val = list(val_losses or [])
        every = seg.eval_every or 1
        return cls(
            segment_id=seg.segment_id,
            phase=seg.phase,
            stage=seg.stage,
            candidate=seg.candidate,
            steps=tuple(range(first, last_step + 1)),
            lrs=tuple(seg.lr_at(j) for j in range(n)),
            losses=tuple(losses),
            val_steps=tuple(first - 1 + every * (i + 1) for i in range(len(val))),
            val_losses=tuple(val),
        )


LogFn = Callable[[SegmentLog], Any]


class Lineage:
    """Follows which segments the weights descend from, to tell when a segment's steps are discarded.

    The callback tells it each segment that ended (:meth:`ended`) and each snapshot it saves, restores, drops or
    clears. A segment is rolled back once neither the current weights nor any held snapshot descends from it;
    ``log_fn`` then gets its log again with ``rolled_back=True``. Segments every held state descends from can no
    longer be rolled back, and are forgotten.

    Args:
        log_fn: Called with each ended segment's log, and again with ``rolled_back=True`` when it is discarded.
    """

    def __init__(self, log_fn: LogFn) -> None:
        self.log_fn = log_fn
        self._line: tuple[Hashable, ...] = ()  # what the current weights descend from, oldest first
        self._held: dict[str, tuple[Hashable, ...]] = {}
        self._open: dict[Hashable, SegmentLog] = {}  # ended, not rolled back, not yet beyond rolling back
        self._offline = 0

    def ended(self, record: SegmentLog) -> None:
        """A segment (or a stretch of offline steps) ran on the current weights: log it."""
        if record.segment_id is None:
            self._offline += 1
            key: Hashable = ("offline", self._offline)
        else:
            key = record.segment_id
        self._line = (*self._line, key)
        self._open[key] = record
        self.log_fn(record)

    def saved(self, name: str) -> None:
        """The current weights were saved as snapshot ``name``."""
        self._held[name] = self._line

    def restored(self, name: str) -> None:
        """Snapshot ``name`` was restored (one saved before this object knew: nothing it logged is in it)."""
        self._line = self._held.get(name, ())
        self._settle()

    def dropped(self, name: str) -> None:
        """Snapshot ``name`` was freed."""
        if self._held.pop(name, None) is not None:
            self._settle()

    def cleared(self) -> None:
        """Every snapshot was freed (training ended): what the final weights do not descend from is rolled back."""
        self._held.clear()
        self._settle()

    def _settle(self) -> None:
        lines = [self._line, *self._held.values()]
        alive = set().union(*lines)
        for key in [k for k in self._open if k not in alive]:
            self.log_fn(dataclasses.replace(self._open.pop(key), rolled_back=True))
        shared = set(self._line).intersection(*self._held.values())
        for key in [k for k in self._open if k in shared]:
            del self._open[key]  # every state descends from it: it can no longer be rolled back


class TensorBoardLog:
    """A ``log_fn`` that writes what lrtune did to TensorBoard.

    Tags (``prefix`` ``"lrtune"``), all over the callback's step count:

    * ``lrtune/lr``: the LR of every step (the first and the last step of constant stretches);
    * ``lrtune/phase``: the phase of every segment's first and last step, as :data:`PHASE_CODES`;
    * ``lrtune/loss``: the training loss of the steps the weights went on from;
    * ``lrtune/loss_rolled_back``: the training loss of steps that were rolled back (a candidate that lost, its
      cooldown probe, the LR range sweep), so that they stand apart from the loss curve instead of in it;
    * ``lrtune/val_loss``: the validation losses the job asked for.

    Exploration losses are written once their fate is known (when a later segment that is not exploration ends,
    or when they are rolled back), so ``lrtune/loss`` holds no step that was discarded. A step written to
    ``lrtune/loss`` and discarded after all (rare: a training segment interrupted by an outage) is written to
    ``lrtune/loss_rolled_back`` too.

    Args:
        writer: A ``torch.utils.tensorboard.SummaryWriter`` (or anything with its ``add_scalar``, such as
            ``tensorboardX``'s, or a Lightning ``TensorBoardLogger``'s ``.experiment``), or a log directory to
            create one in (needs ``pip install tensorboard``).
        prefix: The first part of every tag.

    Raises:
        ImportError: A log directory was given and tensorboard is not installed.
    """

    def __init__(self, writer: Any, prefix: str = "lrtune") -> None:
        if isinstance(writer, str | os.PathLike):
            writer = _summary_writer(os.fspath(writer))
        if not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(f"writer must be a SummaryWriter or a log directory, got {type(writer).__name__}")
        self.writer = writer
        self.prefix = prefix
        self._held: dict[int, SegmentLog] = {}  # exploration, fate unknown

    def __call__(self, record: SegmentLog) -> None:
        """Write ``record`` (a segment that ended, or one rolled back)."""
        if record.rolled_back:
            if record.segment_id is not None:
                self._held.pop(record.segment_id, None)
            self._losses("loss_rolled_back", record)
            return
        self._lr_and_phase(record)
        self._val(record)
        if record.explore and record.segment_id is not None:
            self._held[record.segment_id] = record
            return
        self._release()
        self._losses("loss", record)

    def flush(self) -> None:
        """Write the exploration still held (not rolled back by the end: the weights went on from it) and flush."""
        self._release()
        flush = getattr(self.writer, "flush", None)
        if callable(flush):
            flush()

    def close(self) -> None:
        """:meth:`flush`, then close the writer."""
        self.flush()
        close = getattr(self.writer, "close", None)
        if callable(close):
            close()

    def _release(self) -> None:
        held = sorted(self._held.values(), key=lambda r: r.steps[0] if r.steps else 0)
        self._held.clear()
        for rec in held:
            self._losses("loss", rec)

    def _lr_and_phase(self, record: SegmentLog) -> None:
        if not record.steps:
            return
        add, tag = self.writer.add_scalar, f"{self.prefix}/lr"
        moving = len(set(record.lrs)) > 1
        for i, (step, lr) in enumerate(zip(record.steps, record.lrs, strict=True)):
            if moving or i in (0, len(record.steps) - 1):
                add(tag, lr, step)
        code = phase_code(record.phase)
        for step in {record.steps[0], record.steps[-1]}:
            add(f"{self.prefix}/phase", code, step)

    def _losses(self, name: str, record: SegmentLog) -> None:
        add, tag = self.writer.add_scalar, f"{self.prefix}/{name}"
        for step, loss in zip(record.steps, record.losses, strict=True):
            if math.isfinite(loss):
                add(tag, loss, step)

    def _val(self, record: SegmentLog) -> None:
        for step, loss in zip(record.val_steps, record.val_losses, strict=True):
            if math.isfinite(loss):
                self.writer.add_scalar(f"{self.prefix}/val_loss", loss, step)


def _summary_writer(logdir: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's writer needs the tensorboard package
        raise ImportError(
            "TensorBoardLog needs TensorBoard to write a log directory: pip install tensorboard "
            "(or pass a SummaryWriter of your own)"
        ) from exc
    return SummaryWriter(logdir)
