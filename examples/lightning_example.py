"""Tune the LR of a Lightning fit (a small MLP on the scikit-learn digits) with lrtune.

    lrtune serve &
    python examples/lightning_example.py           # --url http://127.0.0.1:8000
    python examples/lightning_example.py --local   # the tuner in this process
    python examples/lightning_example.py --local --logdir runs/lightning   # lrtune/* beside train_loss (CSV)

The module configures one optimizer and no LR scheduler: the callback sets the LR of every step. With a logger,
the callback logs ``lrtune/lr``, ``lrtune/phase`` and ``lrtune/rolled_back`` next to the module's own metrics
(any Lightning logger works the same: ``TensorBoardLogger``, ``WandbLogger``, ...).
"""

from __future__ import annotations

import argparse
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from lrtune.client import ReplayLoader
from lrtune.client.lightning import AutoLRSLightningCallback


def digits(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Train and validation splits of the 8x8 digits: x of shape (n, 64) scaled to [0, 1], y of shape (n,)."""
    x, y = load_digits(return_X_y=True)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    xs = torch.tensor(x, dtype=torch.float32)[perm] / 16.0
    ys = torch.tensor(y, dtype=torch.long)[perm]
    cut = int(0.8 * len(xs))
    return TensorDataset(xs[:cut], ys[:cut]), TensorDataset(xs[cut:], ys[cut:])


def mlp() -> torch.nn.Module:
    """A two-layer MLP for 64 inputs and 10 classes."""
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


class DigitsModule(pl.LightningModule):
    """An MLP classifier of the 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)  # no scheduler: lrtune is the scheduler


def main(argv: list[str] | None = None) -> float:
    """Fit, print the validation accuracy and return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the lrtune service")
    parser.add_argument("--local", action="store_true", help="run the tuner in this process, no service")
    parser.add_argument("--steps", type=int, default=3000, help="step budget, exploration included")
    parser.add_argument("--logdir", help="log the metrics, lrtune's included, to a CSV logger here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model: one thread is fastest
    train_set, val_set = digits()
    data = ReplayLoader(DataLoader(train_set, batch_size=64, shuffle=True))
    module = DigitsModule()
    tuner = AutoLRSLightningCallback(
        None if args.local else args.url, min_lr=1e-3, max_lr=1.0, total_steps=args.steps, loader=data
    )
    trainer = pl.Trainer(
        max_steps=args.steps,
        max_epochs=-1,
        callbacks=[tuner],
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(args.logdir, name="digits") if args.logdir else False,
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)

    x_val, y_val = val_set.tensors
    with torch.no_grad():
        accuracy = (module.net(x_val).argmax(1) == y_val).float().mean().item()
    print(f"validation accuracy {accuracy:.3f} after {trainer.global_step} steps")
    return accuracy


if __name__ == "__main__":
    main()
