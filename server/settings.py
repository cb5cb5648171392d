"""Service settings, read from ``LRTUNE_*`` environment variables (or passed in by tests and the CLI)."""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "LRTUNE_"
#: The ``Host`` values allowed by default: this machine's names for itself.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class Settings(BaseSettings):
    """Everything the service can be configured with.

    Attributes:
        host: Interface to bind (``lrtune serve``).
        port: TCP port to bind.
        workers: Uvicorn worker processes; more than one needs ``redis_url``.
        redis_url: Redis URL (``redis://host:6379/0``); empty means the embedded in-memory store.
        redis_prefix: Prefix of every Redis key, so deployments can share a database.
        admin_key: Key that lists all jobs and opens every job; None leaves listing open (loopback only).
        lease_ttl_s: Seconds a lease on a segment holds unless a poll or report renews it.
        max_body_bytes: Largest request body accepted, in bytes (larger ones get 413).
        max_list_limit: Most jobs one listing page returns.
        tuner_threads: Most tuner computations (GP fits) running at once in one process.
        torch_threads: Torch intra-op threads of the process. The GPs are tiny: one thread is about five times
            faster than several, which only contend with each other and with the event loop.
        log_level: Uvicorn log level.
        max_jobs_per_client: Most running jobs one client (network address) may have at once; creating one more
            gets 429 ``too_many_jobs``. 0 means no limit. Requests with the admin key are exempt.
        jobs_retry_after_s: ``Retry-After`` of a ``too_many_jobs`` answer, in seconds.
        rate_limit_per_s: Sustained requests per second one client (network address) may send, counted over
            every process sharing ``redis_url`` (in process memory with the embedded store); more get 429
            ``rate_limited``. 0 means no limit. Health, readiness and metrics probes and requests with the admin
            key are exempt. See :class:`lrtune.server.quotas.RateLimiter` for the window.
        rate_limit_burst: Requests a client may send at once (the most in any window of
            ``rate_limit_burst / rate_limit_per_s`` seconds); 0 means ten seconds' worth of ``rate_limit_per_s``
            (at least 1).
        allowed_hosts: Values of the ``Host`` header the service answers (without the port); any other gets 400
            ``host_not_allowed``, so that a web page cannot reach a loopback service through DNS rebinding.
            ``*.example.com`` matches subdomains, ``*`` anything. The host ``lrtune serve`` binds is added when it
            is a specific address. From the environment: comma-separated, or a JSON list.
        stall_after_leases: A running job whose worker has neither polled nor reported for this many lease TTLs
            (``lease_ttl_s``) is marked ``stalled``: it frees its quota slot, and turns ``running`` again when a
            worker polls or reports.
        deleted_retention_s: Seconds a deleted job stays readable before the store drops it; 0 keeps it forever.
        done_retention_s: Seconds a finished job stays stored after its last report; 0 keeps it forever.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    redis_url: str | None = None
    redis_prefix: str = Field(default="lrtune", min_length=1, pattern=r"^\S+$")
    admin_key: SecretStr | None = None
    lease_ttl_s: float = Field(default=120.0, gt=0)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_list_limit: int = Field(default=500, ge=1)
    tuner_threads: int = Field(default=4, ge=1)
    torch_threads: int = Field(default=1, ge=1)
    log_level: str = "info"
    max_jobs_per_client: int = Field(default=100, ge=0)
    jobs_retry_after_s: int = Field(default=60, ge=1, le=86_400)
    rate_limit_per_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    rate_limit_burst: int = Field(default=0, ge=0)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(LOCAL_HOSTS))
    stall_after_leases: float = Field(default=3.0, gt=0, allow_inf_nan=False)
    deleted_retention_s: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    done_retention_s: float = Field(default=7 * 86_400.0, ge=0, allow_inf_nan=False)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        """Accept ``a,b,c`` or a JSON list (environment variables), or a list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [h.strip() for h in text.split(",") if h.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        hosts = [normalize_host(h) for h in value]
        if not hosts or any(not h or any(c.isspace() or c in "/@" for c in h) for h in hosts):
            raise ValueError(f"allowed_hosts must be non-empty host names, addresses or patterns, got {value!r}")
        return hosts

    @property
    def stall_after_s(self) -> float:
        """Seconds without a poll or report after which a running job is marked ``stalled``."""
        return self.stall_after_leases * self.lease_ttl_s

    def host_patterns(self) -> list[str]:
        """The allowed ``Host`` values, with the bound address when it is a specific one."""
        hosts = list(self.allowed_hosts)
        bound = normalize_host(self.host)
        if bound not in ("0.0.0.0", "::", "") and bound not in hosts:
            hosts.append(bound)
        return hosts

    @property
    def admin_key_value(self) -> str | None:
        """The admin key as plain text, or None when unset or empty."""
        if self.admin_key is None:
            return None
        return self.admin_key.get_secret_value() or None


def normalize_host(host: str) -> str:
    """A host (or ``Host`` header value) lower-cased, without the port and the IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:  # name:port or v4:port (a bare IPv6 address has several colons)
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_allowed(header: str, patterns: list[str]) -> bool:
    """Tell whether a ``Host`` header value matches one of ``patterns`` (see ``Settings.allowed_hosts``)."""
    host = normalize_host(header)
    if not host:
        return False
    for pattern in patterns:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def is_loopback(host: str) -> bool:
    """Tell whether binding ``host`` exposes the service only to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def env_names() -> set[str]:
    """Every environment variable the settings read (``LRTUNE_HOST``, ...)."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}
