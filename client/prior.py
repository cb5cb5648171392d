"""Start a job from a previous job's result, the way a study reuses its best parameters.

``config=prior_config(schedule)`` gives a new job the previous job's winning LR as ``prior_lr``: its first search
is centred there (no LR range sweep), and the plan preset sets its stability cap from it. The schedule is what
``GET /v1/jobs/{job_id}/schedule`` answers (``lrtune.client.ServiceClient.schedule``, ``lrtune jobs show --json``), or
an in-process job's ``cb.tuner.schedule()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def prior_config(schedule: Mapping[str, Any]) -> dict[str, float]:
    """Config fields that start a new job from a finished (or running) job: ``{"prior_lr": its winner LR}``.

    Args:
        schedule: The previous job's schedule.

    Raises:
        ValueError: The job has no winning LR yet (no search has finished).
    """
    lr = schedule.get("winner_lr") if isinstance(schedule, Mapping) else None
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ValueError("that job has no winning LR yet (no search of it has finished): nothing to start from")
    return {"prior_lr": float(lr)}
