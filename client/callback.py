"""The training-loop callback: applies segments to an optimizer, snapshots and restores, reports losses.

Call :meth:`AutoLRSCallback.on_train_batch_end` after every optimizer step. Per step it appends the detached
loss to a list (no device sync), runs ``val_fn`` at the segment's cadence, and sets the LR of the next step on
every param group. At the end of a segment it syncs the losses once, keeps the end state if asked, reports
(one HTTP round trip, or one call into the in-process tuner), and applies the next segment: restore, drop,
snapshot, then its first LR. The LR of a segment's first step is therefore set before that step runs: at
construction for the first segment, and at the end of the previous segment's last step for the others.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from lrtune.client.distributed import resolve_comm
from lrtune.client.errors import LrtuneClientError, ServiceUnavailableError
from lrtune.client.fallback import FallbackSpec, check_fallback
from lrtune.client.http import HTTPClient
from lrtune.client.offline import Course, OfflineLog
from lrtune.client.protocol import JobConfig, WireSegment
from lrtune.client.remote import RemoteSource, RetryPolicy
from lrtune.client.replay import ReplayLoader
from lrtune.client.snapshot import SnapshotStore, Stateful
from lrtune.client.source import LocalSource, SegmentSource
from lrtune.client.summary import RunStats, run_log, summary
from lrtune.client.tracking import Lineage, LogFn, SegmentLog
from lrtune.client.validation import check_options
from lrtune.tuner.segment import OfflinePiece, Piece

log = logging.getLogger("lrtune.client")

#: Steps between lease renewal checks in long segments.
_KEEPALIVE_STEPS = 16
STATE_FORMAT = "lrtune.client/v1"

Loss = torch.Tensor | float


class AutoLRSCallback:
    """Drives an optimizer's LR from lrtune segments, in a plain PyTorch training loop.

    Args:
        model: The model being trained (a module, or its DDP wrapper).
        optimizer: Its optimizer (anything with ``param_groups``, ``state_dict`` and ``load_state_dict``).
        server_url: URL of the lrtune service; None runs the tuner in this process (needs the ``[tuner]``
            extra).
        min_lr: Lower end of the LR range.
        max_lr: Upper end of the LR range.
        total_steps: Step budget, exploration included; the callback is :attr:`done` after that many steps.
        val_fn: Returns the validation loss (a float or a scalar tensor); called at the cadence a segment asks
            for, with the model in eval mode and gradients off. Needed when the objective is validation loss; with
            the ``plan`` preset (the default) and no ``objective`` in ``config``, giving it makes the objective the
            validation loss (the plan then minimises the validation loss at the end of the budget).
        preset: ``"default"`` (``"plan"``), ``"plan"``, ``"greedy"`` or ``"paper"`` (see
            ``lrtune.tuner.TunerConfig``).
        strategy: ``"autolrs"`` or a standard schedule (``"cosine"``, ...).
        seed: Seed of the tuner.
        config: More job config fields (``tau``, ``k``, ``warmup_steps``, ``objective``, ...; see
            :class:`lrtune.client.protocol.JobConfig`).
        job_id: Attach to this existing job instead of creating one (with ``token``).
        token: The job's token.
        job_name: Label of a created job.
        api_key: Admin key for creating jobs, if the service requires one.
        scaler: The AMP grad scaler, saved and restored with each snapshot.
        loader: A :class:`lrtune.client.ReplayLoader` over the training batches, for batch replay.
        extra_state: More stateful objects (``state_dict``/``load_state_dict``) to snapshot, by name.
        http_client: An ``httpx.Client`` (or compatible, e.g. a ``fastapi.testclient.TestClient``) to talk to the
            service with; its ``base_url`` is used when ``server_url`` is None.
        timeout_s: Read timeout of each request, in seconds (when the callback creates the HTTP client); also the
            longest construction waits for the service's first answer. Training steps never wait this long: see
            ``max_stall_s``.
        max_stall_s: Longest any call of the callback (``on_train_batch_end``, ``on_train_end``, ...) waits for
            the service, in seconds, whatever the service or its store does: requests run on a background thread,
            and a call waits for an answer at most 90% of this (then training goes on at the fallback LR and the
            answer is picked up by a later step). The final flush retries within it.
        fallback: LR while no segment is open: ``"hold"``, ``"cosine"`` or ``f(step) -> lr``
            (see :mod:`lrtune.client.fallback`).
        worker_id: This worker's id in leases (default: host, pid and a random suffix).
        retry: Backoff of retries while the service is unreachable.
        process_group: Process group for DDP (None: the default group).
        distributed: Use ``torch.distributed`` (None: when it is initialized).
        guard_every: Steps between divergence checks in candidate segments (one device sync each).
        offline_sync_steps: Steps between the ranks' checks for a new segment while none is open (DDP only).
        checkpoint_snapshots: Include the held snapshots in :meth:`state_dict`, so a resumed run can still
            restore them (costs their size in the checkpoint).
        strict: Raise :class:`lrtune.client.errors.ServiceUnavailableError` instead of training on without a segment
            when the service does not answer (at construction, or at a segment's end), or is gone.
        log_fn: Called on rank 0 with a :class:`lrtune.client.tracking.SegmentLog` at the end of every segment (its
            steps, LRs and losses, from the one device sync the segment end makes anyway) and of every stretch of
            offline steps once reported, and once more with ``rolled_back=True`` when a later segment discards
            its steps; e.g. :class:`lrtune.client.tracking.TensorBoardLog`.

    Raises:
        TypeError: An argument of the wrong type.
        ValueError: An invalid value or config (also when the service refuses the config).
        lrtune.client.errors.LrtuneHTTPError: The service refused the job (a missing job, a wrong token).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: Any,
        server_url: str | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        total_steps: int | None = None,
        val_fn: Callable[[], Loss] | None = None,
        *,
        preset: str = "default",
        strategy: str = "autolrs",
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        token: str | None = None,
        job_name: str | None = None,
        api_key: str | None = None,
        scaler: Stateful | None = None,
        loader: ReplayLoader[Any] | None = None,
        extra_state: Mapping[str, Stateful] | None = None,
        http_client: HTTPClient | None = None,
        timeout_s: float = 10.0,
        max_stall_s: float = 2.0,
        fallback: FallbackSpec = "hold",
        worker_id: str | None = None,
        retry: RetryPolicy | None = None,
        process_group: Any = None,
        distributed: bool | None = None,
        guard_every: int = 8,
        offline_sync_steps: int = 16,
        checkpoint_snapshots: bool = True,
        strict: bool = False,
        log_fn: LogFn | None = None,
    ) -> None:
        job_config = check_options(
            model,
            optimizer,
            server_url,
            min_lr,
            max_lr,
            total_steps,
            val_fn,
            preset=preset,
            strategy=strategy,
            seed=seed,
            config=config,
            job_id=job_id,
            token=token,
            scaler=scaler,
            loader=loader,
            extra_state=extra_state,
            http_client=http_client,
            timeout_s=timeout_s,
            max_stall_s=max_stall_s,
            fallback=fallback,
            guard_every=guard_every,
            offline_sync_steps=offline_sync_steps,
            strict=strict,
            log_fn=log_fn,
        )
        assert min_lr is not None and max_lr is not None and total_steps is not None

        self.model = model
        self.optimizer = optimizer
        self.val_fn = val_fn
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.loader = loader
        self.fallback: FallbackSpec = check_fallback(fallback)
        self.guard_every = guard_every
        self.offline_sync_steps = offline_sync_steps
        self.checkpoint_snapshots = checkpoint_snapshots
        self.max_stall_s = float(max_stall_s)
        self.strict = strict
        self.stats = RunStats()  # what ran, for the summary at the end
        self.mode = "local" if server_url is None and http_client is None else "remote"
        self.snapshots = SnapshotStore(model, optimizer, scaler, extra_state)
        self.comm = resolve_comm(process_group, distributed)
        self.history: list[WireSegment] = []  # segments begun since construction (or load_state_dict), in order
        self.offline_steps = 0  # steps run with no segment open
        # Of those, the steps the job counts: reported to it, or run before a replacement job's start.
        self.offline_reported = 0

        self._seg: WireSegment | None = None
        self._j = 0  # steps run in the open segment
        self._pending: list[Loss] = []  # losses not synced yet (device tensors)
        self._synced: list[float] = []  # losses synced by guard checks (rank-averaged)
        self._val: list[Loss] = []
        self._eval_every: int | None = None
        self._guard = False
        self._moving = False
        self._step = 0  # steps seen, all of them
        self._done = False
        self._lr = math.sqrt(self.min_lr * self.max_lr)
        self._good_lr = job_config.warmup_lr or self._lr
        self._offline_from = 0
        self._base = 0  # global step of the job's step 0 (a replacement job starts later)
        self._course: Course | None = None  # what steps follow while no segment is open
        self._log = OfflineLog()  # offline steps the job has not counted yet
        self._off_next: Piece | None = None  # the course piece the next offline step runs on
        self._accounted_upto = 0  # global step up to which offline steps were reported or left out of the job
        self._stranded = False  # the job refused the offline steps: finish on the course, ask no more
        self._warned: set[str] = set()
        self._summarized = False
        self._device: torch.device | None = None
        self._seg_started = time.monotonic()

        self.source: SegmentSource | None = None
        self.log_fn = log_fn
        self._lineage: Lineage | None = None if log_fn is None else Lineage(log_fn)

        def start() -> WireSegment | None:  # on rank 0: a failure here reaches every rank
            self.source = self._make_source(
                server_url, job_config, job_id, token, job_name, api_key, http_client, timeout_s, worker_id, retry
            )
            return self.source.start()

        self._begin(self._exchange(start))

    # ------------------------------------------------------------------ public API

    @property
    def done(self) -> bool:
        """True once the step budget is spent; stop training then."""
        return self._done

    @property
    def lr(self) -> float:
        """The LR the next optimizer step uses."""
        return self._lr

    @property
    def segment(self) -> WireSegment | None:
        """The segment being run, or None while training at the fallback LR."""
        return self._seg

    @property
    def step(self) -> int:
        """Optimizer steps seen so far (all of them, fallback steps included)."""
        return self._step

    @property
    def job_id(self) -> str | None:
        """Id of the job on the service (``"local"`` in process; None before it was created, or off rank 0)."""
        src = self.source
        if isinstance(src, LocalSource):
            return "local"
        return getattr(src, "job_id", None)

    @property
    def tuner(self) -> Any:
        """The in-process ``lrtune.tuner.Tuner`` (None with a service, or off rank 0)."""
        return self.source.tuner if isinstance(self.source, LocalSource) else None

    def on_train_batch_end(self, loss: Loss) -> None:
        """Record the loss of the optimizer step that just ran and prepare the next step.

        Args:
            loss: The step's training loss: a scalar tensor (kept on its device) or a number.

        Raises:
            ValueError: ``loss`` has more than one element.
        """
        if self._done:
            self._warn_once("after_done", "lrtune: steps after the budget was spent are not tuned; stop training")
            return
        self._step += 1
        seg = self._seg
        if seg is None:
            self._offline_step(loss)
            return
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError(f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
            self._pending.append(loss.detach())
        else:
            self._pending.append(float(loss))
        self._j += 1
        j = self._j
        if self._eval_every is not None and j % self._eval_every == 0:
            self._val.append(self._validate())
        if j >= seg.steps or (self._guard and j % self.guard_every == 0 and self._diverged(seg)):
            self._end_segment()
            return
        if self._moving:
            self._set_lr(seg.lr_at(j))
        if j % _KEEPALIVE_STEPS == 0 and self.mode == "remote" and self.source is not None:
            epoch = self.source.keepalive(seg)
            if epoch is not None and epoch != seg.lease_epoch:  # the lease was renewed under a new epoch
                self._seg = dataclasses.replace(seg, lease_epoch=epoch)
                if self.history and self.history[-1] is seg:
                    self.history[-1] = self._seg

    def apply_lr(self) -> None:
        """Set the LR the next step should use on every param group again (after something else changed it)."""
        self._set_lr(self._lr)

    def on_train_end(self) -> None:
        """Finish: try once more to deliver a buffered report, free the snapshots, close connections."""
        src = self.source
        if isinstance(src, RemoteSource) and self._log.entries and not self._stranded:
            self._report_final_offline(src)  # within max_stall_s; one warning if the service keeps it waiting
        elif src is not None:
            src.flush()  # within max_stall_s; one warning if the service keeps the report waiting
        if src is not None:
            src.close()
        if not self._done:
            log.info("lrtune: training ended after %d steps, before the budget of %d", self._step, self.total_steps)
        if self.comm.is_leader and not self._summarized:
            self._summarized = True
            run_log.warning(self.summary())
        self.snapshots.clear()
        if self._lineage is not None:
            self._lineage.cleared()
        if self.loader is not None:
            self.loader.stop()

    def summary(self) -> str:
        """One paragraph on what the run did: steps, exploration share, LRs, outages, bad losses."""
        src = self.source
        return summary(
            job=self.job_id or "(none)",
            steps=self._step,
            total_steps=self.total_steps,
            stats=self.stats,
            outages=int(getattr(src, "outages", 0)),
            offline_steps=self.offline_steps,
            offline_reported=self.offline_reported,
            final_lr=self._lr,
        )

    def state_dict(self) -> dict[str, Any]:
        """Return what a resumed run needs to continue the same job where this one is.

        Save it with the model and optimizer at the same point (after ``on_train_batch_end``). It holds the job
        token (service mode), the tuner's state (in-process mode), the open segment and the progress in it, and
        (with ``checkpoint_snapshots``) the held snapshots. No collective is called: safe on rank 0 alone.
        """
        return {
            "format": STATE_FORMAT,
            "mode": self.mode,
            "source": None if self.source is None else self.source.state_dict(),
            "segment": None if self._seg is None else self._seg.to_dict(),
            "j": self._j,
            "losses": self._synced + self._floats(self._pending),
            "val": self._floats(self._val),
            "step": self._step,
            "done": self._done,
            "lr": self._lr,
            "good_lr": self._good_lr,
            "offline_from": self._offline_from,
            "offline_steps": self.offline_steps,
            "base": self._base,
            "course": None if self._course is None else self._course.to_dict(),
            "offline_log": self._log.to_dict(self._floats(self._log.losses)),
            "snapshots": self.snapshots.state_dict() if self.checkpoint_snapshots else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (saved by this run or a crashed one).

        Raises:
            ValueError: The state is not this callback's, or from the other mode (in-process vs service).
        """
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError("not an AutoLRSCallback state (missing format lrtune.client/v1)")
        if state["mode"] != self.mode:
            raise ValueError(f"cannot resume a {state['mode']} run in {self.mode} mode (server_url must match)")
        if self.source is not None and state["source"] is not None:
            self.source.load_state_dict(dict(state["source"]))
        seg = None if state["segment"] is None else WireSegment.from_dict(state["segment"])
        self._step = int(state["step"])
        self._done = bool(state["done"])
        self._good_lr = float(state["good_lr"])
        self._offline_from = int(state["offline_from"])
        self.offline_steps = int(state["offline_steps"])
        self._base = int(state.get("base", 0))
        course = state.get("course")
        self._course = None
        if course is not None:
            self._course = Course.from_dict(course, self.fallback, self.total_steps, self.min_lr)
        self._log = OfflineLog.from_dict(state["offline_log"]) if state.get("offline_log") else OfflineLog()
        self.snapshots.clear()  # those of the job this object started with are not the resumed job's
        if self._lineage is not None:  # what ran before the checkpoint was logged by the run that saved it
            self._lineage = Lineage(self._lineage.log_fn)
        if state.get("snapshots") is not None:
            self.snapshots.load_state_dict(state["snapshots"])
        if self.loader is not None:
            self.loader.stop()  # the recorded batches are not in the checkpoint
        self.history = [] if seg is None or seg.done else [seg]
        self._open(seg)
        self._j = int(state["j"])
        # Re-averaged at the next check, so every rank decides on the same numbers whatever it loaded.
        self._pending = [float(v) for v in state["losses"]]
        self._val = [float(v) for v in state["val"]]
        self._set_lr(float(state["lr"]))

    # ------------------------------------------------------------------ segments

    def _make_source(
        self,
        server_url: str | None,
        job_config: JobConfig,
        job_id: str | None,
        token: str | None,
        job_name: str | None,
        api_key: str | None,
        http_client: HTTPClient | None,
        timeout_s: float,
        worker_id: str | None,
        retry: RetryPolicy | None,
    ) -> SegmentSource:
        if self.mode == "local":
            return LocalSource(job_config)
        from lrtune.client.http import ServiceClient

        api = ServiceClient(server_url, http_client=http_client, timeout_s=timeout_s, api_key=api_key)
        wid = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        return RemoteSource(
            api,
            config=job_config,
            job_id=job_id,
            token=token,
            worker_id=wid,
            name=job_name,
            retry=retry,
            max_stall_s=self.max_stall_s,
            start_timeout_s=timeout_s,
            steps_done=lambda: self._step,
        )

    def _exchange(self, call: Callable[[], WireSegment | None]) -> WireSegment | None:
        """Run ``call`` on rank 0 (it talks to the source) and hand its result to every rank.

        The job's base step (where a replacement job's step 0 sits) travels with it.
        """
        if not self.comm.enabled:
            out = call()
            self._base = int(getattr(self.source, "job_base", 0))
            return out
        payload: tuple[str, Any] = ("ok", (None, self._base))
        error: Exception | None = None
        if self.comm.is_leader:
            try:
                payload = ("ok", (call(), int(getattr(self.source, "job_base", 0))))
            except Exception as exc:  # every rank must reach the broadcast, then every rank raises
                error = exc
                payload = ("error", f"{type(exc).__name__}: {exc}")
        payload = self.comm.broadcast(payload)
        seg: WireSegment | None = None
        if payload[0] == "ok":
            seg, self._base = payload[1][0], int(payload[1][1])
        if payload[0] == "error" or (seg is not None and seg.done):
            self.comm.barrier()  # the last broadcast: every rank has it before any rank moves on
        if error is not None:
            raise error
        if payload[0] == "error":
            raise LrtuneClientError(f"rank 0 failed talking to the segment source: {payload[1]}")
        return seg

    def _leader(self) -> SegmentSource:
        """The segment source (rank 0 only)."""
        assert self.source is not None, "only rank 0 has a segment source"
        return self.source

    def _begin(self, seg: WireSegment | None) -> None:
        """Apply a segment before its first step: restore, drop, snapshot, replay, first LR.

        A segment that arrives after steps the job has not counted (run while no segment was open) is not run: it
        was planned for the state before them. Those steps are reported instead, and the answer is applied.
        """
        if seg is None:
            self._go_offline()
            return
        if seg.done:
            self._finish(f"lrtune: the step budget is spent (job {seg.job_id})")
            self._seg = seg
            return
        behind = self._step - (self._base + seg.start_step)
        if behind > 0 and self._log.entries:
            self._report_offline(seg)
            return
        if behind != 0:
            self._warn_once(
                "behind",
                f"lrtune: segment {seg.segment_id} starts at step {seg.start_step} of job {seg.job_id}, but this "
                f"worker is at step {self._step - self._base} of it (resumed from another checkpoint?); running it "
                "from here",
            )
        self._account_log()  # what is left ran before this (replacement) job's step 0: its budget left it out
        self._log.clear()
        if seg.steps < 1:
            self._warn_once("empty", f"lrtune: segment {seg.segment_id} has no steps; training at the fallback LR")
            self._go_offline()
            return
        if seg.restore is not None and not self.snapshots.restore(seg.restore):
            self._warn_once(
                "restore",
                f"lrtune: snapshot {seg.restore!r} is not held (lost in a restart?); continuing from the current state",
            )
        elif seg.restore is not None and self._lineage is not None:
            self._lineage.restored(seg.restore)
        for name in seg.drop:
            self.snapshots.drop(name)
            if self._lineage is not None:
                self._lineage.dropped(name)
        if seg.snapshot is not None:
            self.snapshots.save(seg.snapshot)
            if self._lineage is not None:
                self._lineage.saved(seg.snapshot)
        if self.loader is not None:
            self.loader.on_segment(seg)
        self.history.append(seg)
        self._open(seg)

    def _open(self, seg: WireSegment | None) -> None:
        """Make ``seg`` the running segment with no steps run yet."""
        self._seg = seg
        self._j = 0
        self._pending = []
        self._synced = []
        self._val = []
        if seg is None or seg.done:
            return
        self._eval_every = seg.eval_every
        self._guard = seg.phase == "explore"
        self._moving = seg.shape != "constant" and seg.curve_from != seg.curve_to
        if seg.eval_every is not None and self.val_fn is None:
            self._warn_once(
                "no_val_fn",
                "lrtune: the job asks for validation losses but no val_fn was given; reporting the mean training "
                "loss of each evaluation window instead",
            )
        self._set_lr(seg.lr_at(0))
        self._seg_started = time.monotonic()

    def _end_segment(self) -> None:
        seg = self._seg
        assert seg is not None
        if isinstance(self.source, RemoteSource):  # paces the retries of an outage
            self.source.segment_s = time.monotonic() - self._seg_started
        n_new = len(self._pending)
        merged = self._mean_over_ranks(self._pending + self._val)
        losses = self._synced + merged[:n_new]
        val = merged[n_new:] if seg.eval_every is not None else None
        if self._lineage is not None and self.comm.is_leader:
            self._lineage.ended(SegmentLog.of_segment(seg, self._step, losses, val))
        if seg.keep is not None:
            self.snapshots.save(seg.keep)
            if self._lineage is not None:
                self._lineage.saved(seg.keep)
        if seg.phase != "explore" and losses:
            self._good_lr = seg.lr_at(len(losses) - 1)
        report = [v if math.isfinite(v) else None for v in losses]
        self.stats.add(seg, report)
        val_report = None if val is None else [v if math.isfinite(v) else None for v in val]
        self._begin(self._exchange(lambda: self._leader().report(seg, report, val_report)))

    def _diverged(self, seg: WireSegment) -> bool:
        """Sync the losses since the last check; tell whether the candidate tripped the divergence guard.

        The same rule as ``lrtune.tuner.segment.diverged``, on the numbers the report will carry.
        """
        self._synced += self._mean_over_ranks(self._pending)
        self._pending = []
        losses = self._synced
        if any(not math.isfinite(v) for v in losses):
            return True
        if seg.abort_above is None:
            return False
        tail = losses[-seg.guard_window :]
        return sum(tail) / len(tail) > seg.abort_above

    def _validate(self) -> Loss:
        if self.val_fn is None:  # stand-in: the mean training loss of the window, kept on the device
            window: list[Loss] = [*self._synced, *self._pending][-(self._eval_every or 1) :]
            return self._stack(window).mean()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                value = self.val_fn()
        finally:
            self.model.train(was_training)
        if isinstance(value, torch.Tensor):
            return value.detach().reshape(())
        return float(value)

    # ------------------------------------------------------------------ no segment: fallback

    def _go_offline(self) -> None:
        """Train on without a segment: on the continuation of the segment that just ended, or the fallback."""
        if self.strict and self.mode == "remote" and self._step < self.total_steps:
            where = getattr(getattr(self.source, "api", None), "where", "the service")
            raise ServiceUnavailableError(
                f"lrtune: {where} did not answer within max_stall_s={self.max_stall_s} s (or the job is gone), and "
                "strict=True makes that an error instead of training on without a segment"
            )
        ended = self._seg
        if ended is not None or self._course is None:
            self._offline_from = self._step
            planned = [] if ended is None or ended.done else list(ended.then)
            if planned and planned[0].start_step != ended.end_step:  # type: ignore[union-attr]
                planned = []  # not a continuation of this segment: the fallback is safer
            pieces = [dataclasses.replace(p, start_step=p.start_step + self._base) for p in planned]
            self._course = Course(pieces, self.fallback, self._good_lr, self._step, self.total_steps, self.min_lr)
        self._seg = None
        self._pending, self._synced, self._val = [], [], []
        if self._step >= self.total_steps:
            self._finish("lrtune: the step budget is spent while the service was unreachable")
            return
        self._set_lr(self._offline_lr())

    def _offline_step(self, loss: Loss) -> None:
        self.offline_steps += 1
        if self._off_next is None:  # resumed from a checkpoint taken offline
            self._off_next = self._log.next_piece(self._need_course(), self._step - 1)
        self._log.add(self._off_next, self._step - 1, loss.detach() if isinstance(loss, torch.Tensor) else float(loss))
        self._off_next = None
        if self._step >= self.total_steps:
            self._finish("lrtune: the step budget is spent while the service was unreachable")
            return
        if self._stranded:
            nxt = None
        elif not self.comm.enabled:
            src = self.source
            nxt = self._exchange(src.poll) if src is not None and not src.detached else None
        elif self._step % self.offline_sync_steps == 0:
            nxt = self._exchange(lambda: None if self._leader().detached else self._leader().poll())
        else:
            nxt = None
        if nxt is not None:
            self._begin(nxt)
            return
        self._set_lr(self._offline_lr())

    def _need_course(self) -> Course:
        if self._course is None:
            self._course = Course([], self.fallback, self._good_lr, self._step, self.total_steps, self.min_lr)
        return self._course

    def _offline_lr(self) -> float:
        """The LR of the next offline step, from the course (remembering the piece it runs on)."""
        piece = self._log.next_piece(self._need_course(), self._step)
        self._off_next = piece
        if self._log.held:
            self._warn_once(
                "held",
                "lrtune: the fallback changed the LR too often while the service was unreachable to report each "
                "change; holding its last LR until the service is back",
            )
        return piece.lr_at(self._step - piece.start_step)

    def _offline_report(self, seg: WireSegment) -> tuple[list[OfflinePiece], list[float | None]]:
        """The logged offline steps from where the job's count of steps stands, with their (rank-averaged) losses."""
        pieces, losses = self._log.take(self._base + seg.start_step, self._base)
        self._account_log()
        values = self._mean_over_ranks(losses)
        if self._lineage is not None and self.comm.is_leader and values:
            self._lineage.ended(_offline_record(pieces, values, self._base))
        out = [v if math.isfinite(v) else None for v in values]
        self.stats.add_losses(out)
        return pieces, out

    def _account_log(self) -> None:
        """Count the logged steps not counted yet as accounted for (reported now, or left out of the job)."""
        start, end = self._log.start, self._log.end
        if start is None or end is None:
            return
        self.offline_reported += max(0, end - max(start, self._accounted_upto))
        self._accounted_upto = max(self._accounted_upto, end)

    def _report_offline(self, seg: WireSegment) -> None:
        """Report the offline steps instead of running ``seg``, and apply the answer."""
        pieces, losses = self._offline_report(seg)
        nxt = self._exchange(lambda: self._leader().report(seg, losses, None, offline=pieces))
        if nxt is not None and not nxt.done and nxt.segment_id == seg.segment_id:
            # The job refused the offline steps (the reason was logged): keep the course to the end of the budget.
            self._stranded = True
            self._warn_once(
                "stranded",
                f"lrtune: job {seg.job_id} did not take the steps run while it was unreachable; training finishes "
                "the budget on the planned continuation without it",
            )
            nxt = None
        self._seg = None
        self._begin(nxt)

    def _report_final_offline(self, src: RemoteSource) -> None:
        """At the end of training: deliver the buffered report, then the offline steps the job has not counted.

        Both within one stall bound (``0.9 * max_stall_s`` in all), with one warning if either stays undelivered.
        """
        deadline = time.monotonic() + 0.9 * self.max_stall_s
        if not src.flush(deadline, warn=False):
            src.flush(deadline)  # the deadline has passed: this only warns
            return
        self._base = src.job_base
        seg = src.answer
        if seg is None or seg.done or self._step <= self._base + seg.start_step:
            return
        pieces, losses = self._offline_report(seg)
        left = deadline - time.monotonic()
        if left <= 0 or src.report(seg, losses, None, offline=pieces, wait_s=left) is None:
            src.flush(deadline)

    def _finish(self, message: str) -> None:
        self._done = True
        self.snapshots.clear()
        if self._lineage is not None:
            self._lineage.cleared()
        if self.loader is not None:
            self.loader.stop()
        log.info(message)

    # ------------------------------------------------------------------ helpers

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            current = group["lr"]
            if isinstance(current, torch.Tensor):
                current.fill_(lr)
            else:
                group["lr"] = lr
        self._lr = lr

    def _mean_over_ranks(self, values: Sequence[Loss]) -> list[float]:
        """Sync ``values`` to floats (one device sync), averaged over the DDP ranks (one all_reduce)."""
        if not self.comm.enabled:
            return self._floats(values)
        tensor = self._stack(values)
        return [float(v) for v in self.comm.mean(tensor).cpu().tolist()]

    def _floats(self, values: Sequence[Loss]) -> list[float]:
        if not values:
            return []
        if all(not isinstance(v, torch.Tensor) for v in values):
            return [float(v) for v in values if not isinstance(v, torch.Tensor)]
        return [float(v) for v in self._stack(values).cpu().tolist()]

    def _stack(self, values: Sequence[Loss]) -> torch.Tensor:
        """One float64 vector of ``values`` on their device (floats join them there)."""
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if tensors:
            self._device = tensors[0].device
        device = self._device or _param_device(self.model)
        if len(tensors) == len(values) and len({t.dtype for t in tensors}) == 1:
            return torch.stack([t.reshape(()) for t in tensors]).to(torch.float64)
        return (
            torch.stack(
                [
                    v.reshape(()).to(device, torch.float64)
                    if isinstance(v, torch.Tensor)
                    else torch.tensor(float(v), dtype=torch.float64, device=device)
                    for v in values
                ]
            )
            if values
            else torch.zeros(0, dtype=torch.float64, device=device)
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def _offline_record(pieces: Sequence[OfflinePiece], losses: list[float], base: int) -> SegmentLog:
    """The log of reported offline steps: ``pieces`` (in the job's numbering, each with ``ran``) and their losses."""
    steps: list[int] = []
    lrs: list[float] = []
    for p in pieces:
        steps += range(base + p.start_step + 1, base + p.start_step + p.ran + 1)
        lrs += [p.lr_at(k) for k in range(p.ran)]
    return SegmentLog(None, "offline", None, None, tuple(steps), tuple(lrs), tuple(losses))


def _param_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
