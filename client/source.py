"""Where segments come from: the interface the callback drives, and the in-process tuner behind it.

Two sources implement :class:`SegmentSource`: :class:`LocalSource` runs a ``lrtune.tuner.Tuner`` in this process
(imported lazily: only this mode needs the ``[tuner]`` extra's botorch), :class:`lrtune.client.remote.RemoteSource`
talks to the service and fails open. Both hand out :class:`lrtune.client.protocol.WireSegment` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from lrtune.client.protocol import JobConfig, OfflinePiece, WireSegment

if TYPE_CHECKING:
    from lrtune.tuner import Segment, Tuner

#: Job id the in-process source gives its segments.
LOCAL_JOB_ID = "local"


class SegmentSource(Protocol):
    """What the callback needs from a segment source.

    ``None`` from :meth:`start`, :meth:`report` or :meth:`poll` means "no segment for now": the callback then
    trains at its fallback LR and calls :meth:`poll` until a segment arrives (or :attr:`detached` turns true).
    """

    @property
    def detached(self) -> bool:
        """True once the source will never hand out another segment (the job is gone)."""
        ...

    def start(self) -> WireSegment | None:
        """Return the open segment to run first."""
        ...

    def report(
        self,
        segment: WireSegment,
        losses: Sequence[float | None],
        val_losses: Sequence[float | None] | None,
        offline: Sequence[OfflinePiece] | None = None,
    ) -> WireSegment | None:
        """Report the losses of ``segment`` (or the offline steps run instead of it) and return the next segment."""
        ...

    def poll(self) -> WireSegment | None:
        """Retry whatever is pending when due; return the next segment once it arrived."""
        ...

    def keepalive(self, segment: WireSegment) -> int | None:
        """Renew the lease of a long segment when due; return its new lease epoch when it changed."""
        ...

    def flush(self) -> bool:
        """Deliver a buffered report at the end of training, within a bounded time; tell whether none is left."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Return what it takes to continue the same job after a restart (JSON-safe)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the job of :meth:`state_dict`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def wire(segment: Segment, job_id: str = LOCAL_JOB_ID) -> WireSegment:
    """Convert a ``lrtune.tuner.Segment`` to the wire model."""
    return WireSegment.of(segment, job_id)


class LocalSource:
    """Segments from a ``lrtune.tuner.Tuner`` running in this process.

    Args:
        config: The job's config.

    Raises:
        ImportError: The tuner's dependencies (botorch; the ``[tuner]`` extra) are not installed.
    """

    detached = False

    def __init__(self, config: JobConfig) -> None:
        try:
            from lrtune.tuner import Tuner
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                "server_url=None runs the tuner in this process, which needs the [tuner] extra "
                f"(pip install 'lrtune[tuner]'): {exc}"
            ) from exc
        self.tuner: Tuner = Tuner(config)

    def start(self) -> WireSegment:
        """Return the tuner's open segment."""
        return wire(self.tuner.next_segment())

    def report(
        self,
        segment: WireSegment,
        losses: Sequence[float | None],
        val_losses: Sequence[float | None] | None,
        offline: Sequence[OfflinePiece] | None = None,
    ) -> WireSegment:
        """Hand the losses to the tuner; return its next segment."""
        val = None if val_losses is None else list(val_losses)
        return wire(self.tuner.report(segment.segment_id, list(losses), val, offline))

    def poll(self) -> None:
        """Nothing is ever pending in process."""
        return None

    def keepalive(self, segment: WireSegment) -> None:
        """No leases in process."""
        return None

    def flush(self) -> bool:
        """Nothing is ever buffered in process."""
        return True

    def state_dict(self) -> dict[str, Any]:
        """Return the tuner's dump."""
        return {"kind": "local", "tuner": self.tuner.dump()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the tuner with the dumped one.

        Raises:
            ValueError: ``state`` is not a local source's state.
        """
        from lrtune.tuner import Tuner

        if state.get("kind") != "local":
            raise ValueError(f"cannot resume an in-process tuner from a {state.get('kind')!r} source's state")
        self.tuner = Tuner.recover(state["tuner"])

    def close(self) -> None:
        """Nothing to release."""
