"""Batch replay: every candidate of a stage sees the same batches.

Wrap the training data loader in a :class:`ReplayLoader` and give it to the callback (``loader=``); iterate the
wrapper instead of the loader. When a segment saves the stage snapshot and asks for replay, the wrapper starts
recording the batches it hands out; when a later candidate restores that snapshot, it hands out the recorded
batches again from the first one (and records on if that candidate runs longer). A replayed segment that
neither saves nor restores a snapshot (a candidate's cooldown probe) goes on with the recording. Any other
segment ends the recording and frees it, and the wrapper passes the loader's batches through untouched.

Memory: the recording holds a reference to every batch of the longest candidate of a stage, i.e. about
``candidate steps x bytes per batch`` (100 steps of 256 CIFAR images in float32 are 300 MiB). Batches are not
copied: a loader that reuses its output buffers must be wrapped with ``copy=True``. ``max_batches`` caps the
recording; candidates beyond the cap see fresh batches (a warning says so once).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("lrtune.client")

T = TypeVar("T")


class _SegmentLike(Protocol):
    @property
    def snapshot(self) -> str | None: ...
    @property
    def restore(self) -> str | None: ...
    @property
    def replay(self) -> bool: ...


class ReplayLoader(Generic[T]):
    """An iterable over ``loader``'s batches that can record and replay the batches of a stage.

    Args:
        loader: Any iterable of batches (a ``torch.utils.data.DataLoader``, a list, a generator factory).
        copy: Deep-copy each recorded batch (for loaders that reuse their output buffers).
        max_batches: Largest number of batches recorded per stage (None: no cap).

    Example:
        >>> data = ReplayLoader(train_loader)
        >>> cb = AutoLRSCallback(model, opt, min_lr=1e-4, max_lr=1e-1, total_steps=1000, loader=data)
        >>> for x, y in data: ...
    """

    def __init__(self, loader: Iterable[T], *, copy: bool = False, max_batches: int | None = None) -> None:
        if not isinstance(loader, Iterable):
            raise TypeError(f"loader must be iterable, got {type(loader).__name__}")
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise ValueError(f"max_batches must be a positive integer or None, got {max_batches!r}")
        self.loader = loader
        self.copy = copy
        self.max_batches = max_batches
        self._name: str | None = None  # snapshot whose batches are recorded
        self._record: list[T] = []
        self._pos = 0  # index in the recording of the next batch to hand out
        self._capped = False
        self._warned_cap = False
        self.replayed = 0  # batches handed out again, in total (for tests and logs)

    @property
    def recording(self) -> str | None:
        """Name of the snapshot whose batches are being recorded, or None."""
        return self._name

    @property
    def recorded(self) -> int:
        """Number of batches held."""
        return len(self._record)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        it = iter(self.loader)
        while True:
            if self._pos < len(self._record):
                batch = self._record[self._pos]
                self._pos += 1
                self.replayed += 1
                yield batch
                continue
            try:
                batch = next(it)
            except StopIteration:
                return
            if self._name is not None and not self._capped:
                if self.max_batches is not None and len(self._record) >= self.max_batches:
                    self._capped = True
                else:
                    self._record.append(copy.deepcopy(batch) if self.copy else batch)
                    self._pos = len(self._record)
            yield batch

    def on_segment(self, segment: _SegmentLike) -> None:
        """Follow a segment that is about to run (the callback calls this after its restore and snapshot)."""
        if segment.replay and segment.snapshot is not None:
            self._start(segment.snapshot)
        elif segment.replay and segment.restore is not None and segment.restore == self._name:
            self._rewind()
        elif segment.replay and segment.restore is None and self._name is not None:
            pass  # continues the candidate that just ran (a cooldown probe): its batches are recorded and replayed too
        else:
            self.stop()

    def stop(self) -> None:
        """End the recording and free it; batches pass through from the loader."""
        self._name = None
        self._record = []
        self._pos = 0
        self._capped = False

    def _start(self, name: str) -> None:
        self.stop()
        self._name = name

    def _rewind(self) -> None:
        if self._capped and not self._warned_cap:
            self._warned_cap = True
            log.warning(
                "batch replay recorded only %d batches (max_batches); candidates see fresh batches beyond those",
                len(self._record),
            )
        self._pos = 0
