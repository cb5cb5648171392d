"""Time of one BO suggestion (GP fit + acquisition), one forecast, and one re-planning report, by size.

A re-planning report is a training segment's report under the ``plan`` preset: the loss model is refitted to
every segment the job ran and the rest of the budget is planned again. It is timed on noisy-quadratic jobs, by
the number of segments already reported (each segment is up to 32 binned losses for the model).

Run: ``.venv/bin/python -m benchmarks.suggest_time [--repeats 50] [--out benchmarks/results/suggest_time.md]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from tuner.forecast import forecast_loss
from tuner.search import Observation, Surrogate


def time_suggest(n: int, repeats: int, learn_noise: bool) -> list[float]:
    rng = np.random.default_rng(n)
    xs = rng.uniform(0, 1, n)
    obs = [Observation(float(x), float((x - 0.6) ** 2 + rng.normal(0, 0.02)), 0.02**2) for x in xs]
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        Surrogate(obs, learn_noise=learn_noise).suggest(avoid=list(xs))
        out.append((time.perf_counter() - start) * 1000)
    return out


def time_forecast(points: int, repeats: int) -> list[float]:
    t = np.arange(1, points + 1, dtype=float)
    y = np.exp(-t / points) + 0.5 + np.random.default_rng(0).normal(0, 0.01, points)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        forecast_loss(t, y, 10 * points, floor=0.0)
        out.append((time.perf_counter() - start) * 1000)
    return out


def time_replan(seeds: int) -> dict[int, list[float]]:
    """Milliseconds of each training-segment report of plan-preset jobs, by segments reported before it."""
    from benchmarks.nqm import LANDSCAPES, run_tuner

    out: dict[int, list[float]] = {}
    for seed in range(seeds):
        result = run_tuner(LANDSCAPES["base"], 20_000, seed, "plan")
        for n, phase, ms in result["reports"]:
            if phase == "train":
                out.setdefault(n, []).append(ms)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        "max_ms": round(max(ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/suggest_time.md"))
    parser.add_argument("--replan-seeds", type=int, default=3, help="noisy-quadratic jobs timed for re-planning")
    args = parser.parse_args()
    time_suggest(3, 3, False)  # warm up imports and kernels
    rows = []
    for n in (1, 5, 10, 20, 40):
        for learn_noise in (False, True):
            s = summary(time_suggest(n, args.repeats, learn_noise))
            rows.append({"what": "suggest", "observations": n, "noise": "learned" if learn_noise else "fixed", **s})
            label = f"suggest  n={n:3d} noise={rows[-1]['noise']:7s}"
            print(f"{label} median {s['median_ms']:6.2f} ms  p95 {s['p95_ms']:6.2f} ms")
    for points in (50, 200, 800):
        s = summary(time_forecast(points, args.repeats))
        rows.append({"what": "forecast", "observations": points, "noise": "-", **s})
        print(f"forecast points={points:4d}          median {s['median_ms']:6.2f} ms  p95 {s['p95_ms']:6.2f} ms")
    by_n = time_replan(args.replan_seeds)
    for lo, hi in ((1, 20), (20, 40), (40, 60), (60, 100)):
        ms = [v for n, vals in by_n.items() if lo <= n < hi for v in vals]
        if ms:
            s = summary(ms)
            rows.append({"what": "re-plan report", "observations": f"{lo}-{hi - 1} segments", "noise": "-", **s})
            print(
                f"re-plan  segments {lo:3d}-{hi - 1:3d}      median {s['median_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms"
            )
    meta = {
        "command": f"python -m benchmarks.suggest_time --repeats {args.repeats} --replan-seeds {args.replan_seeds}",
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# BO suggestion and forecast time",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        f"Date: {meta['date']}",
        "",
        f"Load average at the end: {os.getloadavg()[0]:.1f} (timings on a busy machine are longer)",
        "",
        "Targets: under 50 ms per suggestion for up to 20 observations; a re-planning report at most 50 ms median "
        "and 150 ms p99 with 40 observations.",
        "",
        "| what | observations | GP noise | median ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['what']} | {r['observations']} | {r['noise']} | {r['median_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
        f"{r['max_ms']} |"
        for r in rows
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
