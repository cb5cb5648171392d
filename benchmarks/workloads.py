"""Benchmark workloads: real data that ships offline, small models that train on a 2-core CPU.

Every workload has three splits: ``train`` (what the optimizer sees), ``tune`` (the only split any tuner,
range test or grid search may look at) and ``test`` (read only when scoring).

* ``digits-mlp``: scikit-learn's bundled 8x8 digits, an MLP.
* ``fmnist-mlp`` and ``fmnist-cnn``: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
  (IDX files under ``/usr/share/datasets/fashion-mnist/``), an MLP and a small CNN.
* ``charlm``: a small character-level transformer on the text of CPython's ``pydoc_data.topics``; the last
  10% of the text is held out (its first half is ``tune``, its second half ``test``).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Split:
    """Inputs and targets of one split (first dimension: examples)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Workload:
    """A dataset, a model and a step budget.

    Attributes:
        name: Short name used in reports.
        train: Training split.
        tune: Validation split for tuners.
        test: Held-out split for scoring only.
        batch_size: Training batch size.
        steps: Gradient-step budget of every method.
        make_model: Builds a fresh model (call after seeding torch).
        classification: Whether accuracy is reported.
        eval_examples: Examples of ``tune`` used for the cheap validation loss a tuner sees.
    """

    name: str
    train: Split
    tune: Split
    test: Split
    batch_size: int
    steps: int
    make_model: Callable[[], nn.Module]
    classification: bool = True
    eval_examples: int = 1000

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy of a batch; for the language model over every position."""
        out = model(x)
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: Split, limit: int | None = None) -> tuple[float, float | None]:
        """Mean loss (and accuracy for classifiers) over a split, in batches; non-finite loss gives inf."""
        was_training = model.training
        model.eval()
        n = len(split) if limit is None else min(limit, len(split))
        total, correct, count = 0.0, 0, 0
        for start in range(0, n, 512):
            x, y = split.x[start : min(n, start + 512)], split.y[start : min(n, start + 512)]
            out = model(x)
            flat = out.reshape(-1, out.shape[-1])
            total += float(nn.functional.cross_entropy(flat, y.reshape(-1), reduction="sum"))
            count += y.numel()
            if self.classification:
                correct += int((flat.argmax(-1) == y.reshape(-1)).sum())
        model.train(was_training)
        loss = total / count
        return (loss if math.isfinite(loss) else math.inf), (correct / count if self.classification else None)

    def batches(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """An endless, seeded stream of training batches (reshuffled every epoch)."""
        gen = torch.Generator().manual_seed(seed)
        n = len(self.train)
        while True:
            order = torch.randperm(n, generator=gen)
            for start in range(0, n - self.batch_size + 1, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield self.train.x[idx], self.train.y[idx]


def _split_three(x: Tensor, y: Tensor, n_tune: int, n_test: int, seed: int = 0) -> tuple[Split, Split, Split]:
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    a, b = len(y) - n_tune - n_test, len(y) - n_test
    return Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:])


def digits_mlp() -> Workload:
    """MLP on scikit-learn's digits (1797 images of 8x8)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    train, tune, test = _split_three(x, y, 300, 497)

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    return Workload("digits-mlp", train, tune, test, batch_size=32, steps=1500, make_model=model)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fmnist() -> tuple[Split, Split, Split]:
    if not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(
            f"Fashion-MNIST not found under {FMNIST_DIR}: install the Debian package dataset-fashion-mnist "
            "(the benchmark's set-up does: ./dev bench)"
        )
    xtr = torch.tensor(_read_idx(FMNIST_DIR / "train-images-idx3-ubyte.gz"), dtype=torch.float32) / 255.0
    ytr = torch.tensor(_read_idx(FMNIST_DIR / "train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.tensor(_read_idx(FMNIST_DIR / "t10k-images-idx3-ubyte.gz"), dtype=torch.float32) / 255.0
    yte = torch.tensor(_read_idx(FMNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    mean, std = 0.2860, 0.3530
    xtr, xte = ((xtr - mean) / std).unsqueeze(1), ((xte - mean) / std).unsqueeze(1)
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(0))
    tune_idx, train_idx = perm[:5000], perm[5000:]
    return Split(xtr[train_idx], ytr[train_idx]), Split(xtr[tune_idx], ytr[tune_idx]), Split(xte, yte)


def fmnist_mlp() -> Workload:
    """MLP on Fashion-MNIST."""
    train, tune, test = _fmnist()

    def model() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))

    return Workload("fmnist-mlp", train, tune, test, batch_size=64, steps=3000, make_model=model)


def fmnist_cnn() -> Workload:
    """A small CNN on Fashion-MNIST."""
    train, tune, test = _fmnist()

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    return Workload("fmnist-cnn", train, tune, test, batch_size=64, steps=1500, make_model=model, eval_examples=1000)


class CharTransformer(nn.Module):
    """A small causal transformer over characters.

    Args:
        vocab: Vocabulary size.
        context: Sequence length.
        width: Model width.
        layers: Transformer layers.
        heads: Attention heads.
    """

    def __init__(self, vocab: int, context: int, width: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(context, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        mask = torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits, shape (batch, context, vocab), for tokens of shape (batch, context)."""
        n = tokens.shape[1]
        h = self.embed(tokens) + self.pos[:n]
        h = self.body(h, mask=self.mask[:n, :n], is_causal=True)
        return self.head(self.norm(h))  # type: ignore[no-any-return]


def charlm(context: int = 48) -> Workload:
    """A character-level transformer LM on CPython's pydoc topics text."""
    import pydoc_data.topics as topics

    text = "\n".join(topics.topics[k] for k in sorted(topics.topics))
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    cut = int(len(ids) * 0.9)
    mid = cut + (len(ids) - cut) // 2

    def windows(seq: Tensor, stride: int) -> Split:
        starts = torch.arange(0, len(seq) - context - 1, stride)
        x = torch.stack([seq[s : s + context] for s in starts.tolist()])
        y = torch.stack([seq[s + 1 : s + context + 1] for s in starts.tolist()])
        return Split(x, y)

    train = windows(ids[:cut], context // 2)
    tune, test = windows(ids[cut:mid], context), windows(ids[mid:], context)
    vocab = len(chars)

    def model() -> nn.Module:
        return CharTransformer(vocab, context)

    return Workload(
        "charlm",
        train,
        tune,
        test,
        batch_size=32,
        steps=1500,
        make_model=model,
        classification=False,
        eval_examples=300,
    )


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "digits-mlp": digits_mlp,
    "fmnist-mlp": fmnist_mlp,
    "fmnist-cnn": fmnist_cnn,
    "charlm": charlm,
}
