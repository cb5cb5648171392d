"""The LR the callback trains at while it has no segment (service unreachable, or the job gone).

* ``"hold"`` (default): the last good LR, i.e. the LR the last non-candidate segment ended at (a candidate's
  LR is an experiment, not a choice), or the geometric middle of the range before any segment arrived;
* ``"cosine"``: a cosine from that LR down to ``min_lr`` over what is left of the step budget;
* a callable ``lr = f(step)`` of the 0-based global step: the user's own schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias

from lrtune.tuner.segment import Piece

FallbackSpec: TypeAlias = Literal["hold", "cosine"] | Callable[[int], float]


def check_fallback(spec: object) -> FallbackSpec:
    """Validate a fallback spec.

    Raises:
        ValueError: An unknown name.
        TypeError: Neither a name nor a callable.
    """
    if isinstance(spec, str):
        if spec not in ("hold", "cosine"):
            raise ValueError(f"fallback must be 'hold', 'cosine' or a callable step -> lr, got {spec!r}")
        return spec  # type: ignore[return-value]
    if callable(spec):
        return spec
    raise TypeError(f"fallback must be 'hold', 'cosine' or a callable step -> lr, got {type(spec).__name__}")


def fallback_piece(
    spec: FallbackSpec, step: int, anchor_lr: float, anchor_step: int, min_lr: float, total_steps: int
) -> Piece:
    """Return the piece of the fallback schedule that global step ``step`` runs on.

    A callable's LR is a one-step constant piece; ``hold`` and ``cosine`` are one piece from ``anchor_step`` to
    the end of the budget.

    Args:
        spec: The fallback (see the module docstring).
        step: 0-based global step about to run.
        anchor_lr: The last good LR.
        anchor_step: Global step at which the fallback started (the cosine starts there).
        min_lr: Lower end of the LR range (where the cosine ends).
        total_steps: Step budget (where the cosine ends).
    """
    if callable(spec):
        lr = float(spec(step))
        return Piece(step, 1, "constant", lr, lr)
    steps = max(total_steps - anchor_step, 1)
    if spec == "hold":
        return Piece(anchor_step, steps, "constant", anchor_lr, anchor_lr)
    return Piece(anchor_step, steps, "cosine", anchor_lr, min_lr)
