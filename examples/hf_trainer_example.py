"""Tune the LR of a Hugging Face ``Trainer`` run (a small MLP on the scikit-learn digits) with lrtune.

    lrtune serve &
    python examples/hf_trainer_example.py           # --url http://127.0.0.1:8000
    python examples/hf_trainer_example.py --local   # the tuner in this process
    python examples/hf_trainer_example.py --local --report-to tensorboard --output-dir runs/hf

``callback.attach(trainer)`` hooks the loss of every step and keeps the Trainer's scheduler from touching the LR;
every reporter of ``report_to`` gets ``lrtune/lr``, ``lrtune/phase`` and ``lrtune/rolled_back`` with the loss.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset
from transformers import Trainer, TrainingArguments

from lrtune.client.hf import AutoLRSTrainerCallback


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


class DigitsClassifier(torch.nn.Module):
    """An MLP whose forward returns the loss, as the Trainer expects."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def main(argv: list[str] | None = None) -> float:
    """Train, print the validation accuracy and return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the lrtune service")
    parser.add_argument("--local", action="store_true", help="run the tuner in this process, no service")
    parser.add_argument("--steps", type=int, default=3000, help="step budget, exploration included")
    parser.add_argument("--report-to", default="none", help="the Trainer's reporters, e.g. tensorboard or wandb")
    parser.add_argument("--output-dir", help="the Trainer's output (default: a temporary directory)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model: one thread is fastest
    train_set, val_set = digits()
    rows = [{"x": x, "labels": y} for x, y in zip(*train_set.tensors, strict=True)]
    model = DigitsClassifier()
    with tempfile.TemporaryDirectory() as scratch:
        training_args = TrainingArguments(
            output_dir=args.output_dir or scratch,
            max_steps=args.steps,
            per_device_train_batch_size=64,
            learning_rate=0.1,  # replaced by the tuned LR from the first step on
            report_to=[] if args.report_to == "none" else args.report_to.split(","),
            save_strategy="no",
            logging_steps=max(args.steps // 10, 1),
            disable_tqdm=True,
            use_cpu=True,
            remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=rows)
        tuner = AutoLRSTrainerCallback(
            None if args.local else args.url, min_lr=1e-3, max_lr=1.0, total_steps=args.steps
        )
        tuner.attach(trainer)
        trainer.train()

    x_val, y_val = val_set.tensors
    with torch.no_grad():
        accuracy = (model.net(x_val).argmax(1) == y_val).float().mean().item()
    print(f"validation accuracy {accuracy:.3f} after {trainer.state.global_step} steps")
    return accuracy


if __name__ == "__main__":
    main()
