"""``emedge serve``: the remote-control server on this machine's instrument.

    emedge serve --instrument twin|usim|replay [--data FILE] [--host H] [--port P] [--token-file F]
                 [--cert F --key F] [--json]

Listens on 127.0.0.1 unless --host says otherwise; every request needs the token in --token-file
(made, mode 0600, when the file does not exist). With --json the first stdout line is
{"url": ..., "token_file": ...}. Runs until SIGTERM or SIGINT, then stops the runs after their
current step (their files are written) and exits 0. See docs/remote.md.
"""
from __future__ import annotations

import argparse
import os
import typing

from emedge_core import EmedgeError
from emedge_core.commands.run import _pair
from emedge_core.instrument import instrument_factories

if typing.TYPE_CHECKING:
    from emedge_core.remote.server import Instruments


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="serve the experiment operations to clients on other computers (token, TLS)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instrument", choices=sorted(instrument_factories()), default="twin",
                   help="twin: the digital twin (a fresh one per run, seeded by the run's seed); replay: frames "
                        "from --data; usim: nionswift-usim through Swift's instrumentation")
    p.add_argument("--data", help="replay file (.npz or HDF5, as for emedge run)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any free port)")
    p.add_argument("--token-file", default=None,
                   help="file holding the token (default ~/.config/emedge/remote-token; made, mode 0600, if missing)")
    p.add_argument("--cert", help="TLS certificate (PEM); with --key the server speaks https")
    p.add_argument("--key", help="TLS private key (PEM)")
    p.add_argument("--out", default=None, help="where runs write run-<id>/ and the action log "
                                                "(default <staging dir>/remote)")
    p.add_argument("--max-runs", type=int, default=1, help="runs at the same time (default 1)")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second per caller (default 50)")
    p.add_argument("--max-body", type=int, default=1 << 20, help="bytes per request body (default 1 MiB)")
    p.add_argument("--signal", choices=("spectrum", "diffraction"), default=None,
                   help="usim: the frames to serve (default spectrum; the twin serves both, a replay file its own)")
    p.add_argument("--size", type=int, default=128, help="twin and usim: survey edge in px (default 128)")
    p.add_argument("--dose", type=float, default=2e4, help="twin only: electrons per frame (default 2e4)")
    p.add_argument("--drift", default=None, metavar="DY,DX", help="twin only: specimen drift, px per frame")
    p.add_argument("--json", action="store_true", help='first stdout line: {"url": ..., "token_file": ...}')
    p.set_defaults(func=serve)


def make_instruments(args: argparse.Namespace) -> Instruments:
    """The server's instruments from the ``emedge serve`` options (opened through
    :func:`emedge_core.instrument.open_instrument`, like ``emedge run``'s)."""
    from emedge_core.instrument import InstrumentOptions, open_instrument
    from emedge_core.remote.schemas import BadRequest
    from emedge_core.remote.server import Instruments

    drift = _pair(args.drift, "--drift")

    if args.instrument == "twin":      # a fresh twin per run, seeded by the run; bad knobs fail now
        open_instrument("twin", InstrumentOptions(size=args.size, dose=args.dose, drift_px_per_frame=drift))
        return Instruments("twin", lambda signal, seed: open_instrument("twin", InstrumentOptions(
            signal_kind=signal, size=args.size, seed=seed, dose=args.dose, drift_px_per_frame=drift)),
            fresh_per_run=True)
    # one instrument for the server's life, made here on the main thread (Swift's instrumentation wants
    # its sessions made there); a bad file or a missing simulator fails now, not at the first request
    first = open_instrument(args.instrument, InstrumentOptions(
        signal_kind=args.signal or "spectrum", size=args.size, dose=args.dose, drift_px_per_frame=drift,
        data=args.data))
    signal = first.signal_kind
    if args.signal is not None and signal != args.signal:
        getattr(first, "close", lambda: None)()
        raise EmedgeError(f"--signal {args.signal}: the {args.instrument} instrument gives {signal} frames")

    def only(wanted: str, seed: int) -> typing.Any:
        raise BadRequest(f"this server's {args.instrument} instrument gives {signal} frames, not {wanted} "
                         f"(emedge serve --signal {wanted} serves those)")

    return Instruments(args.instrument, only, opened={signal: first})


def serve(args: argparse.Namespace) -> int:
    from emedge_core.remote.auth import ensure_token
    from emedge_core.remote.server import Limits, RemoteServer, serve_until_signal

    if not 0 <= args.port < 65536:
        raise EmedgeError("--port must be in 0..65535")
    if args.max_runs < 1 or args.rate <= 0 or args.max_body < 1024:
        raise EmedgeError("--max-runs must be >= 1, --rate > 0 and --max-body >= 1024")
    for flag in ("cert", "key"):
        path = getattr(args, flag)
        if path is not None and not os.path.isfile(path):
            raise EmedgeError(f"--{flag} {path} is not a file")
    token, token_file = ensure_token(args.token_file)
    instruments = make_instruments(args)
    try:
        server = RemoteServer(instruments, token, host=args.host, port=args.port, out_root=args.out,
                              certfile=args.cert, keyfile=args.key,
                              limits=Limits(max_body=args.max_body, rate=args.rate, burst=max(1, int(2 * args.rate)),
                                            max_runs=args.max_runs))
    except BaseException:
        instruments.close()        # a simulator session left open keeps the process from exiting
        raise

    def ready(url: str) -> None:
        if args.json:
            from emedge_core.cli import print_json

            print_json({"url": url, "token_file": str(token_file)})
        else:
            print(f"emedge: serving {args.instrument} on {url} (token in {token_file}); Ctrl-C stops", flush=True)

    serve_until_signal(server, ready)
    return 0
