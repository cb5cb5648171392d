"""``lrtune demo``: tune a small model against the service, over HTTP, and print the schedule it found.

The service runs in the background on the embedded store.
Without torch's callback the training loop talks to the service through the client package's typed HTTP client
(:class:`lrtune.client.http.ServiceClient`) and the wire models of :mod:`lrtune.client.protocol`: create a job, poll
once, then run each segment and report it, the report's answer being the next segment.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import torch

from lrtune.client.http import ServiceClient
from lrtune.client.protocol import JobConfig, WireReport, WireSegment
from lrtune.server.demo_train import Digits, SegmentRunner, train_constant
from lrtune.server.embedded import BackgroundServer

#: The demo job: SGD with momentum on an MLP, searched over three decades of LR.
DEMO_CONFIG = JobConfig(min_lr=1e-3, max_lr=1.0, total_steps=3000, warmup_steps=100, seed=0)

Printer = Callable[[str], None]
Loop = Literal["auto", "callback", "httpx"]


def train_over_http(
    base_url: str, config: JobConfig, runner: SegmentRunner, echo: Printer, worker_id: str = "demo-worker"
) -> tuple[str, str]:
    """Run a whole job against the service at ``base_url``.

    Returns:
        The job id and its token.
    """
    api = ServiceClient(base_url, timeout_s=60.0)
    try:
        created = api.create_job(config, "digits-mlp")
        seg = api.lease(created.job_id, created.token, worker_id)
        started = time.perf_counter()
        while not seg.done:
            losses, vals = runner.run(seg)
            echo(_progress_line(seg, losses, config.total_steps))
            report = WireReport(worker_id=worker_id, lease_epoch=seg.lease_epoch, losses=losses, val_losses=vals)
            seg = api.report(created.job_id, created.token, seg.segment_id, report)
        echo(f"done: {config.total_steps} steps in {time.perf_counter() - started:.1f} s")
        return created.job_id, created.token
    finally:
        api.close()


def train_with_callback(
    base_url: str, config: JobConfig, data: Digits, echo: Printer
) -> tuple[str, str, SegmentRunner]:
    """Run a whole job with the client's ``AutoLRSCallback`` in an ordinary PyTorch loop.

    Returns:
        The job id, its token, and a runner holding the trained model.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from lrtune.client import AutoLRSCallback, ReplayLoader

    runner = SegmentRunner(data, config.seed)
    model, opt, loss_fn = runner.model, runner.opt, runner.loss_fn
    gen = torch.Generator().manual_seed(config.seed)
    batches = ReplayLoader(
        DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=32, shuffle=True, generator=gen)
    )
    explicit = {"min_lr", "max_lr", "total_steps", "preset", "strategy", "seed"}
    cb = AutoLRSCallback(
        model,
        opt,
        server_url=base_url,
        min_lr=config.min_lr,
        max_lr=config.max_lr,
        total_steps=config.total_steps,
        val_fn=lambda: loss_fn(model(data.x_val), data.y_val),
        preset=config.preset,
        strategy=config.strategy,
        seed=config.seed,
        config={k: v for k, v in config.to_dict().items() if k not in explicit},
        job_name="digits-mlp",
        loader=batches,
        worker_id="demo-worker",
    )
    started = time.perf_counter()
    losses: list[float | None] = []
    while not cb.done:
        for xb, yb in batches:
            seg = cb.segment
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            losses.append(value if math.isfinite(value) else None)
            cb.on_train_batch_end(loss)
            if seg is not None and (cb.segment is None or cb.segment.segment_id != seg.segment_id):
                echo(_progress_line(seg, losses, config.total_steps))
                losses = []
            if cb.done:
                break
    cb.on_train_end()
    echo(f"done: {config.total_steps} steps in {time.perf_counter() - started:.1f} s")
    source = cb.source
    job_id, token = getattr(source, "job_id", None), getattr(source, "token", None)
    if not (isinstance(job_id, str) and isinstance(token, str)):
        raise RuntimeError("the callback did not create a job on the service")
    return job_id, token, runner


def _progress_line(seg: WireSegment, losses: list[float | None], total: int) -> str:
    finite = [v for v in losses if v is not None]
    loss = f"{sum(finite[-5:]) / len(finite[-5:]):.4f}" if finite else "nan"
    where = ""
    if seg.stage is not None:
        where = f" stage {seg.stage}" + (f" cand {seg.candidate}" if seg.candidate is not None else "")
    cut = f" (stopped at {len(losses)}: diverged)" if len(losses) < seg.steps else ""
    end = seg.start_step + len(losses)
    return f"  [{end:5d}/{total}] {seg.phase:<8}{where:<16} lr {seg.lr:.2e}  loss {loss}{cut}"


def format_schedule(schedule: dict[str, Any]) -> str:
    """Render a job's schedule (``GET /v1/jobs/{id}/schedule``) as a readable table."""
    lines = []
    sweep = schedule.get("sweep")
    if sweep:
        lines.append(f"LR range sweep: {sweep['steps']} steps (rolled back), suggested lr {_lr(sweep['lr'])}")
    for st in schedule["stages"]:
        lines.append(
            f"stage {st['index']}  from step {st['start_step']}  tau {st['tau']}  candidates of {st['cand_steps']} "
            f"steps  {'warm' if st['warm'] else 'cold'}  winner lr {_lr(st['winner_lr'])}"
        )
        if st["candidates"]:
            lines.append(f"    {'cand':>4}  {'lr':>9}  {'forecast':>9}  {'± std':>8}  {'observed':>9}  {'cooled':>9}  ")
        for c in st["candidates"]:
            mark = "  <- winner" if c["winner"] else ("  diverged" if c["diverged"] else "")
            lines.append(
                f"    {c['index']:>4}  {_lr(c['lr']):>9}  {_num(c['forecast']):>9}  {_num(c['std']):>8}  "
                f"{_num(c['last_loss']):>9}  {_num(c.get('probe_loss')):>9}{mark}"
            )
    lines.append(
        f"exploration: {schedule['explore_steps']} of {schedule['total_steps']} steps "
        f"({100 * schedule['explore_share']:.1f}%), rolled back {100 * schedule['wasted_share']:.1f}%"
    )
    return "\n".join(lines)


def _lr(v: float | None) -> str:
    return "-" if v is None else f"{v:.3e}"


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4f}"


def callback_available() -> bool:
    """Tell whether the client package's ``AutoLRSCallback`` can be imported."""
    try:
        from lrtune.client import AutoLRSCallback  # noqa: F401
    except ImportError:
        return False
    return True


def run_demo(
    echo: Printer = print,
    config: JobConfig = DEMO_CONFIG,
    baseline: bool = True,
    loop: Loop = "auto",
    serve: bool = False,
    port: int = 0,
) -> dict[str, float]:
    """Start the service on the embedded store, tune a digits MLP over HTTP, print what it found.

    Args:
        echo: Prints one line.
        config: The job.
        baseline: Also train at a constant LR and compare.
        loop: ``callback`` trains with ``lrtune.client.AutoLRSCallback``; ``httpx`` with the plain loop of
            :func:`train_over_http`; ``auto`` takes the callback when the client package is installed.
        serve: Keep serving after the demo (until interrupted), so the job can be looked at in the dashboard.
        port: Loopback port of the service (0: any free port).

    Returns:
        ``val_loss`` and ``val_accuracy`` of the tuned run, and ``baseline_val_loss`` of a constant-LR run
        when ``baseline``.
    """
    if loop == "auto":
        loop = "callback" if callback_available() else "httpx"
    data = Digits.load(config.seed)
    with BackgroundServer(port=port) as srv:
        echo(f"lrtune service running at {srv.url} (embedded in-memory store)")
        echo(f"training a 64-128-10 MLP on digits for {config.total_steps} steps, LR in [{config.min_lr}, "
             f"{config.max_lr}], with {'AutoLRSCallback' if loop == 'callback' else 'a plain HTTP loop'}")  # fmt: skip
        if loop == "callback":
            job_id, token, runner = train_with_callback(srv.url, config, data, echo)
        else:
            runner = SegmentRunner(data, config.seed)
            job_id, token = train_over_http(srv.url, config, runner, echo)
        api = ServiceClient(srv.url)
        try:
            schedule = api.schedule(job_id, token)
        finally:
            api.close()
        echo("")
        echo("tuned schedule")
        echo(format_schedule(schedule))
        out = {"val_loss": runner.val_loss(), "val_accuracy": runner.val_accuracy()}
        echo(f"final validation loss {out['val_loss']:.4f}, accuracy {100 * out['val_accuracy']:.1f}%")
        if baseline:
            lr = math.sqrt(config.min_lr * config.max_lr)
            out["baseline_val_loss"] = train_constant(data, lr, config.total_steps, config.seed)
            echo(f"constant LR {lr:.3e} for the same {config.total_steps} steps: validation loss "
                 f"{out['baseline_val_loss']:.4f}")  # fmt: skip
        echo(f"dashboard of this job: {srv.url}/jobs/{job_id}")
        if serve:
            echo("serving until interrupted (Ctrl-C)")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                echo("stopping")
    return out
