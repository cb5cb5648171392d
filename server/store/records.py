"""Job records: what the service keeps per job, and their JSON encoding.

A record is split in two JSON documents so that listings never decode tuner state:

* the *head* (:class:`JobHead`): id, name, status, times, config, the tuner's summary, the lease, the version;
* the *tuner state*: ``lrtune.tuner.Tuner.dump()`` (observations only, never fitted models).

Both documents carry ``"schema": RECORD_SCHEMA``; a record written by an unknown schema is refused rather
than misread.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from lrtune.client.protocol import JOB_STATUSES as JOB_STATUSES  # re-exported: the store's statuses are the wire's
from lrtune.client.protocol import JobStatus as JobStatus

RECORD_SCHEMA = 1


class RecordDecodeError(ValueError):
    """A stored document is not a record this code can read (unknown schema, missing fields)."""


@dataclass
class Lease:
    """Who may run the open segment, and until when.

    Attributes:
        worker_id: The worker holding the lease.
        epoch: Lease generation; it grows by one whenever the lease is granted anew (first poll, after lapse).
        expires_at: Unix time in seconds after which another worker may take the segment over.
    """

    worker_id: str
    epoch: int
    expires_at: float


@dataclass
class JobHead:
    """The small part of a job record: everything a listing shows.

    Attributes:
        job_id: Job identifier (16 lowercase hex characters).
        name: Free-form label, or None.
        token_sha256: Hex SHA-256 of the job token (the token itself is never stored).
        status: One of :data:`lrtune.client.protocol.JOB_STATUSES`.
        created_at: Unix time in seconds.
        updated_at: Unix time in seconds of the last write.
        config: The job's tuner config (``TunerConfig.to_dict()``).
        summary: ``Tuner.summary()`` as of the last write.
        open_segment: The open segment (``Segment.to_dict()``), so that polls never decode tuner state.
        lease: Lease on the open segment, or None before the first poll.
        last_epoch: Highest lease epoch ever granted (kept when the lease is cleared).
        version: Number of writes so far (1 after creation).
        expires_at: Unix time in seconds after which the store drops the job (set when it is deleted or done,
            from the retention settings), or None to keep it.
    """

    job_id: str
    name: str | None
    token_sha256: str
    status: JobStatus
    created_at: float
    updated_at: float
    config: dict[str, Any]
    summary: dict[str, Any]
    open_segment: dict[str, Any] = field(default_factory=dict)
    lease: Lease | None = None
    last_epoch: int = 0
    version: int = 1
    expires_at: float | None = None


@dataclass
class JobRecord:
    """A whole job: its head and its tuner state.

    Attributes:
        head: See :class:`JobHead`.
        tuner: ``lrtune.tuner.Tuner.dump()`` output.
    """

    head: JobHead
    tuner: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.head.job_id


def _dumps(obj: Any) -> bytes:
    # allow_nan=False: a non-finite float must never reach storage, where other readers would choke on it.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _sanitize(obj: Any) -> Any:
    """Replace non-finite floats by None, recursively (tuner state marks diverged points with them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_sanitize(v) for v in obj]
    return obj


def encode_head(head: JobHead) -> bytes:
    """Encode a head as JSON bytes."""
    doc = dataclasses.asdict(head)
    doc["schema"] = RECORD_SCHEMA
    return _dumps(_sanitize(doc))


def decode_head(raw: bytes | str) -> JobHead:
    """Decode :func:`encode_head` output.

    Raises:
        RecordDecodeError: Not JSON, another schema, or missing fields.
    """
    doc = _load(raw)
    try:
        lease = doc.pop("lease")
        return JobHead(**doc, lease=None if lease is None else Lease(**lease))
    except (KeyError, TypeError) as exc:
        raise RecordDecodeError(f"malformed job head: {exc}") from exc


def encode_tuner(state: dict[str, Any]) -> bytes:
    """Encode tuner state as JSON bytes, wrapped with the record schema."""
    try:
        return _dumps({"schema": RECORD_SCHEMA, "state": state})
    except ValueError:
        return _dumps({"schema": RECORD_SCHEMA, "state": _sanitize(state)})


def decode_tuner(raw: bytes | str) -> dict[str, Any]:
    """Decode :func:`encode_tuner` output.

    Raises:
        RecordDecodeError: Not JSON, another schema, or no state.
    """
    doc = _load(raw)
    state = doc.get("state")
    if not isinstance(state, dict):
        raise RecordDecodeError("malformed tuner document: no state")
    return state


def _load(raw: bytes | str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise RecordDecodeError(f"stored document is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != RECORD_SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise RecordDecodeError(f"stored document has schema {got!r}, expected {RECORD_SCHEMA}")
    del doc["schema"]
    return doc
