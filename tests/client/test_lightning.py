"""The Lightning adapter in tiny real fits on CPU."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from lrtune.client.lightning import AutoLRSLightningCallback
from lrtune.client.tracking import PHASE_CODES
from tests.client.helpers import SMALL, make_batches, make_model, prescribed_lrs, steps_by_segment


class Module(pl.LightningModule):
    def __init__(self, scheduler: bool = False) -> None:
        super().__init__()
        self.net = make_model(dropout=0.1)
        self.scheduler = scheduler
        self.lrs: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        _, x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        opt.register_step_pre_hook(lambda o, a, k: self.lrs.append(o.param_groups[0]["lr"]))
        if self.scheduler:
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 10)}
        return opt


def _loader() -> torch.utils.data.DataLoader[Any]:
    batches = make_batches(n_batches=8)
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)


def _trainer(cb: AutoLRSLightningCallback, **kw: Any) -> pl.Trainer:
    return pl.Trainer(
        callbacks=[cb],
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kw,
    )


def test_a_fit_uses_the_prescribed_lr_every_step_and_stops_at_the_budget() -> None:
    module = Module()
    cb = AutoLRSLightningCallback(None, 1e-3, 1.0, 160, config=SMALL)
    trainer = _trainer(cb, max_steps=10_000)
    trainer.fit(module, _loader())
    assert cb.done and trainer.global_step == 160 and len(module.lrs) == 160
    assert cb.core is not None
    sched = cb.core.tuner.schedule()
    assert sched["done"] and module.lrs == prescribed_lrs(cb.core.history, steps_by_segment(sched))
    assert any(s.restore for s in cb.core.history)


def test_an_lr_scheduler_is_refused_at_fit_start() -> None:
    cb = AutoLRSLightningCallback(None, 1e-3, 1.0, 50)
    with pytest.raises(ValueError, match="LR scheduler"):
        _trainer(cb, max_steps=50).fit(Module(scheduler=True), _loader())


def test_gradient_accumulation_is_refused_at_fit_start() -> None:
    cb = AutoLRSLightningCallback(None, 1e-3, 1.0, 50)
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        _trainer(cb, max_steps=50, accumulate_grad_batches=2).fit(Module(), _loader())


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="below max_lr"):
        AutoLRSLightningCallback(None, 1.0, 0.1, 50)
    with pytest.raises(TypeError, match="scaler"):
        AutoLRSLightningCallback(None, 1e-3, 1.0, 50, scaler=object())
    with pytest.raises(TypeError, match="unexpected keyword"):
        AutoLRSLightningCallback(None, 1e-3, 1.0, 50, tau=20)


def test_a_fit_resumed_from_its_checkpoint_continues_the_same_job(tmp_path: Path) -> None:
    first = Module()
    cb = AutoLRSLightningCallback(None, 1e-3, 1.0, 160, config=SMALL)
    trainer = _trainer(cb, max_steps=45)  # interrupted before the budget
    trainer.fit(first, _loader())
    assert not cb.done and cb.core is not None
    before = [s.segment_id for s in cb.core.history]
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)

    second = Module()
    resumed = AutoLRSLightningCallback(None, 1e-3, 1.0, 160, config=SMALL, seed=99)  # the checkpoint decides
    trainer = _trainer(resumed, max_steps=10_000)
    trainer.fit(second, _loader(), ckpt_path=ckpt)
    assert resumed.done and resumed.core is not None and trainer.global_step == 160
    sched = resumed.core.tuner.schedule()
    assert sched["done"] and sched["steps_used"] == 160
    assert [r["segment_id"] for r in sched["segments"]][: len(before) - 1] == before[:-1]
    # Across both fits, every step used the LR its segment prescribed.
    history = cb.core.history + [s for s in resumed.core.history if s.segment_id not in before]
    assert first.lrs + second.lrs == prescribed_lrs(history, steps_by_segment(sched))


class LoggingModule(Module):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss


def test_the_trainers_logger_gets_lr_phase_and_rolled_back_steps_beside_the_users_metrics(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    module = LoggingModule()
    seen: list[Any] = []
    cb = AutoLRSLightningCallback(None, 1e-3, 1.0, 160, config=SMALL, log_fn=seen.append)
    logger = CSVLogger(tmp_path)
    trainer = pl.Trainer(
        callbacks=[cb],
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        max_steps=10_000,
        logger=logger,
        log_every_n_steps=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, _loader())
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    ours = {int(r["step"]): r for r in rows if r["lrtune/lr"]}
    theirs = {int(r["step"]) for r in rows if r["train_loss"]}
    assert set(ours) == theirs  # the same steps, the same cadence as the user's own metrics
    assert cb.core is not None
    explore = {s.segment_id for s in cb.core.history if s.phase == "explore"}
    sched = cb.core.tuner.schedule()
    segment_at = [rec["segment_id"] for rec in sched["segments"] for _ in range(rec["steps"])]
    for step, row in ours.items():  # Lightning's step k is optimizer step k + 1
        assert float(row["lrtune/lr"]) == pytest.approx(module.lrs[step], rel=1e-6)
        assert (float(row["lrtune/phase"]) == PHASE_CODES["explore"]) == (segment_at[step] in explore)
    rolled = [float(r["lrtune/rolled_back"]) for r in ours.values()]
    assert rolled == sorted(rolled)  # steps rolled back so far
    wasted = sum(rec["steps"] for rec in sched["segments"] if rec["rolled_back"])
    assert wasted > 0 and cb.rolled_back_steps == wasted and rolled[-1] == wasted
    assert any(r.rolled_back for r in seen)  # the user's own log_fn gets the segment logs too
