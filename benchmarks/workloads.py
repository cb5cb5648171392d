"""Benchmark workloads: real data that ships offline, small models that train on a 2-core CPU.

Every workload has three splits: ``train`` (what the optimizer sees), ``tune`` (the only split any tuner,
range test or grid search may look at) and ``test`` (read only when scoring).

* ``digits-mlp``: scikit-learn's bundled 8x8 digits, an MLP.
* ``fmnist-mlp`` and ``fmnist-cnn``: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
  (IDX files under ``/usr/share/datasets/fashion-mnist/``), an MLP and a small CNN.
* ``charlm``: a small character-level transformer on the text of CPython's ``pydoc_data.topics``; the last
  10% of the text is held out (its first half is ``tune``, its second half ``test``).

The long-horizon set (``LONG_WORKLOADS``, 20k-50k steps, training data seen at most about twice, so that the
schedule matters rather than overfitting):

* ``teacher-student``: a fixed random teacher MLP labels fresh Gaussian inputs every step; a smaller student MLP
  learns it. ``tune`` and ``test`` are fixed samples from the same teacher.
* ``stdlib-lm``: a byte-level transformer on the Python sources of Debian's ``libpython3.11-stdlib`` and
  ``libpython3.11-minimal`` (``/usr/lib/python3.11``, about 11 MB), seen about once.

The selection set (``SELECTION_WORKLOADS``) is where the tuner's own constants are chosen, so that they are not
chosen on the workloads the benchmark reports. Its results are published as they are, never as evaluation:

* ``perl-gru``: a byte-level GRU language model on Perl's core modules (Debian's ``perl-modules``, about 10 MB
  under ``/usr/share/perl/5.*``), seen less than once: another corpus and another architecture than the
  evaluation's language models.
* ``digits-cnn``: a small CNN on scikit-learn's digits (the data of ``digits-mlp``, another model and split).
* ``fmnist-linear``: softmax regression on Fashion-MNIST (the data of ``fmnist-mlp``): a convex problem.
* ``teacher-student-deep``: a deeper student learns a deeper teacher with five classes, fresh samples every step,
  5k steps.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
STDLIB_DIR = Path("/usr/lib/python3.11")  # Debian packages libpython3.11-stdlib and libpython3.11-minimal


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
        stream: Where set, the source of training batches instead of ``train`` (fresh samples every step):
            called with a seed, it returns an endless iterator of ``(x, y)`` batches; ``train`` is then empty.
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
    stream: Callable[[int], Iterator[tuple[Tensor, Tensor]]] | None = None

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
        """An endless, seeded stream of training batches (``stream``'s, or ``train`` reshuffled every epoch)."""
        if self.stream is not None:
            return self.stream(seed)
        return self._epochs(seed)

    def _epochs(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
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

    mask: Tensor  # the causal mask, a non-persistent buffer of shape (context, context)

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


def _mlp(widths: list[int]) -> nn.Sequential:
    """ReLU MLP through ``widths`` (input, hidden..., output)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


TEACHER_WIDTHS = [32, 256, 256, 10]
TEACHER_SEED = 1234  # the teacher is one fixed network, whatever the run's seed
TEACHER_LOGIT_STD = 4.0  # scale of the teacher's logits: sets how noisy its labels are
TUNE_SEED, TEST_SEED = 1_000_001, 1_000_002  # far from the run seeds that drive the training streams


class Teacher:
    """A fixed random MLP that labels Gaussian inputs by sampling a class from its softmax.

    Args:
        widths: Layer widths, input first, number of classes last.
        seed: Seed of its weights (independent of the global RNG).
        logit_std: Standard deviation of its logits over the input distribution (nats); smaller is noisier.
    """

    def __init__(self, widths: list[int], seed: int, logit_std: float) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = _mlp(widths).requires_grad_(False)
            probe = torch.randn(8192, widths[0])
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        scale = logit_std / float(self.net(probe).std())
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        self.in_dim = widths[0]

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` inputs, shape (n, in_dim), and their sampled labels, shape (n,), drawn from ``gen``."""
        x = torch.randn(n, self.in_dim, generator=gen)
        probs = torch.softmax(self.net(x), dim=-1)
        return x, torch.multinomial(probs, 1, generator=gen).squeeze(1)

    def entropy(self, x: Tensor) -> float:
        """Mean entropy of the teacher's label distribution at inputs ``x`` (nats): the lowest expected loss."""
        logp = torch.log_softmax(self.net(x), dim=-1)
        return float(-(logp.exp() * logp).sum(-1).mean())


def teacher_student(steps: int = 30_000, batch_size: int = 64, student_width: int = 128) -> Workload:
    """A student MLP (two hidden layers of ``student_width``) learns a fixed, wider random teacher MLP.

    Every training batch is fresh: inputs x ~ N(0, I) of 32 dimensions, labels sampled from the teacher's softmax
    (10 classes), so nothing is seen twice and the final loss measures the schedule, not overfitting. ``tune``
    (4096) and ``test`` (16384) are fixed samples; the teacher's own entropy on them, 0.75 nats, is the loss floor
    (an AdamW cosine schedule at a peak of 1e-3 ends near 0.93). About 40 s per run on one CPU thread.
    """
    teacher = Teacher(TEACHER_WIDTHS, TEACHER_SEED, TEACHER_LOGIT_STD)
    student = [TEACHER_WIDTHS[0], student_width, student_width, TEACHER_WIDTHS[-1]]
    return _teacher_student("teacher-student", teacher, student, steps, batch_size, eval_examples=2048)


def _teacher_student(
    name: str, teacher: Teacher, student: list[int], steps: int, batch_size: int, eval_examples: int = 1000
) -> Workload:
    """A student MLP of layer widths ``student`` learns ``teacher`` from fresh samples every step.

    ``tune`` (4096) and ``test`` (16384) are fixed samples of the teacher; ``train`` is empty.
    """
    tune = Split(*teacher.sample(4096, torch.Generator().manual_seed(TUNE_SEED)))
    test = Split(*teacher.sample(16384, torch.Generator().manual_seed(TEST_SEED)))
    empty = Split(torch.empty(0, teacher.in_dim), torch.empty(0, dtype=torch.long))

    def stream(seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        while True:
            yield teacher.sample(batch_size, gen)

    def model() -> nn.Module:
        return _mlp(student)

    return Workload(
        name,
        empty,
        tune,
        test,
        batch_size=batch_size,
        steps=steps,
        make_model=model,
        eval_examples=eval_examples,
        stream=stream,
    )


def stdlib_corpus(root: Path = STDLIB_DIR) -> tuple[bytes, bytes, bytes]:
    """The Python sources under ``root`` (tests excluded), as (train, tune, test) bytes.

    Files are read in sorted order and joined by newlines; a file goes to ``tune`` or ``test`` by a hash of its
    relative path (about 3% each), so held-out text comes from modules the model never trains on.
    """
    if not (root / "os.py").exists():
        raise FileNotFoundError(
            f"Python sources not found under {root}: install the Debian packages libpython3.11-stdlib and "
            "libpython3.11-minimal"
        )
    skip = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
    return _split_by_file(root, "*.py", 40, skip)


def _split_by_file(
    root: Path, pattern: str, one_in: int, skip: frozenset[str] = frozenset()
) -> tuple[bytes, bytes, bytes]:
    """The files matching ``pattern`` under ``root`` as (train, tune, test) bytes, each file whole in one split.

    Files are read in sorted order and joined by newlines; a hash of its relative path sends one file in ``one_in``
    to ``tune`` and one to ``test``. Files under a directory named in ``skip`` are left out.
    """
    parts: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    for path in sorted(root.rglob(pattern)):
        rel = path.relative_to(root)
        if skip & set(rel.parts):
            continue
        bucket = zlib.crc32(str(rel).encode()) % one_in
        parts[1 if bucket == 0 else 2 if bucket == 1 else 0].append(path.read_bytes())
    train, tune, test = (b"\n".join(p) for p in parts)
    return train, tune, test


def _byte_windows(text: bytes, context: int, limit: int | None = None) -> Split:
    """Non-overlapping windows of ``context`` bytes, inputs and next-byte targets, shape (windows, context).

    Both are views of one int64 tensor; ``limit`` keeps that many windows spread evenly over the text.
    """
    ids = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    n = (len(ids) - 1) // context
    x, y = ids[: n * context].view(n, context), ids[1 : n * context + 1].view(n, context)
    if limit is not None and limit < n:
        keep = torch.linspace(0, n - 1, limit).long()
        x, y = x[keep], y[keep]
    return Split(x, y)


def byte_lm(
    name: str,
    texts: tuple[bytes, bytes, bytes],
    context: int,
    held_out: tuple[int, int],
    batch_size: int,
    steps: int,
    make_model: Callable[[], nn.Module],
    eval_examples: int,
) -> Workload:
    """A byte-level language model on (train, tune, test) texts, in non-overlapping windows of ``context`` bytes.

    ``held_out`` is how many windows ``tune`` and ``test`` keep, spread over their texts; ``train`` keeps them all.
    """
    train_text, tune_text, test_text = texts
    return Workload(
        name,
        _byte_windows(train_text, context),
        _byte_windows(tune_text, context, held_out[0]),
        _byte_windows(test_text, context, held_out[1]),
        batch_size=batch_size,
        steps=steps,
        make_model=make_model,
        classification=False,
        eval_examples=eval_examples,
    )


def stdlib_lm(
    steps: int = 20_000, batch_size: int = 16, context: int = 32, width: int = 32, layers: int = 1
) -> Workload:
    """A byte-level transformer LM on the Python standard library's sources (``stdlib_corpus``).

    About 10.3 MB of training text (321k non-overlapping windows of ``context`` bytes); ``steps`` x
    ``batch_size`` windows cover it about once. ``tune`` keeps 2048 windows and ``test`` 4096, spread over the
    held-out modules (about 340 KB each). The model is ``CharTransformer`` over 256 byte values, one layer of
    width 32: about 85 s per run on one CPU thread.
    """

    def model() -> nn.Module:
        return CharTransformer(256, context, width=width, layers=layers, heads=2)

    return byte_lm("stdlib-lm", stdlib_corpus(), context, (2048, 4096), batch_size, steps, model, eval_examples=512)


def digits_cnn() -> Workload:
    """A small CNN on scikit-learn's digits (another split of the data than ``digits-mlp``'s)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    train, tune, test = _split_three(x, y, 300, 497, seed=1)

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )

    return Workload("digits-cnn", train, tune, test, batch_size=32, steps=1200, make_model=model, eval_examples=300)


def fmnist_linear() -> Workload:
    """Softmax regression on Fashion-MNIST: a convex problem."""
    train, tune, test = _fmnist()

    def model() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    return Workload("fmnist-linear", train, tune, test, batch_size=128, steps=2000, make_model=model)


class ByteGRU(nn.Module):
    """A one-layer GRU over bytes.

    Args:
        width: Embedding and hidden width.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, width)
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, 256)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits, shape (batch, context, 256), for bytes of shape (batch, context)."""
        h, _ = self.rnn(self.embed(tokens))
        return self.head(h)  # type: ignore[no-any-return]


def perl_corpus() -> tuple[bytes, bytes, bytes]:
    """Perl's core modules (``*.pm`` under ``/usr/share/perl/5.*``) as (train, tune, test) bytes, split by file."""
    roots = [p for p in sorted(Path("/usr/share/perl").glob("5.*")) if p.is_dir() and not p.is_symlink()]
    if not roots:
        raise FileNotFoundError("Perl's core modules not found under /usr/share/perl: install perl-modules")
    return _split_by_file(roots[-1], "*.pm", 20)


def perl_gru(steps: int = 1500, batch_size: int = 32, context: int = 48) -> Workload:
    """A byte-level GRU language model on Perl's core modules (:func:`perl_corpus`), seen less than once."""
    return byte_lm("perl-gru", perl_corpus(), context, (1024, 2048), batch_size, steps, ByteGRU, eval_examples=256)


def teacher_student_deep() -> Workload:
    """A three-hidden-layer student (width 48) learns a three-hidden-layer teacher (width 96), 5 classes, 5k steps."""
    teacher = Teacher([16, 96, 96, 96, 5], seed=4321, logit_std=3.0)
    return _teacher_student("teacher-student-deep", teacher, [16, 48, 48, 48, 5], steps=5000, batch_size=32)


SHORT_WORKLOADS = ("digits-mlp", "fmnist-mlp", "fmnist-cnn", "charlm")
LONG_WORKLOADS = ("teacher-student", "stdlib-lm")
SELECTION_WORKLOADS = ("perl-gru", "digits-cnn", "fmnist-linear", "teacher-student-deep")
WORKLOADS: dict[str, Callable[[], Workload]] = {
    "digits-mlp": digits_mlp,
    "fmnist-mlp": fmnist_mlp,
    "fmnist-cnn": fmnist_cnn,
    "charlm": charlm,
    "teacher-student": teacher_student,
    "stdlib-lm": stdlib_lm,
    "perl-gru": perl_gru,
    "digits-cnn": digits_cnn,
    "fmnist-linear": fmnist_linear,
    "teacher-student-deep": teacher_student_deep,
}
