"""The ``emedge`` command line: one sub-command per module in :mod:`emedge_core.commands`.

Every sub-command module exposes ``register(subparsers)``, which adds its parser and
sets ``func(args) -> int``. Bad input raises :class:`emedge_core.EmedgeError`; it is
printed as one ``emedge: error: ...`` line on stderr with exit status 2, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import typing

from emedge_core import EmedgeError, __version__

COMMAND_MODULES = (
    "emedge_core.commands.run",
    "emedge_core.commands.scalarize",
    "emedge_core.commands.compress",
    "emedge_core.commands.serve",
    "emedge_core.commands.remote",
    "emedge_core.commands.virtual",
    "emedge_core.commands.jobs",
    "emedge_core.commands.retrain",
    "emedge_core.commands.stream",
    "emedge_core.commands.follow",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emedge", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"nionswift-emedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def print_json(obj: typing.Any) -> None:
    """Print ``obj`` as one JSON line on stdout (the contract for ``--json``: the last line)."""
    sys.stdout.write(json.dumps(obj, allow_nan=False, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(x: typing.Any) -> typing.Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON-able: {type(x).__name__}")


def main(argv: typing.Optional[typing.Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()          # inside the try: a closed pipe is caught below
        return status
    except EmedgeError as e:
        print(f"emedge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emedge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `emedge inspect FILE | head`: the reader went away. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again; no signal handler is changed, so this is
        # safe in-process (Swift's console, tests).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


if __name__ == "__main__":
    sys.exit(main())
