"""Hugging Face ``Trainer`` adapter: a ``transformers.TrainerCallback`` around :class:`lrtune.client.AutoLRSCallback`.

Usage::

    from lrtune.client.hf import AutoLRSTrainerCallback

    tuner = AutoLRSTrainerCallback(server_url="http://127.0.0.1:8000", min_lr=1e-5, max_lr=1e-3, total_steps=2000)
    trainer = Trainer(model=model, args=TrainingArguments(..., max_steps=2000), train_dataset=ds)
    tuner.attach(trainer)  # adds the callback and hooks the per-step loss
    trainer.train()

Two things the ``Trainer`` does get in the way, and how the adapter handles them:

* Its LR scheduler rewrites the LR after every step. The adapter sets the tuned LR right before every optimizer
  step (``on_pre_optimizer_step``) and again after the scheduler stepped (``on_step_end``), so no scheduler
  changes the LR a step uses, and it writes the LR the last step used into the ``learning_rate`` the Trainer
  logs (``on_log``), which would otherwise be the scheduler's. The scheduler is left in place (its state is in
  the Trainer's checkpoints as usual); :class:`FollowLR`, passed as ``Trainer(optimizers=(opt, FollowLR(opt)))``,
  is a scheduler that does nothing, for those who prefer none.
* It exposes the loss only through logging, every ``logging_steps`` steps, and no callback hook receives it.
  :meth:`AutoLRSTrainerCallback.attach` therefore wraps the trainer's ``training_step`` (the method the Trainer's
  documentation says to override for this) to see the loss of every micro-batch (kept on the device; the step's
  loss is their sum, as the Trainer logs it with gradient accumulation). Without ``attach`` the callback reads
  the logged loss, which needs ``logging_steps=1`` (one device sync per step, and
  ``logging_nan_inf_filter=False`` for the divergence guard to see a NaN); training refuses to start otherwise.

What lrtune does is added to the Trainer's logs (``on_log``), so every reporter (``report_to``: TensorBoard, W&B,
...) records it with the loss: ``lrtune/lr`` (the LR of the last step), ``lrtune/phase``
(:data:`lrtune.client.tracking.PHASE_CODES`; 5 is exploration) and ``lrtune/rolled_back`` (steps rolled back so far).
``attach`` puts the callback before the reporters so they see these keys; a callback passed in
``callbacks=[...]`` runs after them, and its keys reach ``trainer.state.log_history`` only.

The callback's state travels with the Trainer's checkpoints: at every save it writes ``lrtune_state_<rank>.pt``
into the checkpoint folder and records it in ``trainer_state.json`` (``stateful_callbacks``), and
``trainer.train(resume_from_checkpoint=...)`` continues the same job.

Snapshots cover the model, the optimizer and the accelerator's grad scaler. Batch replay is not available
(the Trainer builds its own data loader). Under DDP (``torchrun``) rank 0 talks to the service.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

import torch

try:
    from transformers import DefaultFlowCallback, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"lrtune.client.hf needs Hugging Face transformers, which is not installed ({exc}): pip install 'lrtune[hf]'"
    ) from exc

from lrtune.client.callback import AutoLRSCallback, Loss
from lrtune.client.tracking import SegmentLog, phase_code
from lrtune.client.validation import check_adapter_options

try:
    from transformers.trainer_callback import ExportableState
except ImportError:  # transformers before 4.41 keeps no callback state in its checkpoints

    class ExportableState:  # type: ignore[no-redef]
        """Stand-in: nothing calls :meth:`state`."""


log = logging.getLogger("lrtune.client")

#: Options that are never written to ``trainer_state.json`` (secrets).
_SECRET_OPTIONS = ("token", "api_key")


def state_file(process_index: int) -> str:
    """Name of the file a rank keeps the callback's state in, inside a Trainer checkpoint folder."""
    return f"lrtune_state_{process_index}.pt"


class FollowLR(torch.optim.lr_scheduler.LRScheduler):
    """A scheduler that leaves the LR alone and reports the LR the optimizer holds (the tuned one)."""

    def get_lr(self) -> list[float | torch.Tensor]:
        """The current LR of every param group (stepping changes nothing)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float | torch.Tensor]:
        """The LR every param group holds now."""
        return self.get_lr()


class AutoLRSTrainerCallback(TrainerCallback, ExportableState):
    """Tune the LR of a Hugging Face ``Trainer``.

    Args:
        server_url: URL of the lrtune service; None runs the tuner in process.
        min_lr: Lower end of the LR range.
        max_lr: Upper end of the LR range.
        total_steps: Step budget (optimizer steps), exploration included. Give the Trainer at least as many
            ``max_steps``; it stops once the budget is spent.
        val_fn: Returns the validation loss, if the objective needs one.
        log_to_trainer: Add ``lrtune/lr``, ``lrtune/phase`` and ``lrtune/rolled_back`` to the Trainer's logs.
        **options: Any other keyword argument of :class:`lrtune.client.AutoLRSCallback` (``config``, ``seed``,
            ``log_fn``, ...).

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
        *,
        log_to_trainer: bool = True,
        **options: Any,
    ) -> None:
        check_adapter_options(server_url, min_lr, max_lr, total_steps, val_fn, options, ("scaler", "loader"))
        user_log_fn = options.pop("log_fn", None)  # checked with the options above
        self.server_url = server_url
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.val_fn = val_fn
        self.log_to_trainer = log_to_trainer
        self.options = options
        self.core: AutoLRSCallback | None = None
        self.attached = False
        self.rolled_back_steps = 0  # steps reported rolled back so far
        self._user_log_fn: Callable[[SegmentLog], Any] | None = user_log_fn
        self._scaler: Any = None
        self._micro: list[torch.Tensor] = []  # losses of the micro-batches of the running step
        self._resume: dict[str, Any] | None = None
        self._last_step: tuple[float, str | None] | None = None  # LR and phase of the step that ran last
        self._checkpoint_dir: str | None = None  # where the next Trainer checkpoint goes
        # Options this object was re-created without (set by the Trainer when it re-creates callbacks from JSON).
        self._restored_without: list[str] = []

    def attach(self, trainer: Any) -> AutoLRSTrainerCallback:
        """Add this callback to ``trainer`` before its reporters and hook its ``training_step`` for every loss.

        Returns:
            self.

        Raises:
            ValueError: ``restore_callback_states_from_checkpoint`` is set (the Trainer would replace this
                callback by a copy built from JSON, without the hook).
        """
        if getattr(trainer.args, "restore_callback_states_from_checkpoint", False):
            raise ValueError(
                "AutoLRSTrainerCallback.attach needs TrainingArguments(restore_callback_states_from_checkpoint=False): "
                "with True the Trainer replaces the callback by a copy without the loss hook. The callback resumes "
                "its job from the checkpoint either way"
            )
        original = trainer.training_step

        def training_step(*args: Any, **kwargs: Any) -> Any:
            loss = original(*args, **kwargs)
            if isinstance(loss, torch.Tensor):
                self._micro.append(loss.detach())
            return loss

        trainer.training_step = training_step
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        # Right after the flow callback, so that the reporters (and the progress printer) see lrtune's keys.
        at = next((i + 1 for i, cb in enumerate(callbacks) if isinstance(cb, DefaultFlowCallback)), 0)
        callbacks.insert(at, self)
        self._scaler = getattr(getattr(trainer, "accelerator", None), "scaler", None)
        self.attached = True
        return self

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the job of a saved :meth:`state_dict` (applied when training begins, if not yet begun)."""
        state = dict(state)
        self.rolled_back_steps = int(state.pop("rolled_back_steps", 0))
        if self.core is None:
            self._resume = state
        else:
            self.core.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """The core callback's state (in the Trainer's checkpoints; or save it with yours to resume the job)."""
        if self.core is None:
            return {}
        return {**self.core.state_dict(), "rolled_back_steps": self.rolled_back_steps}

    def state(self) -> dict[str, Any]:
        """What ``trainer_state.json`` records (``ExportableState``): the arguments and where the state file is.

        The state itself (with its snapshots of the weights) is in the checkpoint folder, written by
        :meth:`on_save`; no secret (job token, admin key) goes to the JSON file.
        """
        args: dict[str, Any] = {
            "server_url": self.server_url,
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "log_to_trainer": self.log_to_trainer,
        }
        lost = ["val_fn"] if self.val_fn is not None else []
        lost += ["log_fn"] if self._user_log_fn is not None else []
        for name, value in self.options.items():
            if name not in _SECRET_OPTIONS and _json_safe(value):
                args[name] = value
            else:
                lost.append(name)
        return {
            "args": args,
            "attributes": {"_checkpoint_dir": self._checkpoint_dir, "_restored_without": lost},
        }

    @property
    def done(self) -> bool:
        """True once the step budget is spent."""
        return self.core is not None and self.core.done

    # ------------------------------------------------------------------ TrainerCallback hooks

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Check the setup, then create the core callback on the Trainer's model and optimizer.

        When the Trainer resumes from a checkpoint, the core continues the job that checkpoint holds.

        Raises:
            ValueError: Not attached and ``logging_steps`` is not 1 (no per-step loss to report), or the Trainer
                re-created this callback from its checkpoint without arguments JSON cannot hold.
        """
        if self._restored_without:
            raise ValueError(
                "the Trainer re-created AutoLRSTrainerCallback from trainer_state.json "
                "(restore_callback_states_from_checkpoint=True), which cannot hold "
                f"{', '.join(self._restored_without)}: set restore_callback_states_from_checkpoint=False, the "
                "callback resumes its job from the checkpoint either way"
            )
        if not self.attached and not (args.logging_strategy == "steps" and args.logging_steps == 1):
            raise ValueError(
                "AutoLRSTrainerCallback needs the loss of every step: call callback.attach(trainer) before "
                "trainer.train(), or set TrainingArguments(logging_strategy='steps', logging_steps=1)"
            )
        if self._resume is None and self.core is None and state.global_step > 0:
            self._resume = self._from_checkpoint(args, state)
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
                log_fn=self._on_segment_log,
                **self.options,
            )
        if self._resume is not None:
            self.core.load_state_dict(self._resume)
            self._resume = None
        self._micro = []
        self._checkpoint_dir = self._next_checkpoint_dir(args, state)

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Set the tuned LR right before the optimizer steps, whatever the scheduler did."""
        if self.core is not None and not self.core.done:
            self.core.apply_lr()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Report the step's loss (attached mode) and set the next step's LR over the scheduler's."""
        core = self.core
        self._checkpoint_dir = self._next_checkpoint_dir(args, state)
        if core is None:
            return
        seg = core.segment
        self._last_step = (core.lr, None if seg is None else seg.phase)
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
        """Add lrtune's keys and the tuned LR to a training log; report the logged loss (not attached)."""
        core = self.core
        if core is None or not logs:
            return
        if not self.attached and not core.done and "loss" in logs:
            core.on_train_batch_end(float(logs["loss"]))
            if core.done:
                control.should_training_stop = True
        if self._last_step is None or not ("loss" in logs or "learning_rate" in logs):
            return  # not a training log (an evaluation, the final metrics)
        lr, phase = self._last_step
        extra: dict[str, float] = {"learning_rate": lr} if "learning_rate" in logs else {}
        if self.log_to_trainer:
            extra["lrtune/lr"] = lr
            extra["lrtune/phase"] = float(phase_code(phase))
            extra["lrtune/rolled_back"] = float(self.rolled_back_steps)
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Write the callback's state into the checkpoint folder the Trainer just saved."""
        if self.core is None:
            return
        folder = os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        torch.save(self.state_dict(), os.path.join(folder, state_file(args.process_index)))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Deliver what is buffered, free the snapshots."""
        if self.core is not None:
            self.core.on_train_end()

    # ------------------------------------------------------------------ helpers

    def _on_segment_log(self, record: SegmentLog) -> None:
        if record.rolled_back:
            self.rolled_back_steps += len(record.steps)
        if self._user_log_fn is not None:
            self._user_log_fn(record)

    @staticmethod
    def _next_checkpoint_dir(args: TrainingArguments, state: TrainerState) -> str:
        return os.path.abspath(os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}"))

    def _from_checkpoint(self, args: TrainingArguments, state: TrainerState) -> dict[str, Any] | None:
        """The state saved in the checkpoint the Trainer resumes from (None, with a warning, if none is found)."""
        stored: Any = state.stateful_callbacks or {}  # after loading a checkpoint: class name -> state()
        saved = stored.get(type(self).__name__) if isinstance(stored, dict) else None
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        recorded = saved.get("attributes", {}).get("_checkpoint_dir") if isinstance(saved, dict) else None
        folders = [recorded, getattr(args, "resume_from_checkpoint", None), self._next_checkpoint_dir(args, state)]
        name = state_file(args.process_index)
        for folder in folders:
            if isinstance(folder, str) and os.path.isfile(os.path.join(folder, name)):
                loaded: dict[str, Any] = torch.load(os.path.join(folder, name), weights_only=False)
                self.rolled_back_steps = int(loaded.pop("rolled_back_steps", 0))
                return loaded
        log.warning(
            "lrtune: the Trainer resumes at step %d, but no %s was found in its checkpoint (looked in %s); "
            "starting a new job",
            state.global_step,
            name,
            ", ".join(str(f) for f in folders if f),
        )
        return None


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
