"""Prometheus metrics, in one of two modes.

* **One process** (the default): a registry of the app's own (several apps can live in one process, as in
  tests), with the standard ``process_*`` metrics of this process.
* **Several worker processes** (``lrtune serve --workers N`` with N > 1): the launcher sets
  ``PROMETHEUS_MULTIPROC_DIR`` to an emptied folder before the workers start (see :mod:`lrtune.server.launch`); every
  worker writes its counters and histograms to files there, and a scrape of any worker reads them all, so that
  ``/metrics`` answers the sum over the workers whichever worker a scrape reaches, and counters never go down
  between scrapes. The ``process_*`` metrics then come once per live worker, labelled by ``pid``.

Either way ``lrtune_active_jobs`` is read from the store at scrape time (every process reports the same
figure), and no ``_created`` series are exported.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lrtune.server.launch import METRICS_FILE, MULTIPROC_DIR_ENV

log = logging.getLogger("lrtune.server")

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_SUGGEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Files of the multiprocess mode are named ``<kind>_<pid>.db``.

# A ``_created`` sample per series doubles the exposition for a figure nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]


def multiproc_dir() -> str | None:
    """The multiprocess folder this process writes its metrics to, or None in one-process mode.

    The Prometheus client chooses its mode once, when it is first imported: a process that imported it before
    the variable was set stays in one-process mode.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get(MULTIPROC_DIR_ENV) or None


class ActiveJobs(Collector):
    """``lrtune_active_jobs``, read from the store at scrape time.

    Args:
        count_running: Returns the number of running jobs.
    """

    def __init__(self, count_running: Callable[[], int]) -> None:
        self.count_running = count_running

    def collect(self) -> Iterable[Metric]:
        """Yield the gauge (NaN when the store cannot be read: a scrape must not fail because of it)."""
        try:
            value = float(self.count_running())
        except Exception as exc:
            log.warning("active jobs gauge: %s", exc)
            value = float("nan")
        yield GaugeMetricFamily("lrtune_active_jobs", "Jobs with status running.", value=value)


class WorkerProcesses(Collector):
    """The ``process_*`` metrics of every live worker that writes to a multiprocess folder, labelled by ``pid``.

    Args:
        path: The multiprocess folder (the workers are the pids in its file names).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def pids(self) -> list[int]:
        """The pids of the live processes that wrote metrics to the folder."""
        found = {int(m.group(1)) for f in self.path.iterdir() if (m := METRICS_FILE.match(f.name))}
        return sorted(pid for pid in found if psutil.pid_exists(pid))

    def collect(self) -> Iterable[Metric]:
        """Yield CPU time, memory, open files and start time per worker."""
        cpu = CounterMetricFamily("process_cpu_seconds", "User and system CPU seconds.", labels=["pid"])
        rss = GaugeMetricFamily("process_resident_memory_bytes", "Resident memory in bytes.", labels=["pid"])
        vms = GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory in bytes.", labels=["pid"])
        fds = GaugeMetricFamily("process_open_fds", "Open file descriptors.", labels=["pid"])
        start = GaugeMetricFamily("process_start_time_seconds", "Start time, Unix seconds.", labels=["pid"])
        for pid in self.pids():
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    times, memory = proc.cpu_times(), proc.memory_info()
                    open_fds, created = proc.num_fds(), proc.create_time()
            except psutil.Error:
                continue  # it exited in the meantime
            label = [str(pid)]
            cpu.add_metric(label, times.user + times.system)
            rss.add_metric(label, memory.rss)
            vms.add_metric(label, memory.vms)
            fds.add_metric(label, open_fds)
            start.add_metric(label, created)
        yield from (cpu, rss, vms, fds, start)


class ServiceMetrics:
    """The service's metrics.

    Args:
        count_running: Returns the number of running jobs (read at scrape time, from the store, so that every
            process of a deployment reports the same figure).
        multiproc: The multiprocess folder; None for one-process mode (default: :func:`multiproc_dir`).
    """

    def __init__(self, count_running: Callable[[], int], multiproc: str | None = None) -> None:
        self.multiproc = multiproc if multiproc is not None else multiproc_dir()
        # In multiprocess mode the metrics write to the folder and a registry is built per scrape.
        own: CollectorRegistry | None = None if self.multiproc else CollectorRegistry(auto_describe=True)
        self._active = ActiveJobs(count_running)
        self.request_seconds = Histogram(
            "lrtune_request_duration_seconds",
            "HTTP request latency in seconds, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS_S,
            registry=own,
        )
        self.suggest_seconds = Histogram(
            "lrtune_bo_suggest_seconds",
            "Seconds one Bayesian-optimization suggestion (GP fit and acquisition) took.",
            buckets=_SUGGEST_BUCKETS_S,
            registry=own,
        )
        self.lease_expiries = Counter(
            "lrtune_lease_expiries", "Leases that lapsed and were taken over by another poll.", registry=own
        )
        self.stale_reports = Counter(
            "lrtune_stale_reports_refused", "Reports refused because their lease was not current.", registry=own
        )
        self.reports = Counter("lrtune_reports", "Reports applied (or repeated), by outcome.", ["kind"], registry=own)
        self._own = own
        if own is not None:
            own.register(self._active)
            ProcessCollector(registry=own)

    def registry(self) -> CollectorRegistry:
        """The registry a scrape reads: the app's own, or one over every worker's files (multiprocess mode)."""
        if self._own is not None:
            return self._own
        assert self.multiproc is not None
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiproc)  # type: ignore[no-untyped-call]
        registry.register(self._active)
        registry.register(WorkerProcesses(self.multiproc))
        return registry

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry())


def route_label(scope: Scope, arrived: Scope) -> str:
    """The route template of a request that has been routed, for a bounded label set.

    API routes give their template (``/v1/jobs/{job_id}``); mounted apps (the dashboard's static files) give
    their mount path and ``{path}`` (``/dashboard/static/{path}``), never the file; plain routes (``/docs``)
    their path; anything that matched no route ``unmatched``.

    Args:
        scope: The request's scope after routing (routing adds the matched API route to it).
        arrived: A copy of the scope as it arrived (routing into a mount rewrites the paths of ``scope``).
    """
    template = getattr(scope.get("route"), "path", None)
    if template:
        return str(template)
    for candidate in getattr(getattr(arrived.get("app"), "router", None), "routes", []):
        match, _ = candidate.matches(arrived)
        if match == Match.FULL:
            path = str(getattr(candidate, "path", ""))
            if isinstance(candidate, Mount):
                return f"{path}/{{path}}"
            return path or "unmatched"
    return "unmatched"


class LatencyMiddleware:
    """Times every HTTP request and records it under its route (:func:`route_label`).

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
        arrived = dict(scope)
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
            route = route_label(scope, arrived)
            self.metrics.request_seconds.labels(scope.get("method", ""), route, str(status[0])).observe(
                time.perf_counter() - started
            )
