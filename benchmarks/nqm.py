"""Noisy quadratic benchmark: lrtune's schedule against the optimal schedule, computed through the closed form.

    python -m benchmarks.nqm                         # 3 landscapes x 20k and 100k steps x 3 seeds
    python -m benchmarks.nqm --budgets 20000 --seeds 1 --presets default
    python -m benchmarks.nqm --presets default plan:loss_model=power plan:probe_all,probe_judge   # switches flipped

The landscape is SGD on ``0.5 * sum_i h_i x_i^2`` with gradient noise of covariance ``sigma2 * H``. With
``m_i = E[x_i^2]`` one step at LR ``lr`` maps ``m_i -> (1 - lr h_i)^2 m_i + lr^2 sigma2 h_i``, so the expected loss
after any schedule is known exactly. The worker sees the loss times ``1 + noise * N(0, 1)`` per step.

Every method gets the same budget of steps, and every step lrtune spends (the range sweep, candidates, probes,
rolled back or not) counts. Reported: the final expected loss as a multiple of the optimum, the best schedule of
``--pieces`` equal constant pieces found by coordinate descent in log-LR on the closed form. Next to lrtune's
presets: a cosine to zero whose peak was picked in hindsight (the best of a fine grid) and the best constant LR.
A preset written ``NAME:SWITCH,SWITCH`` runs with those config switches set to true, ``NAME:KEY=VALUE`` with that
value (an ablation column).
Results go to ``benchmarks/results/nqm.md`` and ``nqm.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

LR_RANGE = (1e-3, 10.0)


@dataclass(frozen=True)
class Landscape:
    """A noisy quadratic model.

    Attributes:
        name: Name in reports.
        dims: Number of coordinates.
        decay: Curvatures ``h_i = i^-decay`` for ``i = 1..dims``.
        sigma2: Gradient noise scale (covariance ``sigma2 * H``).
        m0: Initial ``E[x_i^2]`` of every coordinate.
        noise: Relative noise of each observed loss.
        noise_lr: Below this LR a lower LR still slows progress but no longer lowers the gradient noise's
            equilibrium (the noise term is that of this LR): a landscape where a model that reads the excess loss as
            noise expects more of a decay than it gives (0: the plain quadratic). The tests use it; the benchmark's
            landscapes do not.
    """

    name: str
    dims: int = 200
    decay: float = 1.0
    sigma2: float = 1.0 / 64.0
    m0: float = 4.0
    noise: float = 0.03
    noise_lr: float = 0.0

    @property
    def h(self) -> NDArray[np.float64]:
        """Curvatures, shape (dims,)."""
        return np.arange(1, self.dims + 1, dtype=float) ** -self.decay

    def start(self) -> NDArray[np.float64]:
        """Initial second moments, shape (dims,)."""
        return np.full(self.dims, self.m0)

    def loss(self, m: NDArray[np.float64]) -> NDArray[np.float64]:
        """Expected loss of second moments ``m`` (shape (..., dims)), shape (...)."""
        return np.asarray(0.5 * (m * self.h).sum(axis=-1), dtype=float)

    def advance(self, m: NDArray[np.float64], lr: NDArray[np.float64] | float, steps: float) -> NDArray[np.float64]:
        """Second moments after ``steps`` steps at ``lr`` (broadcast over leading dimensions)."""
        lr_arr = np.asarray(lr, dtype=float)[..., None]
        q = np.maximum(lr_arr, self.noise_lr)
        a = (1.0 - lr_arr * self.h) ** 2
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            fixed = np.where(a == 1.0, 0.0, q * q * self.sigma2 * self.h / (1.0 - a))
            out = fixed + a**steps * (m - fixed)
        return np.where(np.isfinite(out), out, np.inf)

    def curve(
        self, m: NDArray[np.float64], lrs: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Expected loss after each step of a per-step LR schedule ``lrs`` (shape (n,)) from second moments ``m``,
        and the moments after it."""
        out = np.empty(len(lrs))
        for j, lr in enumerate(lrs):
            m = self.advance(m, float(lr), 1)
            out[j] = float(self.loss(m))
        return out, m

    def final(self, lrs: NDArray[np.float64], steps: NDArray[np.float64]) -> float:
        """Expected final loss of a piecewise-constant schedule."""
        m = self.start()
        for lr, n in zip(lrs, steps, strict=True):
            m = self.advance(m, float(lr), float(n))
        value = float(self.loss(m))
        return value if math.isfinite(value) else math.inf


LANDSCAPES = {
    "base": Landscape("base"),
    "steep": Landscape("steep", decay=1.5),
    "noisy": Landscape("noisy", sigma2=4.0 / 64.0),
}


def optimum(land: Landscape, total: int, pieces: int = 40, sweeps: int = 40) -> tuple[float, NDArray[np.float64]]:
    """The best schedule of ``pieces`` equal constant pieces, by coordinate descent in log-LR on the closed form.

    Returns:
        Its expected final loss and its LRs, shape (pieces,).
    """
    steps = np.full(pieces, total / pieces)
    lo, hi = (math.log10(v) for v in LR_RANGE)
    x = np.linspace(math.log10(0.5), lo, pieces)
    coarse = np.linspace(lo, hi, 97)

    def finals(i: int, values: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
        m = land.start()
        for j in range(i):
            m = land.advance(m, 10 ** x[j], steps[j])
        m = land.advance(np.repeat(m[None, :], len(values), axis=0), 10**values, steps[i])
        for j in range(i + 1, pieces):
            m = land.advance(m, 10 ** x[j], steps[j])
        out = land.loss(m)
        return np.where(np.isfinite(out), out, np.inf)

    best = land.final(10**x, steps)
    for _ in range(sweeps):
        before = best
        for i in range(pieces):
            vals = finals(i, coarse, x)
            j = int(np.argmin(vals))
            fine = np.linspace(coarse[max(j - 1, 0)], coarse[min(j + 1, len(coarse) - 1)], 41)
            vals = finals(i, fine, x)
            k = int(np.argmin(vals))
            if vals[k] < best:
                best = float(vals[k])
                x = x.copy()
                x[i] = fine[k]
        if before - best <= 1e-7 * best:
            break
    return best, 10**x


def best_cosine(land: Landscape, total: int) -> tuple[float, float]:
    """The best cosine-to-zero schedule (peak from a fine grid, picked in hindsight): its final loss and peak."""
    n = 400
    u = (np.arange(n) + 0.5) / n
    steps = np.full(n, total / n)
    best, peak = math.inf, 0.0
    for p in np.logspace(math.log10(LR_RANGE[0]), math.log10(LR_RANGE[1]), 121):
        v = land.final(p * 0.5 * (1 + np.cos(math.pi * u)), steps)
        if v < best:
            best, peak = v, float(p)
    return best, peak


def best_constant(land: Landscape, total: int) -> tuple[float, float]:
    """The best constant LR (picked in hindsight): its final loss and LR."""
    best, lr = math.inf, 0.0
    for p in np.logspace(math.log10(LR_RANGE[0]), math.log10(LR_RANGE[1]), 241):
        v = land.final(np.array([p]), np.array([float(total)]))
        if v < best:
            best, lr = v, float(p)
    return best, lr


def run_tuner(
    land: Landscape, total: int, seed: int, preset: str, keep_state: bool = False, **switches: Any
) -> dict[str, Any]:
    """Drive a tuner job on the landscape like a worker would, snapshots and all.

    Returns:
        ``final`` (expected loss of the final weights), ``steps`` run, ``wasted`` (rolled-back share),
        ``stages`` (searches), ``wall_s``, ``tuner_s`` (seconds inside the tuner) and ``reports`` (for each report:
        segments reported before it, the segment's phase, milliseconds the report took); with ``keep_state`` also
        ``state``, the job's final dumped state.
    """
    from lrtune.tuner import Tuner, TunerConfig

    rng = np.random.default_rng(seed)
    if preset == "paper":
        switches = {"objective": "train", **switches}  # the worker here measures no validation loss
    tuner = Tuner(
        TunerConfig(
            min_lr=LR_RANGE[0],
            max_lr=LR_RANGE[1],
            total_steps=total,
            preset=preset,  # type: ignore[arg-type]
            seed=seed,
            **switches,
        )
    )
    m = land.start()
    snaps: dict[str, NDArray[np.float64]] = {}
    seg = tuner.next_segment()
    steps_run, inside = 0, 0.0
    reports: list[tuple[int, str, float]] = []
    started = time.perf_counter()
    h = land.h
    while not seg.done:
        if seg.restore is not None:
            m = snaps[seg.restore].copy()
        for name in seg.drop:
            snaps.pop(name, None)
        if seg.snapshot is not None:
            snaps[seg.snapshot] = m.copy()
        losses: list[float] = []
        for j in range(seg.steps):
            lr = seg.lr_at(j)
            q = max(lr, land.noise_lr)
            m = (1.0 - lr * h) ** 2 * m + q * q * land.sigma2 * h
            value = float(0.5 * (h * m).sum())
            noisy = value * (1.0 + land.noise * float(rng.standard_normal()))
            losses.append(noisy if math.isfinite(value) and value < 1e30 else math.inf)
            steps_run += 1
            if seg.phase == "explore" and not math.isfinite(losses[-1]):
                break
        if not np.all(np.isfinite(m)):
            m = np.where(np.isfinite(m), m, 1e30)
        if seg.keep is not None:
            snaps[seg.keep] = m.copy()
        t0 = time.perf_counter()
        phase = seg.phase
        seg = tuner.report(seg.segment_id, losses)
        took = time.perf_counter() - t0
        inside += took
        reports.append((len(reports), phase, took * 1000))
    sched = tuner.schedule()
    return {
        "final": float(land.loss(m)),
        "steps": steps_run,
        "wasted": sched["wasted_share"],
        "stages": [[c["lr"] for c in st["candidates"]] for st in sched["stages"]],
        "winners": [st["winner_lr"] for st in sched["stages"]],
        "wall_s": time.perf_counter() - started,
        "tuner_s": inside,
        "export": copy.deepcopy(tuner.export()),
        "reports": reports,
        **({"state": tuner.dump()} if keep_state else {}),
    }


def preset_switches(name: str) -> tuple[str, dict[str, Any]]:
    """The preset and the switches of a ``--presets`` entry.

    ``plan:probe_all,probe_judge`` turns both on; ``plan:loss_model=power`` sets a value (read as JSON where it is,
    so ``plan:verify_rise=false`` turns a switch off; else as a string).
    """
    preset, _, flags = name.partition(":")
    out: dict[str, Any] = {}
    for flag in filter(None, flags.split(",")):
        key, eq, value = flag.partition("=")
        try:
            out[key] = json.loads(value) if eq else True
        except json.JSONDecodeError:
            out[key] = value
    return preset, out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print and save the table; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nqm", description=__doc__.split("\n")[0])
    parser.add_argument("--landscapes", nargs="+", default=list(LANDSCAPES), choices=sorted(LANDSCAPES))
    parser.add_argument("--budgets", nargs="+", type=int, default=[20_000, 100_000])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--presets", nargs="+", default=["default", "greedy", "paper"], help="presets, or PRESET:SWITCH,... to turn on"
    )
    parser.add_argument("--pieces", type=int, default=40, help="pieces of the optimal schedule")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--switch", action="append", default=[], help="KEY=JSON config switch for every preset")
    args = parser.parse_args(argv)
    switches = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.switch)}
    load = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for lname in args.landscapes:
        land = LANDSCAPES[lname]
        for total in args.budgets:
            t0 = time.perf_counter()
            opt, opt_lrs = optimum(land, total, args.pieces)
            cos, peak = best_cosine(land, total)
            const, const_lr = best_constant(land, total)
            row: dict[str, Any] = {
                "landscape": lname,
                "budget": total,
                "optimum": opt,
                "optimum_lrs": [float(v) for v in opt_lrs],
                "cosine": cos / opt,
                "cosine_peak": peak,
                "constant": const / opt,
                "constant_lr": const_lr,
                "runs": {},
            }
            print(
                f"{lname} {total}: optimum {opt:.4g} ({time.perf_counter() - t0:.0f} s); hindsight cosine "
                f"{cos / opt:.3f}x (peak {peak:.3g}), best constant {const / opt:.3f}x ({const_lr:.3g})",
                flush=True,
            )
            for preset in args.presets:
                runs = []
                for seed in range(args.seeds):
                    name, extra = preset_switches(preset)
                    r = run_tuner(land, total, seed, name, **switches, **extra)
                    r["ratio"] = r["final"] / opt
                    r.pop("export")
                    r.pop("reports")
                    runs.append(r)
                    print(
                        f"  {preset} seed {seed}: {r['ratio']:.3f}x, rolled back {r['wasted']:.1%}, searches "
                        f"{len(r['stages'])}, tuner {r['tuner_s']:.1f} s of {r['wall_s']:.1f} s",
                        flush=True,
                    )
                row["runs"][preset] = runs
            rows.append(row)
    write(rows, args, load, switches)
    return 0


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def write(rows: list[dict[str, Any]], args: argparse.Namespace, load: float, switches: dict[str, Any]) -> None:
    """Write ``nqm.md`` and ``nqm.json`` under ``args.out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.nqm " + " ".join(sys.argv[1:])
    lines = [
        "# Noisy quadratic: lrtune vs the optimal schedule",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
        f"load average {load:.1f} at the start  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Seeds: {args.seeds} (median shown); optimum: best {args.pieces}-piece constant schedule (coordinate "
        "descent in log-LR on the closed form). Every step lrtune spends is charged.",
        "",
    ]
    if switches:
        lines += [f"Switches: `{json.dumps(switches)}`", ""]
    lines += [
        "Final expected loss as a multiple of the optimum (lower is better; 1.25 is the bar for `default`, the plan "
        "preset):",
        "",
        "| landscape | budget | " + " | ".join(args.presets) + " | hindsight cosine | best constant | rolled back "
        "(default) |",
        "|---|---:|" + "---:|" * (len(args.presets) + 3),
    ]
    for r in rows:
        cells = [f"{_median([x['ratio'] for x in r['runs'][p]]):.3f}" for p in args.presets]
        wasted = r["runs"].get("default") or r["runs"][args.presets[0]]
        lines.append(
            f"| {r['landscape']} | {r['budget']:,} | " + " | ".join(cells) + f" | {r['cosine']:.3f} | "
            f"{r['constant']:.3f} | {_median([x['wasted'] for x in wasted]):.1%} |"
        )
    lines += ["", "Per seed:", ""]
    for r in rows:
        for p in args.presets:
            vals = ", ".join(f"{x['ratio']:.3f}" for x in r["runs"][p])
            lines.append(f"- {r['landscape']} {r['budget']:,} {p}: {vals}")
    lines += [
        "",
        "Landscapes: `base` h_i = 1/i, 200 dims, gradient noise H/64; `steep` h_i = i^-1.5; `noisy` noise 4H/64. "
        f"LR range {LR_RANGE[0]:g} to {LR_RANGE[1]:g}, start E[x_i^2] = 4, observed loss noise 3% per step.",
    ]
    (args.out / "nqm.md").write_text("\n".join(lines) + "\n")
    (args.out / "nqm.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
