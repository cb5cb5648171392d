"""What a run did, in one paragraph: logged by the callback when training ends.

The paragraph is logged on the ``lrtune.client.run`` logger at WARNING level, so that it shows with Python's
default logging setup (as does the line with the job's dashboard URL when a job is created); silence both with
``logging.getLogger("lrtune.client.run").setLevel(logging.ERROR)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lrtune.client.protocol import WireSegment

#: The logger of the lines every run shows: the job's dashboard URL and the summary at the end.
run_log = logging.getLogger("lrtune.client.run")


@dataclass
class RunStats:
    """Counts the callback keeps as it runs (plain Python numbers: no device sync).

    Attributes:
        explore_steps: Steps run in candidate segments (LR range sweep, candidates, probes).
        losses: Losses reported (segments and offline steps).
        bad_losses: Of those, the non-finite ones.
        lrs: LR of the first and the last step of each non-candidate segment that ran, in order.
    """

    explore_steps: int = 0
    losses: int = 0
    bad_losses: int = 0
    lrs: list[float] = field(default_factory=list)

    def add_losses(self, losses: list[float | None]) -> None:
        """Count reported losses (``None``: non-finite)."""
        self.losses += len(losses)
        self.bad_losses += sum(v is None for v in losses)

    def add(self, seg: WireSegment, losses: list[float | None]) -> None:
        """Count a segment that ran with these (rank-averaged) losses."""
        n = len(losses)
        self.add_losses(losses)
        if seg.phase == "explore":
            self.explore_steps += n
        elif n:
            self.lrs += [seg.lr_at(0), seg.lr_at(n - 1)]


def summary(
    *,
    job: str,
    steps: int,
    total_steps: int,
    stats: RunStats,
    outages: int,
    offline_steps: int,
    offline_reported: int,
    final_lr: float,
) -> str:
    """The paragraph: steps against the budget, the exploration share, the LRs trained at, outages, bad losses.

    Args:
        job: The job's id (or ``"local"``).
        steps: Optimizer steps run.
        total_steps: The step budget.
        stats: What the callback counted.
        outages: Times the service stopped answering.
        offline_steps: Steps run while no segment was open.
        offline_reported: Of those, the steps the job was told about.
        final_lr: The LR of the last step.
    """
    share = stats.explore_steps / max(steps, 1)
    parts = [f"lrtune: job {job}: {steps:,} of {total_steps:,} steps"]
    parts.append(f"{share:.0%} of them exploring" if stats.explore_steps else "no exploration")
    if stats.lrs:
        parts.append(f"trained at LRs {min(stats.lrs):.3g} to {max(stats.lrs):.3g}, the last step at {final_lr:.3g}")
    text = ", ".join(parts) + "."
    if outages:
        told = "all reported to the job" if offline_reported >= offline_steps else f"{offline_reported:,} reported"
        text += (
            f" The service was unreachable {outages} time{'s' if outages > 1 else ''}: {offline_steps:,} steps "
            f"followed the planned continuation or the fallback ({told})."
        )
    elif offline_steps:
        text += f" {offline_steps:,} steps ran without a segment."
    else:
        text += " The service answered throughout."
    if stats.losses and stats.bad_losses == stats.losses:
        text += " Every loss was NaN or infinite: check the model, the data and the LR range."
    elif stats.bad_losses:
        text += f" {stats.bad_losses:,} of {stats.losses:,} losses were NaN or infinite."
    return text
