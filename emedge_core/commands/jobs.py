"""``emedge jobs``: submit, follow, cancel and fetch HPC jobs from the command line.

    emedge jobs submit [--backend local|slurmrest|sfapi] [--url URL] --script FILE
                       [--stage-in F]... [--stage-out F]... [--name NAME] [--wait] [--json]
    emedge jobs status ID [--json]
    emedge jobs cancel ID [--json]
    emedge jobs fetch ID DIR [--json]

The backend and URL default to the facility settings' ``[hpc]`` section (``backend``, ``url``;
``EMEDGE_HPC_BACKEND``, ``EMEDGE_HPC_URL``), as in the Swift panel; without them: ``local``, and
the URL from ``SLURM_REST_URL`` / ``SFAPI_URL`` / hpc.toml. Job ids name their backend
(``local:<key>``, ``slurmrest:<jobid>``, ``sfapi:<jobid>``); the server and staging directory of
each submitted job are kept in the local job registry (``$EMEDGE_HPC_REGISTRY``). Credentials come
from the environment or hpc_client's config file (``SLURM_REST_USER``/``SLURM_REST_TOKEN``,
``SFAPI_*``; see docs/hpc.md) and are never printed. With --json the last stdout line is
``{"id", "state", "exit_code", "outputs"}`` (fetch adds ``files``). Exit status: 0, or 1 when a
waited-for job did not complete, 2 for bad input or an HPC error.
"""
from __future__ import annotations

import argparse
import sys
import typing

from emedge_core import EmedgeError
from emedge_core.choices import HPC_BACKENDS


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "jobs", help="submit, follow, cancel and fetch HPC jobs (local, Slurm REST, NERSC SFAPI)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    s = verbs.add_parser("submit", help="stage inputs and submit a script")
    s.add_argument("--backend", choices=HPC_BACKENDS, default=None,
                   help="where to run (default: [hpc] backend of the settings, else local)")
    s.add_argument("--url", help="slurmrestd or SFAPI base URL (default: [hpc] url, else SLURM_REST_URL / SFAPI_URL "
                                 "/ hpc.toml)")
    s.add_argument("--script", required=True, help="the job script (bash unless it has a #! line)")
    s.add_argument("--stage-in", action="append", default=[], metavar="F", help="file copied next to the job (repeat)")
    s.add_argument("--stage-out", action="append", default=[], metavar="F",
                   help="file the job writes, to fetch afterwards (repeat)")
    s.add_argument("--name", default="emedge", help="job name (default emedge)")
    s.add_argument("--wait", action="store_true", help="follow the job until it ends (progress on stderr)")
    s.add_argument("--json", action="store_true", help="print the job as one JSON line last")
    s.set_defaults(func=submit)
    for verb, helptext in (("status", "show a job's state"), ("cancel", "cancel a job (any state)")):
        v = verbs.add_parser(verb, help=helptext)
        v.add_argument("id", help="job id, e.g. slurmrest:42")
        v.add_argument("--json", action="store_true", help="print the job as one JSON line last")
        v.set_defaults(func=status if verb == "status" else cancel)
    f = verbs.add_parser("fetch", help="copy a finished job's outputs into DIR (checksums checked)")
    f.add_argument("id", help="job id")
    f.add_argument("dir", help="destination directory")
    f.add_argument("--json", action="store_true", help="print the job and the fetched files as one JSON line last")
    f.set_defaults(func=fetch)


def _guard(fn: typing.Callable[[argparse.Namespace], int]) -> typing.Callable[[argparse.Namespace], int]:
    """Turn the client's errors into the CLI's one-line ``emedge: error: ...``."""
    def wrapped(args: argparse.Namespace) -> int:
        from hpc_client.errors import HPCError

        try:
            return fn(args)
        except HPCError as e:
            raise EmedgeError(f"{type(e).__name__}: {e}") from None
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _report(job: typing.Any, as_json: bool, extra: typing.Optional[dict[str, typing.Any]] = None) -> None:
    if as_json:
        from emedge_core.cli import print_json

        print_json(job.summary() | (extra or {}))
    else:
        code = "" if job.exit_code is None else f", exit code {job.exit_code}"
        print(f"{job.id}: {job.state.value}{code}" + (f"; outputs: {', '.join(job.outputs)}" if job.outputs else ""))


@_guard
def submit(args: argparse.Namespace) -> int:
    from hpc_client.job import JobSpec, JobState

    from emedge_core.jobs import open_client

    try:
        with open(args.script) as fp:
            script = fp.read()
    except OSError as e:
        raise EmedgeError(f"cannot read --script {args.script}: {e.strerror}") from None
    try:
        spec = JobSpec(script=script, name=args.name, stage_in=args.stage_in, stage_out=args.stage_out)
    except ValueError as e:
        raise EmedgeError(str(e)) from None
    client = open_client(args.backend, url=args.url)
    job = client.submit(spec)
    print(f"submitted {job.id} ({job.state.value})", file=sys.stderr)
    if args.wait:
        seen: list[str] = [job.state.value]

        def progress(j: typing.Any) -> None:
            if j.state.value != seen[-1]:
                seen.append(j.state.value)
                print(f"{j.id}: {j.state.value}", file=sys.stderr)

        job = client.wait(job.id, callback=progress)
        if job.state != JobState.COMPLETED and job.stderr_tail.strip():
            print("stderr tail:\n" + job.stderr_tail.rstrip()[-2000:], file=sys.stderr)
    _report(job, args.json)
    return 0 if not args.wait or job.state == JobState.COMPLETED else 1


@_guard
def status(args: argparse.Namespace) -> int:
    from hpc_client.client import client_for

    _report(client_for(args.id).status(args.id), args.json)
    return 0


@_guard
def cancel(args: argparse.Namespace) -> int:
    from hpc_client.client import client_for

    _report(client_for(args.id).cancel(args.id), args.json)
    return 0


@_guard
def fetch(args: argparse.Namespace) -> int:
    from hpc_client.client import client_for

    client = client_for(args.id)
    files = client.fetch(args.id, args.dir)
    job = client.status(args.id)
    if args.json:
        _report(job, True, {"files": files})
    else:
        print("\n".join(files) if files else f"{args.id}: no outputs to fetch")
    return 0
