"""The Hugging Face Trainer adapter in tiny real trainings on CPU."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from lrtune.client.hf import AutoLRSTrainerCallback
from lrtune.client.tracking import PHASE_CODES
from tests.client.helpers import SMALL, make_batches, make_model, prescribed_lrs, steps_by_segment


class Regressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_model(dropout=0.1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.net(x), labels)}


def _dataset() -> list[dict[str, torch.Tensor]]:
    return [{"x": x[i], "labels": y[i]} for _, x, y in make_batches(n_batches=8) for i in range(len(x))]


def _trainer(tmp_path: Path, lrs: list[float], **kw: Any) -> Trainer:
    model = Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt.register_step_pre_hook(lambda o, a, k: lrs.append(o.param_groups[0]["lr"]))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=kw.pop("max_steps", 1000),
        per_device_train_batch_size=16,
        lr_scheduler_type="linear",  # the Trainer's own scheduler runs, and must not change the tuned LR
        report_to=[],
        save_strategy=kw.pop("save_strategy", "no"),
        disable_tqdm=True,
        use_cpu=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=0,
        **kw,
    )
    return Trainer(model=model, args=args, train_dataset=_dataset(), optimizers=(opt, None))


@pytest.mark.parametrize("accumulation", [1, 2])
def test_attached_every_step_uses_the_prescribed_lr(tmp_path: Path, accumulation: int) -> None:
    lrs: list[float] = []
    trainer = _trainer(tmp_path, lrs, gradient_accumulation_steps=accumulation, logging_steps=50)
    cb = AutoLRSTrainerCallback(None, 1e-3, 1.0, 160, config=SMALL).attach(trainer)
    trainer.train()
    assert cb.done and trainer.state.global_step == 160 and len(lrs) == 160
    assert cb.core is not None
    sched = cb.core.tuner.schedule()
    assert sched["done"] and lrs == prescribed_lrs(cb.core.history, steps_by_segment(sched))
    assert any(s.restore for s in cb.core.history)
    logged = [(h["step"], h["learning_rate"]) for h in trainer.state.log_history if "learning_rate" in h]
    assert logged and all(lr == lrs[step - 1] for step, lr in logged)  # the Trainer logs the LR the step used


def test_with_logging_every_step_no_attach_is_needed(tmp_path: Path) -> None:
    lrs: list[float] = []
    cb = AutoLRSTrainerCallback(None, 1e-3, 1.0, 120, config=SMALL)
    trainer = _trainer(tmp_path, lrs, logging_steps=1)
    trainer.add_callback(cb)
    trainer.train()
    assert cb.done and cb.core is not None and trainer.state.global_step == 120
    sched = cb.core.tuner.schedule()
    assert lrs == prescribed_lrs(cb.core.history, steps_by_segment(sched))


def test_without_a_per_step_loss_training_refuses_to_start(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, [], logging_steps=10)
    trainer.add_callback(AutoLRSTrainerCallback(None, 1e-3, 1.0, 50))
    with pytest.raises(ValueError, match=r"attach\(trainer\)"):
        trainer.train()


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        AutoLRSTrainerCallback(None, 1e-3, 1.0, -5)
    with pytest.raises(TypeError, match="loader"):
        AutoLRSTrainerCallback(None, 1e-3, 1.0, 50, loader=None)


def test_resume_from_a_saved_state_continues_the_job(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lrs: list[float] = []
    trainer = _trainer(tmp_path, lrs, max_steps=45, logging_steps=50)
    cb = AutoLRSTrainerCallback(None, 1e-3, 1.0, 160, config=SMALL).attach(trainer)
    trainer.train()
    assert not cb.done
    state = cb.state_dict()

    more: list[float] = []
    trainer = _trainer(tmp_path, more, logging_steps=50)
    resumed = AutoLRSTrainerCallback(None, 1e-3, 1.0, 160, config=SMALL).attach(trainer)
    resumed.load_state_dict(state)
    with caplog.at_level(logging.INFO, logger="lrtune.client"):
        trainer.train()
    assert resumed.done and resumed.core is not None
    sched = resumed.core.tuner.schedule()
    assert sched["done"] and sched["steps_used"] == 160 and len(lrs) + len(more) == 160


class Reporter(TrainerCallback):
    """Stands for a reporter of ``report_to`` (TensorBoard, W&B): records every log it is handed."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        self.logs.append({**(logs or {}), "step": state.global_step})


def test_the_reporters_get_lr_phase_and_rolled_back_steps_with_the_loss(tmp_path: Path) -> None:
    lrs: list[float] = []
    trainer = _trainer(tmp_path, lrs, logging_steps=5)
    reporter = Reporter()
    trainer.add_callback(reporter)  # where report_to puts them: before the callbacks a user adds
    trainer.callback_handler.callbacks.insert(1, trainer.callback_handler.pop_callback(reporter))
    cb = AutoLRSTrainerCallback(None, 1e-3, 1.0, 160, config=SMALL).attach(trainer)
    trainer.train()
    assert cb.core is not None
    train_logs = [log for log in reporter.logs if "loss" in log]
    assert len(train_logs) == 160 // 5
    explore = {s.segment_id for s in cb.core.history if s.phase == "explore"}
    sched = cb.core.tuner.schedule()
    segment_at = [rec["segment_id"] for rec in sched["segments"] for _ in range(rec["steps"])]
    for log in train_logs:
        step = log["step"]
        assert log["lrtune/lr"] == log["learning_rate"] == lrs[step - 1]  # the LR the last step used
        assert (log["lrtune/phase"] == PHASE_CODES["explore"]) == (segment_at[step - 1] in explore)
    rolled = [log["lrtune/rolled_back"] for log in train_logs]
    wasted = sum(rec["steps"] for rec in sched["segments"] if rec["rolled_back"])
    assert rolled == sorted(rolled) and wasted > 0 and rolled[-1] == wasted == cb.rolled_back_steps


def test_the_trainers_own_scheduler_is_left_in_place(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, [], max_steps=30, logging_steps=50)
    AutoLRSTrainerCallback(None, 1e-3, 1.0, 30, config=SMALL).attach(trainer)
    trainer.train()
    assert isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.LambdaLR)  # lr_scheduler_type="linear"
    assert "create_scheduler" not in vars(trainer)  # no method of the Trainer replaced but training_step


def test_a_trainer_checkpoint_carries_the_job_and_resuming_from_it_continues_it(tmp_path: Path) -> None:
    lrs: list[float] = []
    trainer = _trainer(tmp_path, lrs, max_steps=45, logging_steps=50, save_strategy="steps", save_steps=45)
    first = AutoLRSTrainerCallback(None, 1e-3, 1.0, 160, config=SMALL).attach(trainer)
    trainer.train()
    assert first.core is not None and not first.done
    before = [s.segment_id for s in first.core.history]
    checkpoint = tmp_path / "checkpoint-45"
    recorded = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]
    assert recorded["AutoLRSTrainerCallback"]["attributes"]["_checkpoint_dir"] == str(checkpoint.resolve())
    assert "token" not in json.dumps(recorded)

    more: list[float] = []
    trainer = _trainer(tmp_path, more, max_steps=1000, logging_steps=50)
    resumed = AutoLRSTrainerCallback(None, 1e-3, 1.0, 160, config=SMALL, seed=99).attach(trainer)  # the job rules
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.done and resumed.core is not None and trainer.state.global_step == 160
    sched = resumed.core.tuner.schedule()
    assert sched["done"] and sched["steps_used"] == 160 and len(lrs) + len(more) == 160
    assert [r["segment_id"] for r in sched["segments"]][: len(before) - 1] == before[:-1]
    history = first.core.history + [s for s in resumed.core.history if s.segment_id not in before]
    assert lrs + more == prescribed_lrs(history, steps_by_segment(sched))


def test_callbacks_recreated_from_json_say_what_they_lost(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, [], logging_steps=1, restore_callback_states_from_checkpoint=True)
    with pytest.raises(ValueError, match="restore_callback_states_from_checkpoint=False"):
        AutoLRSTrainerCallback(None, 1e-3, 1.0, 50).attach(trainer)
    cb = AutoLRSTrainerCallback(None, 1e-3, 1.0, 50, val_fn=lambda: 0.0, config=SMALL)
    saved = cb.state()
    again = AutoLRSTrainerCallback(**saved["args"])  # what the Trainer does with that flag
    for name, value in saved["attributes"].items():
        setattr(again, name, value)
    trainer.add_callback(again)
    with pytest.raises(ValueError, match="cannot hold val_fn"):
        trainer.train()
