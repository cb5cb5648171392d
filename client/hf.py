"""Hugging Face ``Trainer`` adapter: a ``transformers.TrainerCallback`` around :class:`client.AutoLRSCallback`.

Usage::

    from client.hf import AutoLRSTrainerCallback

    tuner = AutoLRSTrainerCallback(server_url="http://127.0.0.1:8000", min_lr=1e-5, max_lr=1e-3, total_steps=2000)
    trainer = Trainer(model=model, args=TrainingArguments(..., max_steps=2000), train_dataset=ds)
    tuner.attach(trainer)  # adds the callback and hooks the per-step loss
    trainer.train()

Two things the ``Trainer`` does get in the way, and how the adapter handles them:

* Its LR scheduler rewrites the LR after every step. :meth:`AutoLRSTrainerCallback.attach` makes the Trainer
  create a :class:`FollowLR` scheduler instead of its own (``lr_scheduler_type`` is then ignored): it leaves
  the LR alone and reports the tuned LR, so the ``learning_rate`` the Trainer logs is the LR each step used.
  Whatever scheduler runs, the adapter also sets the tuned LR right before every optimizer step
  (``on_pre_optimizer_step``) and after the scheduler stepped (``on_step_end``), so no scheduler can change
  the LR a step uses.
* It exposes the loss only through logging, every ``logging_steps`` steps. :meth:`AutoLRSTrainerCallback.attach`
  wraps the trainer's ``training_step`` to see the loss of every micro-batch (kept on the device; the step's
  loss is their sum, as the Trainer logs it with gradient accumulation). Without ``attach`` the callback reads
  the logged loss, which needs ``logging_steps=1`` (rounded to 4 digits, one device sync per step, and
  ``logging_nan_inf_filter=False`` for the divergence guard to see a NaN); training refuses to start otherwise.

Snapshots cover the model, the optimizer and the accelerator's grad scaler. Batch replay is not available
(the Trainer builds its own data loader). Under DDP (``torchrun``) rank 0 talks to the service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from client.callback import AutoLRSCallback, Loss
from client.validation import check_adapter_options


class FollowLR(torch.optim.lr_scheduler.LRScheduler):
    """A scheduler that leaves the LR alone and reports the LR the optimizer holds (the tuned one)."""

    def get_lr(self) -> list[float | torch.Tensor]:
        """The current LR of every param group (stepping changes nothing)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float | torch.Tensor]:
        """The LR every param group holds now."""
        return self.get_lr()


class AutoLRSTrainerCallback(TrainerCallback):
    """Tune the LR of a Hugging Face ``Trainer``.

    Args:
        server_url: URL of the lrtune service; None runs the tuner in process.
        min_lr: Lower end of the LR range.
        max_lr: Upper end of the LR range.
        total_steps: Step budget (optimizer steps), exploration included. Give the Trainer at least as many
            ``max_steps``; it stops once the budget is spent.
        val_fn: Returns the validation loss, if the objective needs one.
        **options: Any other keyword argument of :class:`client.AutoLRSCallback` (``config``, ``seed``, ...).

    Raises:
        TypeError, ValueError: Invalid arguments.
    """

    def __init__(
        self,
        server_url: str | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        total_steps: int | None = None,
        val_fn: Callable[[], Loss] | None = None,
        **options: Any,
    ) -> None:
        check_adapter_options(server_url, min_lr, max_lr, total_steps, val_fn, options, ("scaler", "loader"))
        self.server_url = server_url
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.val_fn = val_fn
        self.options = options
        self.core: AutoLRSCallback | None = None
        self.attached = False
        self._scaler: Any = None
        self._micro: list[torch.Tensor] = []  # losses of the micro-batches of the running step
        self._resume: dict[str, Any] | None = None

    def attach(self, trainer: Any) -> AutoLRSTrainerCallback:
        """Add this callback to ``trainer`` and hook its ``training_step`` to get every step's loss.

        Returns:
            self.
        """
        original = trainer.training_step

        def training_step(*args: Any, **kwargs: Any) -> Any:
            loss = original(*args, **kwargs)
            if isinstance(loss, torch.Tensor):
                self._micro.append(loss.detach())
            return loss

        trainer.training_step = training_step

        def create_scheduler(num_training_steps: int, optimizer: Any = None) -> Any:
            trainer.lr_scheduler = FollowLR(optimizer if optimizer is not None else trainer.optimizer)
            return trainer.lr_scheduler

        trainer.create_scheduler = create_scheduler
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self._scaler = getattr(getattr(trainer, "accelerator", None), "scaler", None)
        self.attached = True
        return self

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the job of a saved :meth:`state_dict` (applied when training begins, if not yet begun)."""
        if self.core is None:
            self._resume = state
        else:
            self.core.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """The core callback's state (save it with your checkpoint to resume the same job)."""
        return {} if self.core is None else self.core.state_dict()

    @property
    def done(self) -> bool:
        """True once the step budget is spent."""
        return self.core is not None and self.core.done

    # ------------------------------------------------------------------ TrainerCallback hooks

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Check the setup, then create the core callback on the Trainer's model and optimizer.

        Raises:
            ValueError: Not attached and ``logging_steps`` is not 1 (no per-step loss to report).
        """
        if not self.attached and not (args.logging_strategy == "steps" and args.logging_steps == 1):
            raise ValueError(
                "AutoLRSTrainerCallback needs the loss of every step: call callback.attach(trainer) before "
                "trainer.train(), or set TrainingArguments(logging_strategy='steps', logging_steps=1)"
            )
        if self.core is None:
            model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
            if model is None or optimizer is None:
                raise ValueError("the Trainer passed no model/optimizer to on_train_begin")
            self.core = AutoLRSCallback(
                model,
                optimizer,
                self.server_url,
                self.min_lr,
                self.max_lr,
                self.total_steps,
                self.val_fn,
                scaler=self._scaler,
                **self.options,
            )
        if self._resume is not None:
            self.core.load_state_dict(self._resume)
            self._resume = None
        self._micro = []

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Set the tuned LR right before the optimizer steps, whatever the scheduler did."""
        if self.core is not None and not self.core.done:
            self.core.apply_lr()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Report the step's loss (attached mode) and set the next step's LR over the scheduler's."""
        core = self.core
        if core is None:
            return
        if self.attached and not core.done:
            micro, self._micro = self._micro, []
            if micro:
                core.on_train_batch_end(torch.stack([m.reshape(()) for m in micro]).sum())
        if core.done:
            control.should_training_stop = True
        else:
            core.apply_lr()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Report the logged loss (not attached: ``logging_steps=1``)."""
        core = self.core
        if core is None or self.attached or core.done or not logs or "loss" not in logs:
            return
        core.on_train_batch_end(float(logs["loss"]))
        if core.done:
            control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Deliver what is buffered, free the snapshots."""
        if self.core is not None:
            self.core.on_train_end()
