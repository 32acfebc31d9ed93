"""Remote step overhead: ``emedge remote run`` against ``emedge run`` on the same twin, the same run.

    python benchmarks/remote.py [--budget 20] [--seeds 5] [--repeats 2] [--size 64] [--json]

Starts ``emedge serve --instrument twin`` on loopback, then runs the same experiment (same seed,
so the same positions: checked) locally and remotely, alternating, ``--repeats`` times each, and
reports per run: the loop's median seconds per step (``seconds_per_step_median``, measured where
the loop runs: in the server for the remote run) and the command's wall time per measurement
(process start, survey, loop, file writing and, remotely, polling and fetching the three files).
A second table times one measurement at one position through the client (HTTP + .npz) against
the same call in-process: the overhead a notebook pays per step when it drives the steps itself
(suggest/measure/observe). The machine line says how many cores were busy with other work.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import typing

import numpy as np


def _cli(args: list[str], env: dict[str, str]) -> tuple[dict[str, typing.Any], float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "emedge_core", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"emedge {args[0]} failed: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--size", type=int, default=64, help="twin survey edge px")
    p.add_argument("--calls", type=int, default=200, help="single-position measurements timed each way")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="emedge-remote-bench-")
    env = os.environ | {"EMEDGE_STAGING_DIR": tmp}
    token_file = os.path.join(tmp, "token")
    serve = subprocess.Popen([sys.executable, "-m", "emedge_core", "serve", "--instrument", "twin", "--port", "0",
                              "--size", str(a.size), "--token-file", token_file, "--rate", "100000", "--json"],
                             stdout=subprocess.PIPE, text=True, env=env)
    rows: list[dict[str, typing.Any]] = []
    try:
        url = json.loads(typing.cast(typing.IO[str], serve.stdout).readline())["url"]
        common = ["--scalarizer", "eels_peak_energy", "--budget", str(a.budget), "--seeds", str(a.seeds), "--json"]
        positions: dict[str, list[typing.Any]] = {}
        for rep in range(a.repeats):
            order = ("local", "remote") if rep % 2 == 0 else ("remote", "local")
            for where in order:
                out = os.path.join(tmp, f"{where}-{rep}")
                if where == "local":
                    args = ["run", "--instrument", "twin", "--size", str(a.size), "--out", out, *common]
                else:
                    args = ["remote", "run", "--url", url, "--token-file", token_file, "--out", out, *common]
                summary, wall = _cli(args, env)
                positions.setdefault(where, summary["positions"])
                rows.append({"where": where, "repeat": rep, "step_median_s": summary["seconds_per_step_median"],
                             "wall_per_measurement_s": wall / summary["n_measured"], "wall_s": wall,
                             "same_positions": summary["positions"] == positions.get("local", summary["positions"])})
        calls = _per_call(url, token_file, a.size, a.calls)
    finally:
        serve.terminate()
        serve.wait(60)
    result = {"budget": a.budget, "seeds": a.seeds, "size": a.size, "runs": rows, "calls": calls,
              "machine": _machine()}
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"# emedge remote run vs emedge run: twin {a.size}x{a.size}, budget {a.budget}, seeds {a.seeds}, "
          f"{a.repeats} runs each\n# {result['machine']}")
    print("| where | loop ms/step (median of runs) | wall s/measurement (median) | same positions |")
    print("|---|---|---|---|")
    for where in ("local", "remote"):
        r = [x for x in rows if x["where"] == where]
        print(f"| {where} | {1e3 * statistics.median(x['step_median_s'] for x in r):.1f} | "
              f"{statistics.median(x['wall_per_measurement_s'] for x in r):.3f} | "
              f"{all(x['same_positions'] for x in r)} |")
    print("\n| one measurement at one position | median ms | p90 ms |\n|---|---|---|")
    for k in ("in_process", "client_http"):
        print(f"| {k} | {calls[k]['median_ms']:.2f} | {calls[k]['p90_ms']:.2f} |")
    return 0


def _per_call(url: str, token_file: str, size: int, n: int) -> dict[str, dict[str, float]]:
    """Median and p90 ms of one single-position measure: in-process twin vs through the client."""
    from emedge_core.remote import connect
    from emedge_core.twin import DigitalTwin

    twin = DigitalTwin(size=size, seed=0)
    rng = np.random.default_rng(0)
    pos = rng.integers(0, size, (n, 2))
    out: dict[str, dict[str, float]] = {}
    with connect(url, token_file=token_file) as mic:
        for name, fn in (("in_process", twin.measure), ("client_http", mic.measure)):
            fn(pos[:1])                                   # warm
            times = []
            for p in pos:
                t0 = time.perf_counter()
                fn(p[None])
                times.append((time.perf_counter() - t0) * 1e3)
            out[name] = {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}
    return out


def _machine() -> str:
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} CPU cores, load average {load:.2f} while measuring (shared with other work), "
            f"Python {sys.version.split()[0]}")


if __name__ == "__main__":
    sys.exit(main())
