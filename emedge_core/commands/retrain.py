"""``emedge retrain``: refit the model on every measurement of an experiment file (run on the node).

    emedge retrain experiment.h5 [--out maps.emd] [--window W] [--iters N] [--seed S] [--json]

Reads ``/experiment`` of an ``experiment.h5`` written by ``emedge run`` (survey, positions, values
and the run's configuration), refits the run's model exactly as the live loop does - patch
features, probe coordinates (the spatial kernel term) and every model setting - and writes the
prediction and uncertainty (std of the predicted scalar) maps, in scalar units, as an EMD file with provenance.
With --json the last stdout line is ``{"out", "n_measurements", "final_loss", "spatial", "seconds"}``.
The HPC job kind ``retrain`` (:func:`emedge_core.jobs.retrain_job`) runs this command.
"""
from __future__ import annotations

import argparse
import typing


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "retrain", help="refit the model on every measurement of an experiment.h5 (the HPC retrain job)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="experiment.h5 written by `emedge run`")
    p.add_argument("--out", default="maps.emd", help="output EMD file (default maps.emd)")
    p.add_argument("--window", type=int, help="patch edge in survey px (default: the run's)")
    p.add_argument("--iters", type=int, help="optimizer steps (default: the run's model setting)")
    p.add_argument("--seed", type=int, help="random seed (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emedge_core import EmedgeError
    from emedge_core.jobs import retrain

    for name in ("window", "iters"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise EmedgeError(f"--{name} must be >= 1")
    summary = retrain(args.experiment, args.out, args.window, args.iters, args.seed)
    if args.json:
        from emedge_core.cli import print_json

        print_json(summary)
    else:
        print(f"refitted on {summary['n_measurements']} measurements (spatial term: "
              f"{'yes' if summary['spatial'] else 'no'}) in {summary['seconds']:.1f} s; wrote {summary['out']}")
    return 0
