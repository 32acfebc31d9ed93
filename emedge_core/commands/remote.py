"""``emedge remote``: run an experiment on a server started with ``emedge serve`` (or Swift's panel).

    emedge remote run --url URL --token-file F --scalarizer SPEC --budget N [--seeds K] [--out DIR] --json
    emedge remote status --url URL --token-file F
    emedge remote stop --url URL --token-file F --run ID

``remote run`` prints the same last-line JSON as ``emedge run``; with --out it fetches
experiment.h5, summary.json and maps.png into DIR (``files`` then names the local copies, else the
server's). Interrupting it leaves the run going on the server (``remote stop`` ends it).
"""
from __future__ import annotations

import argparse
import sys
import typing

from emedge_core import EmedgeError
from emedge_core.choices import POLICIES


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "remote", help="run experiments on an emedge server", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    run = verbs.add_parser("run", help="run a closed-loop experiment on the server's instrument")
    status = verbs.add_parser("status", help="the server's status (JSON)")
    stop = verbs.add_parser("stop", help="stop a run after its current step")
    for q in (run, status, stop):
        q.add_argument("--url", required=True, help="the server's address, e.g. https://swift-pc:8765")
        q.add_argument("--token-file", required=True, help="file holding the server's token (mode 0600)")
        q.add_argument("--cacert", default=None, help="https: the server's certificate or CA file to trust")
    stop.add_argument("--run", required=True, help="run id (from remote status)")
    run.add_argument("--scalarizer", default="eels_peak_energy", help="a name or a JSON object (as emedge run)")
    run.add_argument("--budget", type=int, default=100, help="measurements in all, seeds included (default 100)")
    run.add_argument("--seeds", type=int, default=10, help="random seed points (default 10)")
    run.add_argument("--batch", type=int, default=1, help="points per step (default 1)")
    run.add_argument("--acquisition", default="ucb", choices=POLICIES)
    run.add_argument("--beta", type=float, default=2.0, help="UCB exploration weight (default 2)")
    run.add_argument("--window", type=int, default=16, help="patch edge in survey px (default 16)")
    run.add_argument("--seed", type=int, default=0, help="random seed of everything (default 0)")
    run.add_argument("--model", choices=("gp", "dkl"), default=None,
                     help="surrogate: gp (the default of emedge run) or dkl (deep kernel learning)")
    run.add_argument("--stop-uncertainty", type=float, default=None, metavar="STD")
    run.add_argument("--drift-every", type=int, default=None, metavar="N")
    run.add_argument("--out", default=None, help="fetch the result files into DIR")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    p.set_defaults(func=remote)


def remote(args: argparse.Namespace) -> int:
    from emedge_core.cli import print_json
    from emedge_core.remote import connect

    client = connect(args.url, token_file=args.token_file, verify=args.cacert or True)
    with client:
        if args.verb == "status":
            print_json(client.status())
            return 0
        if args.verb == "stop":
            client.run(args.run).stop()
            print(f"run {args.run}: stop asked; it ends after its current step")
            return 0
        return _run(client, args)


def _run(client: typing.Any, args: argparse.Namespace) -> int:
    from emedge_core.cli import print_json
    from emedge_core.scalarize import from_spec

    from_spec(args.scalarizer)           # a bad spec fails here, before anything is sent
    if args.seeds < 2 or args.budget < 1:
        raise EmedgeError("--budget must be >= 1 and --seeds >= 2")
    options = {"batch": args.batch, "acquisition": args.acquisition, "beta": args.beta, "window": args.window,
               "seed": args.seed, "stop_uncertainty": args.stop_uncertainty, "drift_every": args.drift_every,
               "model": args.model}
    run = client.start(args.scalarizer, budget=args.budget, seeds=min(args.seeds, args.budget), **options)
    print(f"emedge: run {run.id} on {client.url}", file=sys.stderr)
    try:
        summary = _follow(run, args.budget)
    except KeyboardInterrupt:
        print(f"emedge: the run goes on on the server; `emedge remote stop --run {run.id}` ends it", file=sys.stderr)
        raise
    files = run.download(args.out) if args.out else run.info()["files"]
    if args.json:
        print_json(summary | {"files": files, "run": run.id})
    else:
        print(f"{summary['n_measured']} measured ({summary['n_failed']} failed) on {client.url}, stopped by "
              f"{summary['stopped_by']}, median step {summary['seconds_per_step_median']:.3f} s; best "
              f"{summary['best_value']} at {summary['best_position']}; files {files}")
    return 0


def _follow(run: typing.Any, budget: int) -> dict[str, typing.Any]:
    """Poll the run with a progress bar on stderr until it ends; its summary."""
    import time

    from tqdm import tqdm

    from emedge_core.remote import RemoteError

    delay = 0.05
    with tqdm(total=budget, unit="pt", desc="emedge remote", dynamic_ncols=True) as bar:
        while True:
            info = run.info()
            bar.update(info["n_measured"] - bar.n)
            if info["state"] == "failed":
                raise RemoteError(f"run {run.id} failed on the server: {info['error']}")
            if info["summary"] is not None:
                return typing.cast(dict[str, typing.Any], info["summary"])
            time.sleep(delay)
            delay = min(0.5, delay * 1.5)
