"""The LR range sweep: the LR rises log-linearly over the whole range from a snapshot restored afterwards.

Its losses suggest where the search starts (:func:`sweep_suggestion`) and where training turns unstable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lrtune.tuner.config import SWEEP_DIVISOR


def sweep_suggestion(losses: Sequence[float], lrs: Sequence[float], divisor: float = SWEEP_DIVISOR) -> float:
    """Suggest a working LR from an LR range sweep: the LR at the lowest smoothed loss divided by ``divisor``.

    The losses are smoothed with a bias-corrected exponential moving average (weight 0.1 per step); the sweep is
    read only up to its first non-finite loss or its first smoothed loss above four times the lowest so far.

    Args:
        losses: Shape (n,). Loss after each sweep step.
        lrs: Shape (n,). LR of each sweep step, rising.
        divisor: How far below the bottom the suggestion sits (a tenth by default).

    Returns:
        The suggested LR (the first LR when no loss is finite).
    """
    best, best_lr, avg = math.inf, lrs[0], 0.0
    for i, (loss, lr) in enumerate(zip(losses, lrs, strict=False)):
        if not math.isfinite(loss):
            break
        avg = 0.9 * avg + 0.1 * loss
        value = avg / (1.0 - 0.9 ** (i + 1))
        if value < best:
            best, best_lr = value, lr
        elif value > 4.0 * best:
            break
    return best_lr / divisor
