"""``emedge replay``: virtual experiments - rerun a recorded experiment offline on its recorded frames.

    emedge replay EXPERIMENT.h5 [--acquisition ucb,ei,maxvar,thompson,random] [--seeds K] [--seed S]
                  [--repeats R] [--budget N] [--out DIR] [--json]

First the recorded run is rerun as it was (its policy, seed and configuration, every survey
pixel a candidate, frames read back from the file): with the same software it asks for exactly
the recorded positions, which is checked and reported. Then each policy of --acquisition runs
--repeats times (random seeds S, S+1, ...) on the *pool* of recorded positions - the only places
the file has frames for - for --budget measurements (default: the whole pool), and the learning
curves (best value so far, median over the repeats) are printed side by side with the recorded
run's, followed by a table across policies:

- ``reach max``: measurements until the pool's largest value was found (median over repeats);
- ``best@25%`` / ``best@50%``: best value after a quarter / half of the budget;
- ``top10%@50%``: share of the pool's top decile found within half the budget.

With --out DIR: DIR/replay.json (everything) and DIR/curves.png. With --json the last stdout line
is that JSON object. The recorded frames are scalarized again with the recorded scalarizer.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.choices import POLICIES
from emedge_core.instrument import Frames, Instrument, Survey



def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay", help="virtual experiments: rerun a recorded experiment.h5 offline with other policies",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="an experiment.h5 written by emedge run / emedge remote run / Swift")
    p.add_argument("--acquisition", default=",".join(POLICIES),
                   help=f"policies to compare, comma-separated (default all: {','.join(POLICIES)})")
    p.add_argument("--seeds", type=int, default=None, help="random seed points per virtual run (default: recorded)")
    p.add_argument("--seed", type=int, default=0, help="first random seed of the virtual runs (default 0)")
    p.add_argument("--repeats", type=int, default=1, help="virtual runs per policy, seeds S, S+1, ... (default 1)")
    p.add_argument("--budget", type=int, default=None, help="measurements per virtual run (default: the whole pool)")
    p.add_argument("--out", default=None, help="write DIR/replay.json and DIR/curves.png")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    p.set_defaults(func=replay)


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What a recorded ``experiment.h5`` holds for a virtual rerun."""

    path: str
    config: typing.Any                 # emedge_core.experiment.ExperimentConfig
    scalarizer: dict[str, typing.Any]
    positions: np.ndarray              # (n, 2) recorded order
    values: np.ndarray                 # (n,) recorded scalars (NaN = failed)


def read_recorded(path: str) -> Recorded:
    """The configuration, scalarizer, positions and values of the run recorded in ``path``."""
    import h5py

    from emedge_core.emd import value
    from emedge_core.experiment import ExperimentConfig

    if not os.path.isfile(path):
        raise EmedgeError(f"experiment file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if "experiment" not in f or "config" not in f["experiment"].attrs:
                raise EmedgeError(f"{path} is not an experiment.h5 (no /experiment with its config)")
            g = f["experiment"]
            raw = json.loads(g.attrs["config"])
            scalarizer = json.loads(g.attrs["scalarizer"])
            positions = np.asarray(value(g["positions"]), np.int64).reshape(-1, 2)
            values = np.asarray(value(g["values"]), np.float64)
    except OSError as e:
        raise EmedgeError(f"cannot read {path} as HDF5: {e}") from None
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    if raw.get("stop_predictability") is not None:
        raw["stop_predictability"] = tuple(raw["stop_predictability"])
    config = ExperimentConfig(**{k: v for k, v in raw.items() if k in names})
    return Recorded(path, config, scalarizer, positions, values)


class RecordedInstrument:
    """The recorded frames as an instrument. ``whole_survey``: every survey pixel is a candidate, as in
    the recorded run (a position it never measured raises); else only the recorded positions are."""

    def __init__(self, path: str, whole_survey: bool) -> None:
        from emedge_core.instrument import InstrumentOptions, open_instrument

        self._inner = open_instrument("replay", InstrumentOptions(data=path))
        self.signal_kind = self._inner.signal_kind
        self._whole = whole_survey

    def survey(self) -> Survey:
        return self._inner.survey()

    def measure(self, positions: np.ndarray) -> Frames:
        return self._inner.measure(positions)

    def state(self) -> dict[str, typing.Any]:
        return self._inner.state() | {"virtual": True}

    def available(self) -> typing.Optional[np.ndarray]:
        return None if self._whole else self._inner.available()

    def close(self) -> None:
        getattr(self._inner, "close", lambda: None)()


def _run(path: str, scalarizer: dict[str, typing.Any], config: typing.Any, whole_survey: bool) -> typing.Any:
    from emedge_core.experiment import Experiment

    inst: Instrument = RecordedInstrument(path, whole_survey)
    try:
        return Experiment(inst, scalarizer, config).run()
    finally:
        typing.cast(RecordedInstrument, inst).close()


def best_so_far(values: np.ndarray) -> np.ndarray:
    """(n,) running maximum of ``values``, NaN (failed) skipped; NaN until the first good value."""
    v = np.where(np.isfinite(values), values, -np.inf)
    out = np.maximum.accumulate(v) if len(v) else v
    return np.where(np.isfinite(out), out, np.nan)


def reproduce(rec: Recorded) -> dict[str, typing.Any]:
    """Rerun the recorded run as it was; where (if anywhere) its positions first differ."""
    cfg = dataclasses.replace(rec.config, dwell_s=0.0) if hasattr(rec.config, "dwell_s") else rec.config
    try:
        result = _run(rec.path, rec.scalarizer, cfg, whole_survey=True)
    except EmedgeError as e:
        return {"reproduced": False, "message": f"the rerun asked for a position the file has no frame for ({e})"}
    got, want = result.positions, rec.positions
    n = min(len(got), len(want))
    differ = np.flatnonzero((got[:n] != want[:n]).any(axis=1))
    first = int(differ[0]) if len(differ) else (n if len(got) != len(want) else None)
    return {"reproduced": first is None, "n": int(len(want)), "first_difference": first,
            "message": (f"the recorded {rec.config.acquisition} run (seed {rec.config.seed}) reproduced: all "
                        f"{len(want)} positions identical" if first is None else
                        f"the rerun departs from the recording at measurement {first + 1} of {len(want)}")}


def virtual_runs(rec: Recorded, policies: typing.Sequence[str], seeds: typing.Optional[int], seed: int,
                 repeats: int, budget: typing.Optional[int]) -> dict[str, list[np.ndarray]]:
    """policy -> one array of values (measured order) per repeat, each run on the recorded pool."""
    pool = int(np.isfinite(rec.values).sum())
    n = min(budget or len(rec.positions), len(rec.positions))
    k = min(seeds if seeds is not None else rec.config.seeds, n)
    if k < 2 or pool < 3:
        raise EmedgeError(f"the pool has {pool} good measurements; a virtual run needs --seeds >= 2 and 3 or more")
    out: dict[str, list[np.ndarray]] = {}
    for policy in policies:
        out[policy] = []
        for r in range(repeats):
            cfg = dataclasses.replace(
                rec.config, acquisition=policy, acquisition_params=rec.config.acquisition_params if
                policy == rec.config.acquisition else ({"beta": 2.0} if policy == "ucb" else {}),
                seed=seed + r, seeds=k, budget=n, stop_uncertainty=None, stop_predictability=None,
                drift_every=None)
            if hasattr(cfg, "dwell_s"):
                cfg = dataclasses.replace(cfg, dwell_s=0.0)
            print(f"emedge replay: {policy} seed {seed + r} on the {len(rec.positions)} recorded positions",
                  file=sys.stderr)
            out[policy].append(_run(rec.path, rec.scalarizer, cfg, whole_survey=False).values)
    return out


def policy_table(rec: Recorded, runs: dict[str, list[np.ndarray]]) -> list[dict[str, typing.Any]]:
    """One row per policy (and the recording): the metrics of the module doc, medians over repeats."""
    good = rec.values[np.isfinite(rec.values)]
    top = np.quantile(good, 0.9) if len(good) else np.nan
    rows = []
    for name, vals in [("recorded " + rec.config.acquisition, [rec.values])] + list(runs.items()):
        reach, b25, b50, t50 = [], [], [], []
        for v in vals:
            curve = best_so_far(v)
            n = len(v)
            hit = np.flatnonzero(curve >= good.max()) if len(good) else np.zeros(0, np.int64)
            reach.append(float(hit[0] + 1) if len(hit) else np.nan)
            b25.append(curve[max(0, n // 4 - 1)])
            b50.append(curve[max(0, n // 2 - 1)])
            half = v[:max(1, n // 2)]
            t50.append(float((half[np.isfinite(half)] >= top).sum() / max(1, (good >= top).sum())))
        rows.append({"policy": name, "runs": len(vals), "reach_max": _median(reach), "best_25": _median(b25),
                     "best_50": _median(b50), "top10_50": _median(t50)})
    return rows


def _median(x: typing.Sequence[float]) -> typing.Optional[float]:
    a = np.asarray(x, np.float64)
    return float(np.median(a[np.isfinite(a)])) if np.isfinite(a).any() else None


def _curves(rec: Recorded, runs: dict[str, list[np.ndarray]]) -> dict[str, list[typing.Optional[float]]]:
    out = {"recorded": best_so_far(rec.values)}
    for policy, vals in runs.items():
        n = min(len(v) for v in vals)
        out[policy] = np.median(np.stack([best_so_far(v[:n]) for v in vals]), axis=0)
    return {k: [float(x) if np.isfinite(x) else None for x in v] for k, v in out.items()}


def replay(args: argparse.Namespace) -> int:
    from emedge_core.cli import print_json

    policies = [p.strip() for p in args.acquisition.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES]
    if bad or not policies:
        raise EmedgeError(f"--acquisition: unknown policy {bad[0] if bad else '(none)'!r}; "
                          f"choose from {', '.join(POLICIES)}")
    if args.repeats < 1 or (args.budget is not None and args.budget < 2) or (args.seeds is not None and args.seeds < 2):
        raise EmedgeError("--repeats must be >= 1, --budget and --seeds >= 2")
    rec = read_recorded(args.experiment)
    check = reproduce(rec)
    runs = virtual_runs(rec, policies, args.seeds, args.seed, args.repeats, args.budget)
    table = policy_table(rec, runs)
    curves = _curves(rec, runs)
    result = {"experiment": os.path.abspath(args.experiment), "reproduction": check, "policies": table,
              "curves": curves, "pool": int(len(rec.positions))}
    if args.out:
        result["files"] = _write(result, args.out)
    if args.json:
        print_json(result)
        return 0
    print(check["message"])
    names = list(curves)
    n = max(len(c) for c in curves.values())
    marks = sorted({m for m in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, n) if m <= n})
    print(f"\nbest value so far (median over {args.repeats} run(s) per policy; pool: the {len(rec.positions)} "
          "recorded positions)")
    print("| measurements | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|")
    for m in marks:
        cells = [curves[k][m - 1] if m <= len(curves[k]) else None for k in names]
        print(f"| {m} | " + " | ".join("-" if c is None else f"{c:.4g}" for c in cells) + " |")
    print("\n| policy | runs | reach max (measurements) | best@25% | best@50% | top10%@50% |\n"
          "|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row['policy']} | {row['runs']} | " + " | ".join(
            "-" if row[k] is None else f"{row[k]:.4g}" for k in ("reach_max", "best_25", "best_50", "top10_50")) + " |")
    return 0


def _write(result: dict[str, typing.Any], out: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, "replay.json"), "png": os.path.join(out, "curves.png")}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in result["curves"].items():
        y = np.array([np.nan if c is None else c for c in curve])
        ax.plot(np.arange(1, len(y) + 1), y, label=name, lw=2.5 if name == "recorded" else 1.5)
    ax.set_xlabel("measurements")
    ax.set_ylabel("best value so far")
    ax.set_title(f"virtual experiments on {os.path.basename(result['experiment'])}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=100)
    plt.close(fig)
    with open(paths["json"], "w") as fp:
        json.dump(result, fp, indent=1)
    return paths
