"""lrtune's algorithm: AutoLRS-style LR search as a pure, persistable library.

No I/O, no global state: a :class:`Tuner` hands out :class:`Segment` objects, takes their losses, and dumps
its whole state to a JSON-safe dict that :meth:`Tuner.recover` turns back into an identical tuner.

The light modules (segments, config, errors, standard schedules) are imported here at once; the names that need
torch, botorch or scipy (:class:`Tuner`, :data:`SCHEMA_VERSION`, :func:`sweep_suggestion`, :func:`forecast_loss`,
:class:`Forecast`) are imported on first access, so ``import lrtune.tuner.segment`` or ``import lrtune.tuner.config``
stays cheap for the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lrtune.tuner.config import Settings, TunerConfig, resolve
from lrtune.tuner.errors import (
    ConflictingReportError,
    InvalidConfigError,
    InvalidReportError,
    InvalidStateError,
    TunerError,
    UnknownSegmentError,
)
from lrtune.tuner.schedules import export_lr
from lrtune.tuner.segment import Segment

if TYPE_CHECKING:
    from lrtune.tuner.forecast import Forecast, forecast_loss
    from lrtune.tuner.stages import SCHEMA_VERSION, Tuner, sweep_suggestion

#: Names imported on first access, and the module each lives in.
_LAZY = {
    "Forecast": "lrtune.tuner.forecast",
    "forecast_loss": "lrtune.tuner.forecast",
    "SCHEMA_VERSION": "lrtune.tuner.stages",
    "Tuner": "lrtune.tuner.stages",
    "sweep_suggestion": "lrtune.tuner.stages",
}

__all__ = [
    "SCHEMA_VERSION",
    "ConflictingReportError",
    "Forecast",
    "InvalidConfigError",
    "InvalidReportError",
    "InvalidStateError",
    "Segment",
    "Settings",
    "Tuner",
    "TunerConfig",
    "TunerError",
    "UnknownSegmentError",
    "export_lr",
    "forecast_loss",
    "resolve",
    "sweep_suggestion",
]


def __getattr__(name: str) -> Any:
    """Import a heavy public name on first access (PEP 562) and keep it in the module's namespace."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
