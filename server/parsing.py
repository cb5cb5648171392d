"""Parsing report bodies without holding up the event loop: small ones in the worker thread, large ones elsewhere.

A report is parsed in a worker thread, never on the event loop; but parsing JSON is one long call that holds the
interpreter, and while it runs the event loop cannot answer anything (a report of 10^6 losses, 7.8 MB, held it for
over 100 ms). Bodies of :data:`LARGE_BODY_BYTES` or more are therefore parsed and validated in a helper process
(started on the first such body, one per service process): the worker thread only waits for it, and gets the
losses back as one float64 array (``NaN`` for ``null``), which costs a copy, not a parse.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from lrtune.client.protocol import WireReport

#: Bodies at least this large (in bytes; about 50,000 losses) are parsed in the helper process.
LARGE_BODY_BYTES = 1 << 20

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def parse_report(raw: bytes) -> WireReport:
    """Parse and validate a report body (in a worker thread; a large one in the helper process).

    Raises:
        RequestValidationError: Not JSON, or not a report (answered 422 ``invalid_request``).
    """
    if len(raw) < LARGE_BODY_BYTES:
        try:
            return WireReport.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_context=True)) from exc
    status, payload = _helper().submit(parse_in_helper, raw).result()
    if status == "error":
        raise RequestValidationError(payload)
    return WireReport.model_construct(**payload)


def parse_in_helper(raw: bytes) -> tuple[str, Any]:
    """What the helper process does: validate the body; return its fields, losses as arrays, or the errors."""
    try:
        report = WireReport.model_validate_json(raw)
    except ValidationError as exc:
        return "error", exc.errors(include_url=False, include_context=False)
    fields = report.model_dump(exclude={"losses", "val_losses", "offline"})
    fields["losses"] = _array(report.losses)
    fields["val_losses"] = None if report.val_losses is None else _array(report.val_losses)
    fields["offline"] = report.offline
    return "ok", fields


def _array(values: list[float | None]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array(values, dtype=np.float64)  # None -> NaN


def _helper() -> ProcessPoolExecutor:
    """The helper process's pool (one process), started on first use and shut down at exit."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            atexit.register(_pool.shutdown, cancel_futures=True)
        return _pool
