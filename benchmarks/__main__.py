"""Run the training benchmark: does lrtune train better than what a user would pick instead?

    python -m benchmarks                      # full: 4 workloads, 3 seeds, every method and ablation
    python -m benchmarks --quick              # digits only, 1 seed (a few minutes at most)
    python -m benchmarks --workloads charlm --seeds 5
    python -m benchmarks --long               # the long-horizon set (20k-50k steps), 3 seeds
    python -m benchmarks --selection          # the set the tuner's constants are chosen on (not evaluation)

Raw results are appended to ``<out>/raw.jsonl`` as each run finishes, so an interrupted run resumes where it
stopped (``--fresh`` starts over). The report (``report.md``), plots (PNG) and ``summary.json`` are
rewritten at the end. Other benchmarks: ``python -m benchmarks.suggest_time``, ``benchmarks/service_load.py``,
``benchmarks/client_overhead.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import torch

from benchmarks.methods import Method, all_methods
from benchmarks.report import code_version, grid_spread, markdown, plots, summarize
from benchmarks.run import run
from benchmarks.workloads import LONG_WORKLOADS, SELECTION_WORKLOADS, SHORT_WORKLOADS, WORKLOADS, Workload


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run what is missing, write the report; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits only, one seed")
    parser.add_argument(
        "--long", action="store_true", help=f"the long-horizon workloads ({', '.join(LONG_WORKLOADS)}) instead"
    )
    parser.add_argument(
        "--selection",
        action="store_true",
        help=f"the workloads the tuner's constants are chosen on ({', '.join(SELECTION_WORKLOADS)}) instead",
    )
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), help="workloads to run")
    parser.add_argument("--seeds", type=int, default=None, help="number of paired seeds (default 3, quick 1)")
    parser.add_argument(
        "--seed-from", type=int, default=0, help="run only seeds from this one on (to split a run over processes)"
    )
    parser.add_argument("--no-ablations", action="store_true", help="skip lrtune's one-switch-off runs")
    parser.add_argument(
        "--ablation-seeds", type=int, default=None, help="run the one-switch-off runs on only the first N seeds"
    )
    parser.add_argument("--methods", nargs="+", help="only these methods (names or families)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/...)")
    parser.add_argument("--fresh", action="store_true", help="ignore earlier raw results in the folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)

    if args.quick + args.long + args.selection > 1:
        parser.error("--quick, --long and --selection exclude each other")
    sets = {"quick": ("digits-mlp",), "long": LONG_WORKLOADS, "selection": SELECTION_WORKLOADS}
    chosen = next((name for name in sets if getattr(args, name)), None)
    default_workloads = list(sets[chosen] if chosen else SHORT_WORKLOADS)
    workloads = args.workloads or default_workloads
    seeds = list(range(args.seed_from, args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    out = args.out or Path("benchmarks/results") / (chosen or "training")
    out.mkdir(parents=True, exist_ok=True)
    raw_path = out / "raw.jsonl"
    if args.fresh and raw_path.exists():
        raw_path.unlink()
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]

    methods = all_methods(ablations=not args.no_ablations)
    if args.methods:
        methods = [m for m in methods if m.name in args.methods or m.family in args.methods]
    done = {}
    if raw_path.exists():
        for line in raw_path.read_text().splitlines():
            row = json.loads(line)
            done[(row["workload"], row["method"], row["seed"])] = row
    ablation_seeds = seeds[: args.ablation_seeds] if args.ablation_seeds is not None else seeds

    def wanted(method: Method, seed: int) -> bool:
        return seed in (ablation_seeds if method.family == "ablation" else seeds)

    plan = [(w, m, s) for w in workloads for s in seeds for m in methods if wanted(m, s) and (w, m.name, s) not in done]

    from tqdm import tqdm

    cache: dict[str, Workload] = {}
    with raw_path.open("a") as raw, tqdm(plan, unit="run", file=sys.stderr, dynamic_ncols=True) as bar:
        for workload_name, method, seed in bar:
            bar.set_description(f"{workload_name} {method.name} seed {seed}")
            if workload_name not in cache:
                cache.clear()
                cache[workload_name] = WORKLOADS[workload_name]()
            result = run(cache[workload_name], method, seed).to_dict()
            raw.write(json.dumps(result) + "\n")
            raw.flush()
            done[(workload_name, method.name, seed)] = result
            bar.set_postfix(test_loss=f"{result['test_loss'] or float('inf'):.4f}")

    by_name = {x.name: x for x in methods}
    rows = [r for (w, m, s), r in done.items() if w in workloads and m in by_name and wanted(by_name[m], s)]
    summary = summarize(rows)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} torch threads; "
        + (
            f"load average {load_at_start:.1f} when the command started "
            "(wall-clock figures are only comparable on an otherwise idle machine)"
            if plan
            else "wall-clock figures are those of the invocations that ran each run"
        ),
        "code": code_version(),
        "runs_now": len(plan),
        "runs_total": len(rows),
        "seeds": len(seeds),
        "ablation_seeds": len(ablation_seeds),
        "grid_trials": sum(1 for m in methods if m.family == "grid"),
    }
    grid = grid_spread(rows)
    (out / "summary.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "grid": grid}, indent=1, default=str) + "\n"
    )
    (out / "report.md").write_text(markdown(summary, meta, grid))
    written = plots(rows, out)
    print(f"wrote {out / 'report.md'}, {out / 'summary.json'}, {len(written)} plots, raw runs in {raw_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
