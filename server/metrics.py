"""Prometheus metrics, on a registry of the app's own (several apps can live in one process, as in tests)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lrtune.server")

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_SUGGEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServiceMetrics:
    """The service's metrics.

    Args:
        count_running: Returns the number of running jobs (read at scrape time, from the store, so that every
            process of a deployment reports the same figure).
    """

    def __init__(self, count_running: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "lrtune_request_duration_seconds",
            "HTTP request latency in seconds, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.suggest_seconds = Histogram(
            "lrtune_bo_suggest_seconds",
            "Seconds one Bayesian-optimization suggestion (GP fit and acquisition) took.",
            buckets=_SUGGEST_BUCKETS_S,
            registry=r,
        )
        self.active_jobs = Gauge("lrtune_active_jobs", "Jobs with status running.", registry=r)
        self.lease_expiries = Counter(
            "lrtune_lease_expiries", "Leases that lapsed and were taken over by another poll.", registry=r
        )
        self.stale_reports = Counter(
            "lrtune_stale_reports_refused", "Reports refused because their lease was not current.", registry=r
        )
        self.reports = Counter("lrtune_reports", "Reports applied (or repeated), by outcome.", ["kind"], registry=r)

        def running() -> float:
            try:
                return float(count_running())
            except Exception as exc:  # a scrape must not fail because the store is down
                log.warning("active jobs gauge: %s", exc)
                return float("nan")

        self.active_jobs.set_function(running)

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Times every HTTP request and records it under its route template (``/v1/jobs/{job_id}``).

    Each response also says how long the service took, from receiving the request to starting the answer, in
    a ``Server-Timing: app;dur=<ms>`` header.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                took_ms = 1000 * (time.perf_counter() - started)
                headers = [*message.get("headers", []), (b"server-timing", f"app;dur={took_ms:.2f}".encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(scope.get("method", ""), template, str(status[0])).observe(
                time.perf_counter() - started
            )
