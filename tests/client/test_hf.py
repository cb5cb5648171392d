"""The Hugging Face Trainer adapter in tiny real trainings on CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Trainer, TrainingArguments

from client.hf import AutoLRSTrainerCallback
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
        save_strategy="no",
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
