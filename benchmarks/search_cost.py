"""What searching costs: the oracle's own schedule, trained on only the steps lrtune keeps.

lrtune spends part of the budget on steps it rolls back (the LR range sweep, candidates that lose, cooldown
probes). This re-runs the grid oracle's pick of every (workload, seed) of a finished benchmark with its budget
cut by lrtune-default's rolled-back share on that run, so the result says how much of lrtune's gap to the oracle
is the price of those steps rather than a worse LR or schedule. Nothing here feeds back into lrtune.

Usage::

    python -m benchmarks.search_cost [--results benchmarks/results/training] [--threads 1]

Writes ``search_cost.md`` and ``search_cost.json`` next to the benchmark's raw results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.methods import all_methods
from benchmarks.report import with_oracle
from benchmarks.run import run
from benchmarks.workloads import WORKLOADS


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write its table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/training"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in (args.results / "raw.jsonl").read_text().splitlines()]
    oracle = {(r["workload"], r["seed"]): r for r in with_oracle(rows) if r["method"] == "grid-oracle"}
    lrtune = {(r["workload"], r["seed"]): r for r in rows if r["method"] == "lrtune-default"}
    methods = {m.name: m for m in all_methods(ablations=False)}
    from tqdm import tqdm

    results: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    plan = sorted(k for k in oracle if k in lrtune)
    for workload_name, seed in tqdm(plan, unit="run", file=sys.stderr):
        pick, tuned = oracle[(workload_name, seed)], lrtune[(workload_name, seed)]
        if workload_name not in cache:
            cache.clear()
            cache[workload_name] = WORKLOADS[workload_name]()
        workload = cache[workload_name]
        kept = tuned["steps"] - _rolled_back(tuned)
        short = dataclasses.replace(workload, steps=kept)
        again = run(short, methods[pick["picked"]], seed)
        results.append(
            {
                "workload": workload_name,
                "seed": seed,
                "oracle_pick": pick["picked"],
                "oracle_test_loss": pick["test_loss"],
                "kept_steps": kept,
                "budget": tuned["steps"],
                "oracle_on_kept_steps": again.test_loss,
                "lrtune_test_loss": tuned["test_loss"],
            }
        )
    out = args.results / "search_cost.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "search_cost.md").write_text(_markdown(results, argv))
    print(f"wrote {args.results / 'search_cost.md'} and {out}")
    return 0


def _rolled_back(run_row: dict[str, Any]) -> int:
    """Steps of an lrtune run that did not reach the final model: all exploration but each stage's kept winner."""
    explored = round(run_row["explore_share"] * run_row["steps"])
    kept = sum(c["steps"] for st in run_row["stages"] for c in st["candidates"] if c["winner"])
    return int(explored - kept)


def _markdown(results: list[dict[str, Any]], argv: list[str] | None) -> str:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by[r["workload"]].append(r)
    command = "python -m benchmarks.search_cost " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# What searching costs",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}  ",
        f"Date: {dt.date.today().isoformat()}",
        "",
        "The grid oracle's pick for each workload and seed, trained again with only as many steps as lrtune-default "
        "kept on that run (the budget minus its rolled-back sweep, losing candidates and cooldown probes). Each "
        "figure is the median over seeds of the ratio to the oracle's full-budget test loss on the same seed (so "
        "the lrtune column can differ slightly from the report's ratio of medians).",
        "",
        "| workload | steps kept by lrtune (of budget) | oracle pick on those steps | lrtune-default |",
        "|---|---:|---:|---:|",
    ]
    for workload, rs in by.items():
        kept = statistics.median(r["kept_steps"] for r in rs)
        short = statistics.median(r["oracle_on_kept_steps"] / r["oracle_test_loss"] for r in rs)
        tuned = statistics.median(r["lrtune_test_loss"] / r["oracle_test_loss"] for r in rs)
        lines.append(f"| {workload} | {kept:.0f} ({rs[0]['budget']}) | {short:.3f} | {tuned:.3f} |")
    lines += [
        "",
        "Where the two right-hand columns are close, lrtune's LR and schedule are about as good as the best of the "
        "grid, and its gap to the oracle is the price of the steps it searched with.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
