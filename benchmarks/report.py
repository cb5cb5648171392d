"""Turn raw run results into tables (markdown) and plots (PNG)."""

from __future__ import annotations

import math
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.workloads import LONG_WORKLOADS, SELECTION_WORKLOADS

MAIN_METHODS = (
    "adamw-1e-3-constant",
    "adamw-1e-3-cosine",
    "schedulefree-adamw",
    "prodigy-cosine",
    "range-test-cosine",
    "grid-oracle",
    "lrtune-paper",
    "lrtune-default",
    "lrtune-greedy",
)
LR_FREE = ("schedulefree-adamw", "prodigy-cosine")


def code_version() -> str:
    """The commit the code runs from, flagged where the lrtune or benchmark sources differ from it."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    sources = ("tuner", "client", "server", "benchmarks", ":(exclude)benchmarks/results")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *sources)
    return commit + (" with uncommitted changes to the sources" if dirty else "")


def _num(v: Any) -> float:
    return math.inf if v is None else float(v)


def with_oracle(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add one ``grid-oracle`` row per (workload, seed): the grid trial with the lowest final tuning loss.

    Its wall-clock and cost are those of the whole grid.
    """
    out = [r for r in rows if r["family"] != "grid"]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["family"] == "grid":
            groups[(r["workload"], r["seed"])].append(r)
    for (_, _), trials in sorted(groups.items()):
        best = min(trials, key=lambda r: _num(r["tune_loss"]))
        out.append(
            {
                **best,
                "method": "grid-oracle",
                "family": "oracle",
                "picked": best["method"],
                "wall_s": sum(t["wall_s"] for t in trials),
                "cpu_s": sum(t["cpu_s"] for t in trials) if all(t.get("cpu_s") for t in trials) else None,
                "cost_runs": len(trials),
            }
        )
    return out


def steps_to(curve: list[list[Any]], target: float) -> int | None:
    """First step whose tuning loss is at or below ``target`` (None if never)."""
    for step, loss in curve:
        if loss is not None and loss <= target:
            return int(step)
    return None


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per workload and method: medians, spreads, steps to target and ratios.

    Returns:
        ``{workload: {method: {...}}}``.
    """
    rows = with_oracle(rows)
    by: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["workload"]][r["method"]].append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for workload, methods in by.items():
        oracle_tune = [_num(r["tune_loss"]) for r in methods.get("grid-oracle", [])]
        target = statistics.median(oracle_tune) if oracle_tune else None
        table: dict[str, dict[str, Any]] = {}
        for name, runs in methods.items():
            losses = [_num(r["test_loss"]) for r in runs]
            accs = [r["test_acc"] for r in runs if r["test_acc"] is not None]
            reach = [steps_to(r["curve"], target) for r in runs] if target is not None else []
            reached = [s for s in reach if s is not None]
            table[name] = {
                "family": runs[0]["family"],
                "seeds": len(runs),
                "test_loss": statistics.median(losses),
                "test_loss_min": min(losses),
                "test_loss_max": max(losses),
                "test_acc": statistics.median(accs) if accs else None,
                "steps_to_target": statistics.median(reached) if len(reached) * 2 > len(reach) else None,
                "reached": f"{len(reached)}/{len(reach)}",
                "wall_s": statistics.median(r["wall_s"] for r in runs),
                "cpu_s": statistics.median(r["cpu_s"] for r in runs) if all(r.get("cpu_s") for r in runs) else None,
                "tuner_s": statistics.median(r["tuner_s"] for r in runs) if runs[0].get("tuner_s") else None,
                "explore_share": statistics.median(r["explore_share"] for r in runs),
                "cost_runs": runs[0]["cost_runs"],
                "picked": sorted({r.get("picked", "") for r in runs}) if name == "grid-oracle" else None,
            }
        oracle = table.get("grid-oracle", {}).get("test_loss")
        lr_free = [table[m]["test_loss"] for m in LR_FREE if m in table]
        default = {r["seed"]: _num(r["test_loss"]) for r in methods.get("lrtune-default", [])}
        for name, stats in table.items():
            stats["vs_oracle"] = stats["test_loss"] / oracle if oracle else None
            stats["vs_lr_free"] = stats["test_loss"] / min(lr_free) if lr_free else None
            # Ablations may run on fewer seeds: compare each with the default preset's run on the same seeds.
            paired = [_num(r["test_loss"]) / default[r["seed"]] for r in methods[name] if r["seed"] in default]
            stats["vs_default"] = statistics.median(paired) if paired else None
        out[workload] = table
    return out


def geomean(values: list[float]) -> float | None:
    """Geometric mean of ratios: None for none, inf where any is not a finite positive number."""
    if not values:
        return None
    if not all(math.isfinite(v) and v > 0 for v in values):
        return math.inf
    return math.exp(sum(math.log(v) for v in values) / len(values))


def geomean_ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    """Geometric mean over workloads of each method's test-loss ratio to the oracle."""
    ratios: dict[str, list[float]] = defaultdict(list)
    for table in summary.values():
        for name, stats in table.items():
            if stats["vs_oracle"] is not None and math.isfinite(stats["vs_oracle"]):
                ratios[name].append(stats["vs_oracle"])
    n = len(summary)
    return {m: g for m, vs in ratios.items() if len(vs) == n and (g := geomean(vs)) is not None}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "diverged"
        return f"{v:.{digits}g}"
    return str(v)


def markdown(
    summary: dict[str, dict[str, dict[str, Any]]],
    meta: dict[str, Any],
    grid: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The report: headline table, then one table per workload, the long-horizon set in its own section (with
    ``grid``, the spread of the grid's schedules: see ``grid_spread``), then the ablations."""
    lines = ["# lrtune benchmark", ""]
    lines += [f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ", f"Date: {meta['date']}  "]
    lines += [
        f"Code: commit {meta['code']}; this invocation ran {meta['runs_now']} of the report's "
        f"{meta['runs_total']} runs, the rest were read back from `raw.jsonl`, as earlier invocations ran them "
        "(every run is deterministic; `--fresh` runs them all again)  "
    ]
    lines += [f"Seeds: {meta['seeds']} (paired: same initialization and data order for every method)", ""]
    oracle = (
        f"The grid oracle is the best of {meta['grid_trials']} full trainings (8 peak LRs x cosine/linear/WSD), "
        "chosen by the tuning split; its cost is that many budgets."
        if meta.get("grid_trials")
        else "No grid trainings in this folder: there is no oracle to compare with, and the tables give test losses."
    )
    lines += [
        "Every method has the same budget of gradient steps per workload, and every step counts: lrtune's "
        f"exploration and rolled-back candidates, the range test's sweep. {oracle} Test losses are on a split that "
        "no method looks at while training.",
        "",
    ]
    short = {w: t for w, t in summary.items() if w not in LONG_WORKLOADS}
    long = {w: t for w, t in summary.items() if w in LONG_WORKLOADS}
    if short and set(short) <= set(SELECTION_WORKLOADS):
        lines += [
            "**The selection set, not the evaluation:** the tuner's own constants are chosen on these workloads, "
            "so that they are not chosen on the ones the benchmark reports. These figures show how lrtune does on "
            "workloads it was not developed on.",
            "",
        ]
    if short:
        if meta.get("grid_trials"):
            lines += ["## Headline: median final test loss relative to the grid-tuned oracle (lower is better)", ""]
            lines += _headline(short)
            lines += _ceiling(summary, grid or {}, list(short))
        else:
            lines += ["## Headline: median final test loss (lower is better)", ""]
            lines += _medians(short)
        lines += _verdict(short)
        lines += _grid_table(grid or {}, list(short))
        for workload in short:
            lines += _workload_table(workload, short[workload], "##")
    if long:
        lines += [
            "## Long horizon: 20k-50k steps, training data seen at most about twice",
            "",
            "Fresh teacher samples every step, or a corpus the budget covers about once: the final loss measures "
            "the schedule, not overfitting.",
            "",
            "### Median final test loss relative to the grid-tuned oracle (lower is better)",
            "",
        ]
        lines += _headline(long)
        lines += _verdict(long)
        lines += _grid_table(grid or {}, list(long))
        for workload in long:
            lines += _workload_table(workload, long[workload], "###", cpu=True)
    lines += _ablations(summary, meta)
    return "\n".join(lines) + "\n"


def _medians(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Each main method's median final test loss, workload by workload (where there is no oracle)."""
    workloads = list(summary)
    lines = ["| method | " + " | ".join(workloads) + " |", "|---|" + "---:|" * len(workloads)]
    for name in MAIN_METHODS:
        if any(name in summary[w] for w in workloads):
            cells = [_fmt(summary[w].get(name, {}).get("test_loss"), 4) for w in workloads]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _headline(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Each main method's ratio to the oracle, workload by workload, and their geometric mean."""
    workloads = list(summary)
    geo = geomean_ratios(summary)
    lines = ["| method | " + " | ".join(workloads) + " | geometric mean |", "|---|" + "---:|" * (len(workloads) + 1)]
    for name in MAIN_METHODS:
        if not any(name in summary[w] for w in workloads):
            continue
        cells = [_fmt(summary[w].get(name, {}).get("vs_oracle"), 3) for w in workloads]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(geo.get(name), 3)} |")
    lines.append("")
    return lines


def _workload_table(workload: str, table: dict[str, dict[str, Any]], heading: str, cpu: bool = False) -> list[str]:
    """One workload's table: every method's test loss, steps to the oracle's tuning loss, cost and ratios
    (with ``cpu``, also the CPU seconds of a run, which other jobs on the machine barely change)."""
    lines = [f"{heading} {workload}", ""]
    lines += [
        "| method | test loss (median [min, max]) | test acc | steps to target | wall s | "
        + ("cpu s | " if cpu else "")
        + "explore share | vs oracle | vs best LR-free |",
        "|---|---|---:|---:|---:|" + ("---:|" if cpu else "") + "---:|---:|---:|",
    ]
    names = [m for m in MAIN_METHODS if m in table] + sorted(m for m in table if m not in MAIN_METHODS)
    for name in names:
        s = table[name]
        loss = f"{_fmt(s['test_loss'])} [{_fmt(s['test_loss_min'])}, {_fmt(s['test_loss_max'])}]"
        reach = f"{_fmt(s['steps_to_target'])} ({s['reached']})"
        wall = _fmt(s["wall_s"], 3) + (f" (x{s['cost_runs']} runs)" if s["cost_runs"] > 1 else "")
        if cpu:
            wall += f" | {_fmt(s.get('cpu_s'), 3)}"
        lines.append(
            f"| {name} | {loss} | {_fmt(s['test_acc'])} | {reach} | {wall} | {_fmt(s['explore_share'], 2)} | "
            f"{_fmt(s['vs_oracle'], 3)} | {_fmt(s['vs_lr_free'], 3)} |"
        )
    oracle = table.get("grid-oracle")
    if oracle and oracle.get("picked"):
        lines.append("")
        lines.append(f"Oracle picks: {', '.join(oracle['picked'])}.")
    lines += ["", f"![{workload}]({workload}.png)", ""]
    return lines


def grid_spread(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """How much the schedule matters on each workload, from its grid trials (median test loss over seeds).

    Returns:
        ``{workload: {...}}`` with the best and worst grid trial, the best trial of each shape, the number of
        diverged trials, and the test loss of the best trial's shape at a peak LR 10x lower and 10x higher than
        the best (interpolated linearly in log10 of the peak LR; None outside the grid; inf where a neighbour
        diverged). Workloads without grid trials are left out.
    """
    by: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        if r["family"] == "grid":
            by[r["workload"]][r["method"]].append(_num(r["test_loss"]))
            seeds[r["workload"]].add(r["seed"])
    out: dict[str, dict[str, Any]] = {}
    for workload, trials in by.items():
        loss = {name: statistics.median(v) for name, v in trials.items()}
        parsed = {name: _grid_name(name) for name in loss}
        best = min(loss, key=lambda n: loss[n])
        finite = [n for n in loss if math.isfinite(loss[n])]
        worst = max(finite, key=lambda n: loss[n]) if finite else best
        shapes: dict[str, dict[str, Any]] = {}
        for name, (shape, peak) in sorted(parsed.items()):
            if shape not in shapes or loss[name] < shapes[shape]["test_loss"]:
                shapes[shape] = {"method": name, "peak_lr": peak, "test_loss": loss[name]}
        best_shape, best_peak = parsed[best]
        curve = sorted((math.log10(peak), loss[n]) for n, (shape, peak) in parsed.items() if shape == best_shape)
        out[workload] = {
            "seeds": len(seeds[workload]),
            "trials": len(loss),
            "best": {"method": best, "test_loss": loss[best]},
            "worst": {"method": worst, "test_loss": loss[worst]},
            "diverged": sum(1 for v in loss.values() if not math.isfinite(v)),
            "shapes": shapes,
            "lr_10x_lower": _interpolate(curve, math.log10(best_peak) - 1),
            "lr_10x_higher": _interpolate(curve, math.log10(best_peak) + 1),
        }
    return out


def _grid_name(name: str) -> tuple[str, float]:
    """``grid-<shape>-<peak>`` (``grid-cosine-1.6e-03``) → (shape, peak LR)."""
    _, shape, peak = name.split("-", 2)
    return shape, float(peak)


def _interpolate(curve: list[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of sorted ``(x, y)`` points at ``x``; None outside them, inf next to an inf."""
    for (x0, y0), (x1, y1) in zip(curve[:-1], curve[1:], strict=True):
        if x0 <= x <= x1:
            if not (math.isfinite(y0) and math.isfinite(y1)):
                return math.inf
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def _grid_table(grid: dict[str, dict[str, Any]], workloads: list[str]) -> list[str]:
    """Spread of the grid's schedules on each workload: test losses as multiples of the best grid trial."""
    have = [w for w in workloads if w in grid]
    if not have:
        return []
    lines = [
        "### How much the schedule matters: the grid's spread",
        "",
        "Median test loss over seeds of each grid trial, as a multiple of the best trial's (the oracle picks by "
        "the tuning split instead). The 10x columns keep the best trial's shape and move its peak LR one decade, "
        "interpolating between grid points in log LR.",
        "",
        "| workload | best trial (test loss) | worst | best cosine | best linear | best WSD | peak / 10 | peak x 10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w in have:
        g = grid[w]
        ref = g["best"]["test_loss"]

        def rel(v: float | None, ref: float = ref) -> str:
            return "—" if v is None else _fmt(v / ref, 3)

        shapes = [g["shapes"].get(s) for s in ("cosine", "linear", "wsd")]
        cells = [f"{rel(s['test_loss'])} ({s['peak_lr']:.1e})" if s else "—" for s in shapes]
        worst = rel(g["worst"]["test_loss"]) + (f", {g['diverged']} diverged" if g["diverged"] else "")
        lines.append(
            f"| {w} | {g['best']['method']} ({_fmt(ref)}) | {worst} | "
            + " | ".join(cells)
            + f" | {rel(g['lr_10x_lower'])} | {rel(g['lr_10x_higher'])} |"
        )
    return [*lines, ""]


def _ceiling(
    summary: dict[str, dict[str, dict[str, Any]]], grid: dict[str, dict[str, Any]], workloads: list[str]
) -> list[str]:
    """What the best single grid trial, picked in hindsight by its median test loss, reaches against the oracle.

    No schedule of the grid's family does better on these seeds, so it bounds what matching the oracle's shapes and
    peak LRs can give; a method beats it only with a schedule the grid does not hold (or another optimizer).
    """
    have = [w for w in workloads if w in grid and "grid-oracle" in summary.get(w, {})]
    if not have:
        return []
    ratios = [grid[w]["best"]["test_loss"] / summary[w]["grid-oracle"]["test_loss"] for w in have]
    geo = geomean(ratios)
    cells = ", ".join(f"{w} {_fmt(r, 3)} ({grid[w]['best']['method']})" for w, r in zip(have, ratios, strict=True))
    below = []
    for w in have:
        best = grid[w]["best"]["test_loss"]
        for m, row in summary[w].items():
            if not m.startswith("grid-") and row.get("test_loss") is not None and row["test_loss"] < best:
                below.append(f"{m} on {w} ({_fmt(row['vs_oracle'], 3)})")
    beyond = (
        f" Below every grid trial (a schedule the grid does not hold, or another optimizer): {', '.join(below)}."
        if below
        else " No method ends below every grid trial on any workload."
    )
    return [
        f"The best single grid trial per workload, picked in hindsight by its median test loss (a schedule no run "
        f"can know in advance), is at {cells}: geometric mean {_fmt(geo, 3)} of the oracle.{beyond}",
        "",
    ]


def _verdict(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Where lrtune-default meets the bar (at most the oracle's loss) and whom it beats, workload by workload."""
    workloads = [w for w in summary if "lrtune-default" in summary[w]]
    if not workloads:
        return []
    met = [w for w in workloads if (summary[w]["lrtune-default"].get("vs_oracle") or math.inf) <= 1.0]
    lines = []
    if any(summary[w]["lrtune-default"].get("vs_oracle") is not None for w in workloads):
        lines.append(
            f"lrtune-default reaches the oracle's median test loss (ratio <= 1.00) on {len(met)} of {len(workloads)} "
            f"workloads ({', '.join(met) or 'none'})."
        )
    for rival in ("adamw-1e-3-cosine", "schedulefree-adamw", "prodigy-cosine", "range-test-cosine"):
        have = [w for w in workloads if rival in summary[w]]
        if not have:
            continue
        beats = [w for w in have if summary[w]["lrtune-default"]["test_loss"] < summary[w][rival]["test_loss"]]
        lines.append(f"It beats {rival} on {len(beats)} of {len(have)} ({', '.join(beats) or 'none'}).")
    return [" ".join(lines), ""]


def _ablations(summary: dict[str, dict[str, dict[str, Any]]], meta: dict[str, Any]) -> list[str]:
    """The one-switch-off table: each ablation's test loss relative to lrtune-default on the same seeds."""
    workloads = list(summary)
    names = sorted({m for w in workloads for m, s in summary[w].items() if s["family"] == "ablation"})
    if not names:
        return []
    lines = ["## Ablations: lrtune-default (the plan preset) with one switch flipped", ""]
    lines += [
        f"Median over {meta.get('ablation_seeds', meta['seeds'])} seed(s) of the test loss relative to "
        "lrtune-default (the plan preset) on the same seed (above 1: the preset's setting is the better one).",
        "",
        "| switch | " + " | ".join(workloads) + " |",
        "|---|" + "---:|" * len(workloads),
    ]
    for name in names:
        cells = [_fmt(summary[w].get(name, {}).get("vs_default"), 3) for w in workloads]
        lines.append(f"| {name.removeprefix('lrtune-plan-').removeprefix('lrtune-')} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plots(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per workload: tuning-loss curves and LR schedules of the main methods (first seed), and lrtune's
    per-stage candidates. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = with_oracle(rows)
    written = []
    for workload in sorted({r["workload"] for r in rows}):
        seed = min(r["seed"] for r in rows if r["workload"] == workload)
        runs = {r["method"]: r for r in rows if r["workload"] == workload and r["seed"] == seed}
        fig, axes = plt.subplots(3, 1, figsize=(9, 11), gridspec_kw={"height_ratios": [3, 2, 2]})
        for name in MAIN_METHODS:
            r = runs.get(name)
            if r is None:
                continue
            pts = [(s, v) for s, v in r["curve"] if v is not None]
            if pts:
                axes[0].plot(*zip(*pts, strict=True), label=name, lw=2 if name.startswith("lrtune") else 1)
            lrs = [(s, v) for s, v in r["lrs"] if v and v > 0]
            if lrs and name not in LR_FREE:
                axes[1].plot(*zip(*lrs, strict=True), label=name, lw=2 if name.startswith("lrtune") else 1)
        axes[0].set(title=f"{workload}: tuning-split loss (seed {seed})", xlabel="gradient step", ylabel="loss")
        axes[0].set_yscale("log")
        axes[0].legend(fontsize=7)
        axes[1].set(title="LR schedule (first param group)", xlabel="gradient step", ylabel="LR", yscale="log")
        axes[1].legend(fontsize=7)
        stages = runs.get("lrtune-default", {}).get("stages", [])
        ax = axes[2]
        for stage in stages:
            for c in stage["candidates"]:
                color = "tab:red" if c["diverged"] else ("tab:green" if c["winner"] else "tab:blue")
                ax.scatter(stage["index"], c["lr"], c=color, s=40 if c["winner"] else 15)
        ax.set(title="lrtune default: candidates per stage (green: winner, red: diverged)", xlabel="stage")
        ax.set(ylabel="LR", yscale="log")
        fig.tight_layout()
        path = out_dir / f"{workload}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
