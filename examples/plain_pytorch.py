"""Tune the LR of a small MLP on the scikit-learn digits with lrtune, in a plain PyTorch loop.

    lrtune serve &                                 # the service, in-memory store, http://127.0.0.1:8000
    python examples/plain_pytorch.py               # train against it (--url to point elsewhere)
    python examples/plain_pytorch.py --local       # no service: the tuner runs in this process
    python examples/plain_pytorch.py --local --tensorboard runs/plain   # then: tensorboard --logdir runs

Runs in well under two minutes on a laptop CPU. No download: the digits ship with scikit-learn.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from lrtune.client import AutoLRSCallback, ReplayLoader
from lrtune.client.tracking import TensorBoardLog


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


def main(argv: list[str] | None = None) -> float:
    """Train, print the validation accuracy and return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the lrtune service")
    parser.add_argument("--local", action="store_true", help="run the tuner in this process, no service")
    parser.add_argument("--steps", type=int, default=3000, help="step budget, exploration included")
    parser.add_argument("--tensorboard", metavar="DIR", help="write lrtune/lr, lrtune/phase and the loss here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model: one thread is fastest
    train_set, val_set = digits()
    data = ReplayLoader(DataLoader(train_set, batch_size=64, shuffle=True))  # candidates replay the same batches
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x_val, y_val = val_set.tensors
    # The LR, the phase and the loss of every step, written at segment ends; rolled-back steps under their own tag.
    tensorboard = TensorBoardLog(args.tensorboard) if args.tensorboard else None

    cb = AutoLRSCallback(
        model,
        optimizer,
        None if args.local else args.url,
        min_lr=1e-3,
        max_lr=1.0,
        total_steps=args.steps,
        loader=data,
        log_fn=tensorboard,
    )
    while not cb.done:
        for x, y in data:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            cb.on_train_batch_end(loss)
            if cb.done:
                break
    cb.on_train_end()
    if tensorboard is not None:
        tensorboard.close()

    with torch.no_grad():
        accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    where = "in process" if args.local else f"{args.url}/v1/jobs/{cb.job_id}/schedule"
    print(f"validation accuracy {accuracy:.3f} after {cb.step} steps; schedule: {where}")
    return accuracy


if __name__ == "__main__":
    main()
