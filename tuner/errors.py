"""Errors raised by the tuner.

Every error derives from :class:`TunerError`; each subclass also inherits the builtin that fits, so callers
that do not know this package can still catch ``ValueError`` or ``LookupError``.
"""

from __future__ import annotations


class TunerError(Exception):
    """Root of every error this package raises on purpose."""

    code = "tuner_error"


class InvalidConfigError(TunerError, ValueError):
    """The job configuration is invalid (bounds, budget, preset, ...)."""

    code = "invalid_config"


class InvalidReportError(TunerError, ValueError):
    """A report does not fit the open segment (wrong length, missing validation losses, ...)."""

    code = "invalid_report"


class UnknownSegmentError(InvalidReportError, LookupError):
    """A report names a segment that is not the open one and was never the last one reported."""

    code = "unknown_segment"


class ConflictingReportError(InvalidReportError):
    """A segment that was already reported is reported again with different content."""

    code = "conflicting_report"


class InvalidStateError(TunerError, ValueError):
    """A dumped state cannot be recovered (unknown schema version, missing fields)."""

    code = "invalid_state"
