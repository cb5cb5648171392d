"""lrtune's algorithm: AutoLRS-style LR search as a pure, persistable library.

No I/O, no global state: a :class:`Tuner` hands out :class:`Segment` objects, takes their losses, and dumps
its whole state to a JSON-safe dict that :meth:`Tuner.recover` turns back into an identical tuner.
"""

from tuner.config import Settings, TunerConfig, resolve
from tuner.errors import (
    ConflictingReportError,
    InvalidConfigError,
    InvalidReportError,
    InvalidStateError,
    TunerError,
    UnknownSegmentError,
)
from tuner.forecast import Forecast, forecast_loss
from tuner.schedules import export_lr
from tuner.segment import Segment
from tuner.stages import SCHEMA_VERSION, Tuner, sweep_suggestion

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
