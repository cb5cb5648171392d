"""PyTorch Lightning adapter: a ``lightning.pytorch.Callback`` around :class:`lrtune.client.AutoLRSCallback`.

Usage::

    from lrtune.client.lightning import AutoLRSLightningCallback

    tuner = AutoLRSLightningCallback(server_url="http://127.0.0.1:8000", min_lr=1e-4, max_lr=1e-1, total_steps=2000)
    trainer = lightning.pytorch.Trainer(max_steps=2000, callbacks=[tuner])
    trainer.fit(module, datamodule)

Rules (checked when fitting starts, with a clear error):

* ``configure_optimizers`` returns exactly one optimizer and no LR scheduler (the callback is the scheduler);
* ``accumulate_grad_batches`` is 1 (one ``on_train_batch_end`` per optimizer step);
* ``training_step`` returns the loss (a tensor, or a dict with ``"loss"``).

The callback stops the trainer once the step budget is spent (``trainer.should_stop``). It snapshots the
LightningModule, the optimizer and, with ``16-mixed`` precision, the precision plugin's grad scaler. Its state
goes into Lightning checkpoints, so ``trainer.fit(..., ckpt_path=...)`` continues the same job. Under DDP every
rank runs its own callback; rank 0 talks to the service (see :mod:`lrtune.client.distributed`). For batch replay,
return a :class:`lrtune.client.ReplayLoader` from ``train_dataloader()`` and pass the same object as ``loader=``.

What lrtune does goes to the trainer's loggers (``trainer.loggers``: TensorBoard, CSV, W&B, ...), every
``log_every_n_steps`` steps at the step Lightning logs that batch's own metrics at: ``lrtune/lr`` (the LR the step
ran at), ``lrtune/phase`` (:data:`lrtune.client.tracking.PHASE_CODES`; 5 is exploration) and ``lrtune/rolled_back``
(steps rolled back so far). These are numbers the callback holds on the host: logging them costs no device sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"lrtune.client.lightning needs PyTorch Lightning, which is not installed ({exc}): "
        "pip install 'lrtune[lightning]'"
    ) from exc

from lrtune.client.callback import AutoLRSCallback, Loss
from lrtune.client.tracking import SegmentLog, phase_code
from lrtune.client.validation import check_adapter_options


class AutoLRSLightningCallback(pl.Callback):
    """Tune the LR of a Lightning fit.

    Args:
        server_url: URL of the lrtune service; None runs the tuner in process.
        min_lr: Lower end of the LR range.
        max_lr: Upper end of the LR range.
        total_steps: Step budget (optimizer steps), exploration included.
        val_fn: Returns the validation loss, if the objective needs one (see :class:`lrtune.client.AutoLRSCallback`).
        **options: Any other keyword argument of :class:`lrtune.client.AutoLRSCallback` (``config``, ``preset``,
            ``seed``, ``loader``, ``fallback``, ``http_client``, ``log_fn``, ...).
        log_to_trainer: Log ``lrtune/lr``, ``lrtune/phase`` and ``lrtune/rolled_back`` to the trainer's loggers.

    Raises:
        TypeError, ValueError: Invalid arguments (checked here, before any training).
    """

    def __init__(
        self,
        server_url: str | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        total_steps: int | None = None,
        val_fn: Callable[[], Loss] | None = None,
        *,
        log_to_trainer: bool = True,
        **options: Any,
    ) -> None:
        check_adapter_options(server_url, min_lr, max_lr, total_steps, val_fn, options, ("scaler",))
        self.server_url = server_url
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.val_fn = val_fn
        self.options = options
        self.log_to_trainer = log_to_trainer
        self.core: AutoLRSCallback | None = None
        self.rolled_back_steps = 0  # steps of this fit reported rolled back so far
        # Checked with the options above.
        self._user_log_fn: Callable[[SegmentLog], Any] | None = options.pop("log_fn", None)
        self._resume: Mapping[str, Any] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the setup, then create the core callback (which creates or attaches to the job).

        Raises:
            ValueError: An LR scheduler is configured, several optimizers, or gradient accumulation.
        """
        if trainer.lr_scheduler_configs:
            raise ValueError(
                "configure_optimizers returns an LR scheduler: remove it, AutoLRSLightningCallback sets the LR "
                "of every step"
            )
        if len(trainer.optimizers) != 1:
            raise ValueError(f"AutoLRSLightningCallback needs exactly one optimizer, got {len(trainer.optimizers)}")
        if trainer.accumulate_grad_batches != 1:
            raise ValueError("AutoLRSLightningCallback needs accumulate_grad_batches=1 (one step per batch)")
        if self.core is None:
            scaler = getattr(trainer.precision_plugin, "scaler", None)
            self.core = AutoLRSCallback(
                pl_module,
                trainer.optimizers[0],
                self.server_url,
                self.min_lr,
                self.max_lr,
                self.total_steps,
                self.val_fn,
                scaler=scaler,
                log_fn=self._on_segment_log,
                **self.options,
            )
        if self._resume is not None:
            self.core.load_state_dict(self._resume)
            self._resume = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Set the step's LR again (a restored optimizer checkpoint may have overwritten it)."""
        if self.core is not None and not self.core.done:
            self.core.apply_lr()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Hand the step's loss to the core callback; stop the trainer when the budget is spent.

        Raises:
            ValueError: ``training_step`` returned no loss.
        """
        if self.core is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor | float | int):
            raise ValueError("training_step must return the loss (a tensor, or a dict with 'loss') for lrtune")
        seg = self.core.segment
        lr, phase = self.core.lr, None if seg is None else seg.phase  # of the step that just ran
        self.core.on_train_batch_end(loss)
        every = max(int(getattr(trainer, "log_every_n_steps", 1)), 1)
        if self.log_to_trainer and trainer.loggers and trainer.global_step % every == 0:
            metrics = {
                "lrtune/lr": lr,
                "lrtune/phase": float(phase_code(phase)),
                "lrtune/rolled_back": float(self.rolled_back_steps),
            }
            for logger in trainer.loggers:  # at the step Lightning logs this batch's metrics at
                logger.log_metrics(metrics, step=trainer.global_step - 1)
        if self.core.done:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Deliver what is buffered, free the snapshots."""
        if self.core is not None:
            self.core.on_train_end()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Free the snapshots and connections when the fit fails."""
        if self.core is not None:
            self.core.on_train_end()

    def _on_segment_log(self, record: SegmentLog) -> None:
        if record.rolled_back:
            self.rolled_back_steps += len(record.steps)
        if self._user_log_fn is not None:
            self._user_log_fn(record)

    @property
    def done(self) -> bool:
        """True once the step budget is spent."""
        return self.core is not None and self.core.done

    def state_dict(self) -> dict[str, Any]:
        """The core callback's state, saved in Lightning checkpoints."""
        if self.core is None:
            return {}
        return {**self.core.state_dict(), "rolled_back_steps": self.rolled_back_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the job of a checkpoint (applied when fitting starts if the core does not exist yet)."""
        if not state_dict:
            return
        state_dict = dict(state_dict)
        self.rolled_back_steps = int(state_dict.pop("rolled_back_steps", 0))
        if self.core is None:
            self._resume = state_dict
        else:
            self.core.load_state_dict(state_dict)
