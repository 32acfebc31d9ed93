"""``emedge follow``: reduce the blocks of a stage directory as they appear, resumable.

    emedge follow DIR --scalarizer SPEC --out RESULT.h5 [--until-complete] [--scheduler ADDRESS]
                  [--timeout S] --json

DIR is where ``emedge stream --stage DIR`` publishes closed blocks and ``manifest.json``. Every block
not yet in RESULT.h5 is reduced and committed (RESULT.h5 replaced atomically after each block; it is
also the progress record, so a follower killed at any moment resumes without doing a block twice or
losing one). Without --until-complete: one pass over the blocks there now; with it: wait for new blocks
until the manifest says the scan ended. When it ended and every block is done, RESULT.h5 gains ``map``
(H, W[, k]). --scheduler: a Dask distributed scheduler address (tcp://host:8786); blocks of scan rows,
matching the EMD chunks, are reduced on its workers (which need nionswift-emedge installed). The last
stdout line (--json): out, blocks_processed, blocks_done, frames, complete, seconds, scheduler, resolved.
"""
from __future__ import annotations

import argparse
import typing


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "follow", help="reduce a stage directory's blocks as they land (resumable, Dask optional)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", metavar="DIR", help="the stage directory (holds manifest.json)")
    p.add_argument("--scalarizer", required=True, help='a name or a JSON object {"name": ..., <params>}')
    p.add_argument("--out", required=True, help="RESULT.h5: results and progress, resumed from when present")
    p.add_argument("--until-complete", action="store_true", help="wait until the manifest says the scan ended")
    p.add_argument("--scheduler", help="Dask distributed scheduler address to reduce on")
    p.add_argument("--timeout", type=float, default=None, help="with --until-complete: give up after S seconds")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emedge_core.cli import print_json
    from emedge_core.stream.follow import follow

    result = follow(args.directory, args.scalarizer, args.out, until_complete=args.until_complete,
                    scheduler=args.scheduler, timeout_s=args.timeout)
    if args.json:
        print_json(result.summary())
    else:
        print(f"{result.blocks_processed} blocks reduced ({result.blocks_done} in {result.out}, "
              f"{result.frames} frames){', scan complete' if result.complete else ''}")
    return 0
