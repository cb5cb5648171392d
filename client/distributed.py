"""Distributed data parallel: one rank talks to the service, every rank runs the same segments.

The callback calls these collectives at points every rank reaches at the same step, whatever the service
does, so no rank can wait for another forever:

* :meth:`Comm.broadcast` (``torch.distributed.broadcast_object_list`` from rank 0 of the group) at
  construction, at every segment end, and every ``offline_sync_steps`` steps while no segment is open;
* :meth:`Comm.mean` (one ``all_reduce``) at every segment end, over that segment's losses and validation
  losses together, and at the divergence guard's checks in candidate segments (every few steps).

Rank 0 of the group is the only one with a segment source. If it raises while talking to the service, it
broadcasts the error, and every rank raises it. After a last broadcast (the error, or the segment that says the
budget is spent) every rank waits at a barrier, so that no rank leaves (and tears down the process group)
while another is still reading it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class Comm:
    """The collectives the callback uses, over one process group (world size 1: no communication).

    Args:
        group: The process group, or None for the default group.
        enabled: Whether to communicate at all.
    """

    def __init__(self, group: Any = None, enabled: bool = False) -> None:
        self.group = group
        self.enabled = enabled
        self.rank = dist.get_rank(group) if enabled else 0
        self.world_size = dist.get_world_size(group) if enabled else 1
        self.broadcasts = 0  # collectives issued, for tests
        self.reductions = 0

    @property
    def is_leader(self) -> bool:
        """True on the rank that talks to the segment source (rank 0 of the group)."""
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Return rank 0's ``obj`` on every rank (pickled; keep it small)."""
        if not self.enabled or self.world_size == 1:
            return obj
        box = [obj if self.is_leader else None]
        dist.broadcast_object_list(box, group=self.group, group_src=0)
        self.broadcasts += 1
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank got here (after a last broadcast, so no rank exits before the others read it)."""
        if self.enabled and self.world_size > 1:
            dist.barrier(group=self.group)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average ``values`` element-wise over the ranks (NaN on any rank gives NaN)."""
        if not self.enabled or self.world_size == 1:
            return values
        out = values.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        self.reductions += 1
        return out / self.world_size


def resolve_comm(process_group: Any = None, distributed: bool | None = None) -> Comm:
    """Build the :class:`Comm` for the callback.

    Args:
        process_group: Group to use (None: the default group).
        distributed: True to require ``torch.distributed``, False to ignore it, None to use it when initialized.

    Raises:
        RuntimeError: ``distributed=True`` but no process group is initialized.
    """
    ready = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = ready
    if distributed and not ready:
        raise RuntimeError("distributed=True, but torch.distributed is not initialized (call init_process_group)")
    return Comm(process_group, enabled=bool(distributed))
