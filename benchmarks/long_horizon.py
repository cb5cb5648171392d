"""Long-horizon benchmark: 20k-step runs on data seen at most once, where online re-planning should matter most.

    python -m benchmarks.long_horizon                        # 2 workloads, 3 seeds, lrtune + range test + grid
    python -m benchmarks.long_horizon --steps 30000 --workloads teacher-student --seeds 1

Running today's short workloads ten times longer would measure overfitting, not schedules. Here the training
data is never (teacher-student) or at most about once (the language model) seen again, so the final loss is set
by the LR schedule:

* ``teacher-student``: ``benchmarks.workloads.teacher_student``: a fixed random teacher MLP (32 inputs, two
  hidden layers of 256, 10 classes, seeded) labels fresh Gaussian inputs every step by sampling its softmax; a
  student MLP (two hidden layers of 128) learns it from batches of 64. Nothing is ever seen twice. ``tune``
  (4096) and ``test`` (16384) are fixed samples with their own seeds; the training objective is measured on a
  third fixed sample of 16384 (same distribution as ``test``: here both objectives agree up to sampling noise,
  which is the point of the workload: there is nothing to overfit).
* ``stdlib-byte-mlp``: a byte-level language model on the Python sources of the standard library on the local
  disk (``benchmarks.workloads.stdlib_corpus``: ``/usr/lib/python3.11``, ``*.py`` in sorted order, tests
  excluded, about 10 MB of training text; whole modules held out by a hash of their path for ``tune`` and
  ``test``). The model predicts each byte from the 8 bytes before it (byte embeddings of 16, concatenated, one
  hidden ReLU layer of 64, 256 outputs): a step costs less than half of the harness's small transformer on one
  CPU thread, which is what lets the whole grid fit. 8 windows of 32 bytes per step: 20k steps read about half
  of the training text, each window at most once. The training objective is measured on 4096 training windows
  spread evenly over the text.

Methods: lrtune's ``default`` and ``plan`` presets, the LR range test + cosine, and the grid oracle exactly as
``benchmarks.methods`` defines it (24 trials: 8 peak LRs x cosine/linear/WSD, the trial with the lowest final
``tune`` loss per seed). Every method trains the same model from the same initialization on the same batch
stream for exactly ``--steps`` optimizer steps, exploration and rolled-back steps included; the tuner's settings
are those of every other benchmark. The report gives the final training and validation (``test``) loss of each
method as a multiple of the oracle's (paired by seed, geometric mean over seeds) and the share of the budget
lrtune rolled back.

Raw results are appended to ``<out>/raw.jsonl`` as each run finishes, so an interrupted run resumes where it
stopped (``--fresh`` starts over); ``summary.json``, ``report.md`` and the plots are rewritten at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import run as harness
from benchmarks.methods import GRID_PEAKS, GRID_SHAPES, Method, all_methods
from benchmarks.report import code_version, geomean, grid_spread, plots, with_oracle
from benchmarks.workloads import (
    STDLIB_DIR,
    Split,
    Teacher,
    Workload,
    _byte_windows,
    byte_lm,
    stdlib_corpus,
    teacher_student,
)

STEPS = 20_000
OUT = Path("benchmarks/results/long_horizon")
TRAIN_PROBE_SEED = 1_000_003  # the teacher-student's training-objective sample (tune and test use ..01, ..02)
LRTUNE = ("lrtune-default", "lrtune-greedy", "lrtune-plan-power")
DEFAULT_METHODS = (*LRTUNE, "range-test-cosine")  # and every grid trial
SHOWN = (
    *LRTUNE,
    "range-test-cosine",
    "schedulefree-adamw",
    "prodigy-cosine",
    "grid-oracle",
)


@dataclass
class LongWorkload:
    """A workload of the long-horizon set and what its report states about it.

    Attributes:
        workload: The harness's workload (budget, splits, model, batch stream).
        train_probe: A fixed sample of the training distribution: the final training loss is measured on it.
        data: One sentence on the data and how often the budget sees it.
        passes: Training examples the budget reads, as a multiple of the training set (None: fresh samples).
    """

    workload: Workload
    train_probe: Split
    data: str
    passes: float | None


class WindowByteMLP(nn.Module):
    """A byte-level language model that predicts each byte from the ``order`` bytes before it.

    Args:
        order: Bytes of context per prediction (positions before the window's start are padded with byte 0).
        emb: Width of a byte's embedding.
        hidden: Width of the hidden ReLU layer.
    """

    def __init__(self, order: int = 8, emb: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.order = order
        self.embed = nn.Embedding(256, emb)
        self.body = nn.Sequential(nn.Linear(order * emb, hidden), nn.ReLU(), nn.Linear(hidden, 256))

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits, shape (batch, context, 256), for bytes of shape (batch, context)."""
        b, n = tokens.shape
        e = self.embed(nn.functional.pad(tokens, (self.order - 1, 0)))  # (b, n + order - 1, emb)
        windows = e.unfold(1, self.order, 1)  # (b, n, emb, order): position i sees bytes i - order + 1 .. i
        return self.body(windows.reshape(b, n, -1))  # type: ignore[no-any-return]


def teacher_student_long(steps: int = STEPS) -> LongWorkload:
    """The harness's teacher-student workload on a budget of ``steps``, with its training-objective sample."""
    w = teacher_student(steps=steps)
    teacher = _teacher_of(w)
    probe = Split(*teacher.sample(16384, torch.Generator().manual_seed(TRAIN_PROBE_SEED)))
    data = (
        f"fresh teacher samples every step: {steps:,} batches of {w.batch_size} = {steps * w.batch_size:,} "
        "examples, none seen twice (the kept run; rolled-back candidates replay their stage's batches)"
    )
    return LongWorkload(w, probe, data, None)


def _teacher_of(w: Workload) -> Teacher:
    """The teacher behind ``teacher_student``'s stream, rebuilt from its fixed seed (checked on ``tune``)."""
    from benchmarks.workloads import TEACHER_LOGIT_STD, TEACHER_SEED, TEACHER_WIDTHS, TUNE_SEED

    teacher = Teacher(TEACHER_WIDTHS, TEACHER_SEED, TEACHER_LOGIT_STD)
    x, y = teacher.sample(len(w.tune), torch.Generator().manual_seed(TUNE_SEED))
    if not (torch.equal(x, w.tune.x) and torch.equal(y, w.tune.y)):
        raise RuntimeError("the rebuilt teacher does not reproduce the workload's tune split")
    return teacher


def stdlib_byte_mlp(
    steps: int = STEPS, batch_size: int = 8, context: int = 32, order: int = 8, emb: int = 16, hidden: int = 64
) -> LongWorkload:
    """A ``WindowByteMLP`` language model on the standard library's sources (``stdlib_corpus``).

    ``tune`` keeps 2048 windows and ``test`` 4096, spread over the held-out modules; the training objective is
    measured on 4096 windows spread over the training text (windows the run may or may not have read).
    """
    texts = stdlib_corpus()
    train_text, tune_text, test_text = texts

    def model() -> nn.Module:
        return WindowByteMLP(order, emb, hidden)

    w = byte_lm("stdlib-byte-mlp", texts, context, (2048, 4096), batch_size, steps, model, eval_examples=512)
    probe = _byte_windows(train_text, context, 4096)
    passes = steps * batch_size / len(w.train)
    data = (
        f"Python sources under {STDLIB_DIR} (`*.py`, sorted, tests excluded): {len(train_text) / 1e6:.2f} MB of "
        f"training text ({len(w.train):,} windows of {context} bytes), {len(tune_text) / 1e6:.2f} MB held out for "
        f"tune and {len(test_text) / 1e6:.2f} MB for test (whole modules); the budget reads {passes:.0%} of the "
        "training windows, each at most once"
    )
    return LongWorkload(w, probe, data, passes)


LONG: dict[str, Callable[[int], LongWorkload]] = {
    "teacher-student": teacher_student_long,
    "stdlib-byte-mlp": stdlib_byte_mlp,
}


def methods_for(selection: list[str] | None) -> list[Method]:
    """The methods to run: by default lrtune (default, greedy, the power-law plan), the range test and every grid trial.

    Args:
        selection: Method names or families of ``benchmarks.methods.all_methods`` (None: the default set).
    """
    every = all_methods()
    if not selection:
        return [m for m in every if m.name in DEFAULT_METHODS or m.family == "grid"]
    unknown = set(selection) - {m.name for m in every} - {m.family for m in every}
    if unknown:
        raise ValueError(f"unknown methods or families: {', '.join(sorted(unknown))}")
    return [m for m in every if m.name in selection or m.family in selection]


def run_one(lw: LongWorkload, method: Method, seed: int) -> dict[str, Any]:
    """Run ``method`` on the workload with ``seed`` through the harness; add the long-horizon figures.

    Returns:
        ``benchmarks.run.RunResult.to_dict()`` with ``train_loss`` (final model on the training-objective
        sample), ``budget`` (the steps asked for) and ``rolled_back_share`` (steps the tuner rolled back, or the
        range test's discarded sweep, over the budget; 0 for a fixed schedule).
    """
    built: list[nn.Module] = []
    states: list[dict[str, Any]] = []

    def make_model() -> nn.Module:
        model = lw.workload.make_model()
        built.append(model)
        return model

    workload = dataclasses.replace(lw.workload, make_model=make_model)
    harness.STATE_HOOK.append(states.append)
    try:
        result = harness.run(workload, method, seed).to_dict()
    finally:
        harness.STATE_HOOK.remove(states.append)
    train_loss, _ = workload.evaluate(built[-1], lw.train_probe)
    if states:
        rolled = states[-1]["wasted_steps"] / workload.steps
    else:  # the range test restarts from the initialization: its sweep is thrown away
        rolled = result["explore_share"] if method.family == "range-test" else 0.0
    return {
        **result,
        "train_loss": train_loss if math.isfinite(train_loss) else None,
        "budget": workload.steps,
        "rolled_back_share": rolled,
    }


def _num(v: Any) -> float:
    return math.inf if v is None else float(v)


def summarize_long(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per workload and method: median losses and each objective as a multiple of the grid oracle's.

    The oracle is ``benchmarks.report.with_oracle``'s: per seed, the grid trial with the lowest final ``tune``
    loss (the same pick for both objectives). A method's ratio is the geometric mean over seeds of its loss over
    the oracle's loss on the same seed.

    Returns:
        ``{workload: {method: {...}}}``.
    """
    rows = with_oracle(rows)
    by: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["workload"]][r["method"]].append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for workload, methods in by.items():
        oracle = {r["seed"]: r for r in methods.get("grid-oracle", [])}
        table: dict[str, dict[str, Any]] = {}
        for name, runs in methods.items():
            stats: dict[str, Any] = {"family": runs[0]["family"], "seeds": len(runs)}
            for key in ("train_loss", "tune_loss", "test_loss"):
                stats[key] = statistics.median(_num(r[key]) for r in runs)
                paired = [_num(r[key]) / _num(oracle[r["seed"]][key]) for r in runs if r["seed"] in oracle]
                stats[f"{key}_vs_oracle"] = geomean(paired)
            stats["rolled_back_share"] = statistics.median(r["rolled_back_share"] for r in runs)
            stats["explore_share"] = statistics.median(r["explore_share"] for r in runs)
            stats["steps"] = sorted({r["steps"] for r in runs})
            stats["wall_s"] = statistics.median(r["wall_s"] for r in runs)
            stats["cpu_s"] = statistics.median(_num(r.get("cpu_s")) for r in runs)
            stats["cost_runs"] = runs[0]["cost_runs"]
            if name == "grid-oracle":
                stats["picked"] = sorted(r["picked"] for r in runs)
            table[name] = stats
        out[workload] = table
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else "diverged"
    return str(v)


def _ratio(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if math.isfinite(v) else "diverged"


def _order(table: dict[str, dict[str, Any]]) -> list[str]:
    return [m for m in SHOWN if m in table] + sorted(
        m for m in table if m not in SHOWN and table[m]["family"] != "grid"
    )


def verdicts(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One sentence per lrtune preset: on which workloads it meets the bar (at most the oracle's loss)."""
    lines = []
    for name in LRTUNE:
        for key, label in (("test_loss", "validation (test)"), ("train_loss", "training")):
            have = [w for w, t in summary.items() if name in t and "grid-oracle" in t]
            if not have:
                continue
            met = [w for w in have if _num(summary[w][name][f"{key}_vs_oracle"]) <= 1.0]
            missed = [f"{w} {summary[w][name][f'{key}_vs_oracle']:.3f}x" for w in have if w not in met]
            lines.append(
                f"- {name}, {label} loss: at most the oracle's (<= 1.00x) on {len(met)} of {len(have)} workloads"
                + (f" ({', '.join(met)})" if met else "")
                + (f"; above it on {', '.join(missed)}" if missed else "")
                + "."
            )
    return lines


def markdown_long(
    summary: dict[str, dict[str, dict[str, Any]]],
    meta: dict[str, Any],
    data: dict[str, str],
    grid: dict[str, dict[str, Any]],
) -> str:
    """The report: set-up, the headline ratios, the verdicts, then one table per workload."""
    workloads = list(summary)
    full = meta["grid_trials"] == len(GRID_PEAKS) * len(GRID_SHAPES)
    grid_note = "8 peak LRs x cosine/linear/WSD" if full else "a subset of the harness's 24-trial grid"
    lines = ["# lrtune long-horizon benchmark", ""]
    lines += [
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        f"Load average (1, 5, 15 min): {meta['load_start']} at the start, {meta['load_end']} at the end  ",
        f"Date: {meta['date']}  ",
        f"Code: commit {meta['code']}  ",
        f"Wall time: {meta['wall_s'] / 60:.1f} min for the {meta['runs_now']} runs of this invocation "
        f"({meta['runs_total']} runs in the report)  ",
        f"Budget: {meta['steps']} optimizer steps per run, every exploration and rolled-back step included; "
        f"seeds: {meta['seeds']} (paired: same initialization and batch stream for every method)",
        "",
        "Data:",
        "",
    ]
    lines += [f"- {w}: {data.get(w, '—')}." for w in workloads]
    lines += [
        "",
        f"The grid oracle is the best of {meta['grid_trials']} full trainings ({grid_note}), "
        "picked per seed by the final `tune` loss; it costs that many budgets. Validation loss is on the `test` "
        "split, which no method looks at; training loss is on a fixed sample of the training distribution. Ratios: "
        "loss over the oracle's on the same seed, geometric mean over seeds (lower is better; <= 1.00 meets the "
        "oracle). Rolled back: share of the budget whose steps the final model does not descend from (lrtune's "
        "rolled-back candidates and sweep; the range test's sweep).",
        "",
        "## Final loss as a multiple of the grid oracle's (validation / training)",
        "",
        "| method | " + " | ".join(workloads) + " |",
        "|---|" + "---:|" * len(workloads),
    ]
    for name in [m for m in SHOWN if m != "grid-oracle" and any(m in summary[w] for w in workloads)]:
        cells = []
        for w in workloads:
            s = summary[w].get(name)
            cells.append(
                "—" if s is None else f"{_ratio(s['test_loss_vs_oracle'])} / {_ratio(s['train_loss_vs_oracle'])}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *verdicts(summary), ""]
    for w in workloads:
        table = summary[w]
        lines += [
            f"## {w}",
            "",
            "| method | val (test) loss | train loss | tune loss | val vs oracle | train vs oracle | rolled back | "
            "explore | steps | wall s | cpu s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in _order(table):
            s = table[name]
            cost = f" (x{s['cost_runs']})" if s["cost_runs"] > 1 else ""
            lines.append(
                f"| {name} | {_fmt(s['test_loss'])} | {_fmt(s['train_loss'])} | {_fmt(s['tune_loss'])} | "
                f"{_ratio(s['test_loss_vs_oracle'])} | {_ratio(s['train_loss_vs_oracle'])} | "
                f"{s['rolled_back_share']:.1%} | {s['explore_share']:.1%} | {'/'.join(map(str, s['steps']))} | "
                f"{_fmt(s['wall_s'], 3)}{cost} | {_fmt(s['cpu_s'], 3)} |"
            )
        oracle = table.get("grid-oracle")
        if oracle:
            lines += ["", f"Oracle picks (per seed): {', '.join(oracle['picked'])}."]
        g = grid.get(w)
        if g:
            worst = g["worst"]["test_loss"] / g["best"]["test_loss"]
            shapes = ", ".join(
                f"{shape} {s['test_loss'] / g['best']['test_loss']:.3f}x ({s['peak_lr']:.1e})"
                for shape, s in sorted(g["shapes"].items())
            )
            lines += [
                "",
                f"Grid spread (median validation loss over seeds): best trial {g['best']['method']} "
                f"({_fmt(g['best']['test_loss'])}); worst {worst:.3f}x; best per shape {shapes}; "
                f"{g['diverged']} diverged.",
            ]
        lines += ["", f"![{w}]({w}.png)", ""]
    lines += [
        "Medians over seeds in the per-workload tables; method rows first, the oracle's own row shows its pick's "
        "losses (its wall time is the whole grid's).",
        "",
    ]
    return "\n".join(lines)


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run what is missing (printing one line per run), write the results; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_horizon", description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=sorted(LONG), default=list(LONG))
    parser.add_argument("--seeds", type=int, default=3, help="number of paired seeds")
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps per run (every method)")
    parser.add_argument("--methods", nargs="+", help="method names or families (default: lrtune, range test, grid)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT})")
    parser.add_argument("--fresh", action="store_true", help="ignore earlier raw results in the folder")
    args = parser.parse_args(argv)

    started, load_start = time.perf_counter(), _load()
    torch.set_num_threads(args.threads)
    try:
        methods = methods_for(args.methods)
    except ValueError as exc:
        parser.error(str(exc))
    seeds = list(range(args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    raw_path = args.out / "raw.jsonl"
    if args.fresh and raw_path.exists():
        raw_path.unlink()
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if raw_path.exists():
        for line in raw_path.read_text().splitlines():
            row = json.loads(line)
            if row.get("budget") == args.steps:
                done[(row["workload"], row["method"], row["seed"])] = row

    built = {name: LONG[name](args.steps) for name in args.workloads}
    # Seed by seed, lrtune first: partial results are already paired and show lrtune early.
    ordered = sorted(methods, key=lambda m: (m.family == "grid", m.name not in LRTUNE))
    plan = [(w, m, s) for s in seeds for w in args.workloads for m in ordered if (w, m.name, s) not in done]
    print(f"{len(plan)} runs to do ({len(done)} already in {raw_path}); load average {load_start}", flush=True)
    with raw_path.open("a") as raw:
        for i, (w, method, seed) in enumerate(plan, 1):
            row = run_one(built[w], method, seed)
            raw.write(json.dumps(row) + "\n")
            raw.flush()
            done[(w, method.name, seed)] = row
            print(
                f"[{i}/{len(plan)}] {w} {method.name} seed {seed}: val {_fmt(row['test_loss'])} "
                f"train {_fmt(row['train_loss'])} steps {row['steps']} rolled back {row['rolled_back_share']:.1%} "
                f"in {row['wall_s']:.1f} s (elapsed {time.perf_counter() - started:.0f} s)",
                flush=True,
            )

    names = {m.name for m in methods}
    rows = [r for (w, m, s), r in done.items() if w in built and m in names and s in seeds]
    summary = summarize_long(rows)
    grid = grid_spread(rows)
    command = "python -m benchmarks.long_horizon " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} torch thread(s); the cores are shared with other jobs",
        "code": code_version(),
        "load_start": load_start,
        "load_end": _load(),
        "wall_s": time.perf_counter() - started,
        "runs_now": len(plan),
        "runs_total": len(rows),
        "steps": args.steps,
        "seeds": len(seeds),
        "grid_trials": sum(1 for m in methods if m.family == "grid"),
    }
    data = {name: lw.data for name, lw in built.items()}
    (args.out / "summary.json").write_text(
        json.dumps({"meta": meta, "data": data, "summary": summary, "grid": grid}, indent=1, default=str) + "\n"
    )
    (args.out / "report.md").write_text(markdown_long(summary, meta, data, grid))
    written = plots(rows, args.out)
    print(f"wrote {args.out / 'report.md'}, {args.out / 'summary.json'}, {len(written)} plots; raw runs in {raw_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
