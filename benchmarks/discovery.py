"""Discovery benchmark: how many of the true top-1 % sites a policy finds within a budget.

On the digital twin, the noise-free scalar over every candidate defines the top 1 % sites.
Each policy measures ``--budget`` points (seeds included); the figure is the fraction of the
top-1 % sites among the measured points, over ``--runs`` seeds (mean +- sd). Policies: DKL with
UCB, EI and max-variance, random, and a raster (an even grid over the candidates).

    python benchmarks/discovery.py [--budget 100] [--runs 5] [--signal spectrum|diffraction] [--extractor mlp|cnn]

Prints one JSON line per policy and a last line with the DKL/random ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from emedge_core.experiment import Experiment, ExperimentConfig  # noqa: E402
from emedge_core.patches import make_patches  # noqa: E402
from emedge_core.scalarize import from_spec  # noqa: E402
from emedge_core.twin import DigitalTwin  # noqa: E402

SCALARIZER = {"spectrum": "eels_peak_energy", "diffraction": "com_magnitude"}


def top_sites(twin: DigitalTwin, scalarizer: str, window: int, fraction: float = 0.01) -> set[tuple[int, int]]:
    """The top ``fraction`` of candidate pixels by the noise-free scalar."""
    truth = twin.truth(from_spec(scalarizer))
    patches = make_patches(twin.survey().image, window)
    vals = truth[patches.coords[:, 0], patches.coords[:, 1]]
    k = max(1, int(round(fraction * len(vals))))
    best = np.argsort(vals)[::-1][:k]
    return {tuple(c) for c in patches.coords[best].tolist()}


def raster(twin: DigitalTwin, window: int, budget: int) -> np.ndarray:
    patches = make_patches(twin.survey().image, window)
    lo, hi = patches.coords.min(axis=0), patches.coords.max(axis=0)
    side = int(np.ceil(np.sqrt(budget)))
    rr, cc = np.meshgrid(np.linspace(lo[0], hi[0], side).round(), np.linspace(lo[1], hi[1], side).round(),
                         indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1).astype(int)[:budget]


def found(positions: np.ndarray, top: set[tuple[int, int]]) -> float:
    return len({tuple(p) for p in np.asarray(positions).tolist()} & top) / len(top)


def run_policy(policy: str, seed: int, signal: str, budget: int, window: int,
               extractor: str = "mlp") -> tuple[float, float]:
    """(fraction found, seconds) for one policy on the twin with ``seed``."""
    twin = DigitalTwin(signal=signal, seed=seed)
    top = top_sites(twin, SCALARIZER[signal], window)
    t0 = time.perf_counter()
    if policy == "raster":
        return found(raster(twin, window, budget), top), time.perf_counter() - t0
    cfg = ExperimentConfig(budget=budget, seeds=10, acquisition=policy, window=window, seed=seed,
                           model={"extractor": extractor})
    result = Experiment(twin, SCALARIZER[signal], cfg).run()
    return found(result.positions, top), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--signal", choices=("spectrum", "diffraction"), default="spectrum")
    ap.add_argument("--policies", default="ucb,ei,maxvar,random,raster")
    ap.add_argument("--extractor", choices=("mlp", "cnn"), default="mlp", help="DKL feature extractor")
    args = ap.parse_args()
    means: dict[str, float] = {}
    for policy in args.policies.split(","):
        runs = [run_policy(policy, s, args.signal, args.budget, args.window, args.extractor) for s in range(args.runs)]
        fr = np.array([r[0] for r in runs])
        means[policy] = float(fr.mean())
        print(json.dumps({"benchmark": "discovery", "signal": args.signal, "policy": policy, "budget": args.budget,
                          "extractor": args.extractor if policy not in ("random", "raster") else None,
                          "runs": args.runs, "found_mean": round(float(fr.mean()), 4),
                          "found_sd": round(float(fr.std(ddof=1)) if len(fr) > 1 else 0.0, 4),
                          "found": fr.round(4).tolist(), "seconds_per_run": round(float(np.mean([r[1] for r in runs])), 2)}),
              flush=True)
    rnd = means.get("random")
    if rnd is not None:
        print(json.dumps({"benchmark": "discovery", "signal": args.signal, "summary": True,
                          "ratio_to_random": {p: (round(m / rnd, 2) if rnd > 0 else None)
                                              for p, m in means.items() if p != "random"},
                          "random_found_mean": rnd, "goal": "DKL >= 5x random"}))


if __name__ == "__main__":
    main()
