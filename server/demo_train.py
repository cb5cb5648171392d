"""The demo's training side: a small MLP on scikit-learn's digits, driven segment by segment.

:class:`SegmentRunner` does what a worker must do with a segment (see :mod:`lrtune.tuner.segment`): restore, drop
and save snapshots in host memory, set the LR of every step, replay a stage's batches for its candidates,
evaluate validation loss when asked, stop a diverging candidate early, and keep the end state.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lrtune.client.protocol import WireSegment


@dataclass(frozen=True)
class Digits:
    """The digits data set (1797 8x8 images), standardized, split 80/20.

    Attributes:
        x_train: Shape (n_train, 64).
        y_train: Shape (n_train,).
        x_val: Shape (n_val, 64).
        y_val: Shape (n_val,).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @classmethod
    def load(cls, seed: int = 0) -> Digits:
        """Load the data set shipped with scikit-learn (no download)."""
        from sklearn.datasets import load_digits

        data = load_digits()
        x = torch.tensor(data.data, dtype=torch.float32)
        y = torch.tensor(data.target, dtype=torch.long)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        x, y = x[perm], y[perm]
        n_train = int(0.8 * len(x))
        mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
        x = (x - mean) / std
        return cls(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def make_model(seed: int) -> nn.Module:
    """A 64-128-10 MLP with fixed initial weights for ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


class BatchStream:
    """Endless shuffled mini-batches; restartable from a seed (for replaying a stage's batches).

    Args:
        n: Number of training examples.
        batch_size: Examples per batch.
        seed: Seed of the shuffling.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self._gen = torch.Generator().manual_seed(seed)
        self._perm = torch.randperm(n, generator=self._gen)
        self._at = 0

    def next(self) -> torch.Tensor:
        """Indices of the next batch."""
        if self._at + self.batch_size > self.n:
            self._perm = torch.randperm(self.n, generator=self._gen)
            self._at = 0
        idx = self._perm[self._at : self._at + self.batch_size]
        self._at += self.batch_size
        return idx


class SegmentRunner:
    """Trains a model one segment at a time.

    Args:
        data: The data set.
        seed: Seed of the weights and the batch order.
        batch_size: Examples per step.
        momentum: SGD momentum.
    """

    def __init__(self, data: Digits, seed: int = 0, batch_size: int = 32, momentum: float = 0.9) -> None:
        self.data = data
        self.seed = seed
        self.model = make_model(seed)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=momentum)
        self.loss_fn = nn.CrossEntropyLoss()
        self.main = BatchStream(len(data.x_train), batch_size, seed)
        self.replays: dict[int, BatchStream] = {}
        self.batch_size = batch_size
        self.snapshots: dict[str, dict[str, Any]] = {}

    def _save(self) -> dict[str, Any]:
        return {"model": copy.deepcopy(self.model.state_dict()), "opt": copy.deepcopy(self.opt.state_dict())}

    def _load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def val_loss(self) -> float:
        """Loss on the validation split."""
        with torch.no_grad():
            return float(self.loss_fn(self.model(self.data.x_val), self.data.y_val))

    def val_accuracy(self) -> float:
        """Accuracy on the validation split."""
        with torch.no_grad():
            return float((self.model(self.data.x_val).argmax(1) == self.data.y_val).float().mean())

    def run(self, seg: WireSegment) -> tuple[list[float | None], list[float | None] | None]:
        """Run one segment.

        Returns:
            Per-step training losses (None where non-finite) and, when the segment asked, validation losses.
        """
        if seg.restore is not None:
            self._load(self.snapshots[seg.restore])
        for name in seg.drop:
            self.snapshots.pop(name, None)
        if seg.snapshot is not None:
            self.snapshots[seg.snapshot] = self._save()
        stream = self.main
        if seg.replay and seg.candidate is not None and seg.stage is not None:
            stream = BatchStream(len(self.data.x_train), self.batch_size, self.seed * 1000 + seg.stage + 1)
        losses: list[float | None] = []
        vals: list[float | None] = []
        recent: list[float] = []
        self.model.train()
        for j in range(seg.steps):
            lr = seg.lr_at(j)
            for group in self.opt.param_groups:
                group["lr"] = lr
            idx = stream.next()
            loss = self.loss_fn(self.model(self.data.x_train[idx]), self.data.y_train[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            value = float(loss.detach())
            finite = math.isfinite(value)
            losses.append(value if finite else None)
            if seg.eval_every and (j + 1) % seg.eval_every == 0:
                v = self.val_loss()
                vals.append(v if math.isfinite(v) else None)
            recent = [*recent[-(seg.guard_window - 1) :], value]
            if seg.phase == "explore" and (
                not finite or (seg.abort_above is not None and sum(recent) / len(recent) > seg.abort_above)
            ):
                break  # a diverging candidate may stop early
        if seg.keep is not None:
            self.snapshots[seg.keep] = self._save()
        return losses, (vals if seg.eval_every else None)


def train_constant(data: Digits, lr: float, steps: int, seed: int = 0) -> float:
    """Train with a constant LR for ``steps`` steps; return the final validation loss."""
    runner = SegmentRunner(data, seed)
    seg = WireSegment(
        job_id="constant", segment_id=0, phase="schedule", start_step=0, steps=steps, curve_from=lr, curve_to=lr,
    )  # fmt: skip
    runner.run(seg)
    return runner.val_loss()
