"""``emedge stream``: acquire a whole scan, scalarize and compress it as it arrives, publish it as it goes.

    emedge stream --instrument twin|usim|replay [--data FILE] --kind si|4d --scan HxW --out FILE.h5
                  [--stage DIR] [--scalarizer SPEC] [--codec auto|...] [--fixed-codec] [--dtype uint16]
                  [--block-rows N] [--queue-mb M] --json

Frames arrive row by row; each row is reduced into the scalar map (FILE.map.npy, (H, W) or (H, W, k))
and appended to FILE.h5 (EMD 1.0, plain-readable with ``auto``); with --stage, every block of rows that
fills one chunk of FILE.h5 is published to DIR as a closed file with a manifest (see
:mod:`emedge_core.stream.stage`), for ``emedge follow``. Waiting rows stay in memory up to --queue-mb,
then spill raw to FILE.h5.spill/ (counted). SIGINT/SIGTERM ends the scan after the current row and
leaves a valid partial file. The last stdout line (--json) holds frames, dropped, chunks_published,
seconds, sustained_MBps, latency_ms_p50, latency_ms_p95 (frame arrival to its value in the map),
scalar_map, and complete, stopped, rows, spilled_frames, peak_queue_MB, resolved, codec_switches. Exit
status 1 when the scan ended early. With ``--codec auto`` the chain steps to lighter Blosc2 settings while it
falls behind the detector (recorded in codec_switches); --fixed-codec keeps auto's first choice all scan.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import typing

from emedge_core import EmedgeError


def register(sub: typing.Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "stream", help="acquire a scan: scalarize, compress and publish as it arrives", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instrument", required=True, help="twin, usim, replay or an installed plug-in")
    p.add_argument("--data", help="replay: the file to replay")
    p.add_argument("--kind", required=True, choices=("si", "4d"), help="spectrum image or 4D-STEM")
    p.add_argument("--scan", help="HxW scan positions (default for replay: the whole file)")
    p.add_argument("--out", required=True, help="the EMD file to write (FILE.h5)")
    p.add_argument("--stage", help="directory to publish closed blocks and the manifest to")
    p.add_argument("--scalarizer", help='a name or JSON spec (default: eels_peak_energy for si, virtual_bf for 4d)')
    p.add_argument("--codec", default="auto", help="codec of FILE.h5 (default auto)")
    p.add_argument("--fixed-codec", action="store_true",
                   help="with --codec auto: keep its first choice for the whole scan, even when the chain falls "
                        "behind (smallest file; default: step to lighter codecs and back)")
    p.add_argument("--dtype", help="store frames as this dtype (twin default: uint16 counts)")
    p.add_argument("--detector", type=int, default=32, help="twin: diffraction pattern edge in px (default 32)")
    p.add_argument("--channels", type=int, default=512, help="twin: EELS channels (default 512)")
    p.add_argument("--block-rows", type=int, help="scan rows per published block, FILE.h5 then chunked by rows "
                                                  "(default: the rows of one ~4 MiB chunk)")
    p.add_argument("--queue-mb", type=float, default=256.0, help="MB of rows held in memory before raw spill")
    p.add_argument("--seed", type=int, default=0, help="twin: random seed")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    p.set_defaults(func=run)


def parse_scan(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EmedgeError(f"--scan wants HxW (e.g. 64x64), not {text!r}") from None
    return h, w


def run(args: argparse.Namespace) -> int:
    from emedge_core.cli import print_json
    from emedge_core.instrument import InstrumentOptions, open_instrument
    from emedge_core.stream.acquire import KINDS, stream
    from emedge_core.twin import DigitalTwin

    scan = parse_scan(args.scan) if args.scan else None
    dtype = args.dtype
    if args.instrument == "twin":
        if scan is None:
            raise EmedgeError("--instrument twin needs --scan HxW")
        try:
            inst: typing.Any = DigitalTwin(size=max(16, *scan), signal=KINDS[args.kind], seed=args.seed,
                                           detector=args.detector, channels=args.channels)
        except ValueError as e:
            raise EmedgeError(str(e)) from None
        dtype = dtype or "uint16"
    else:
        inst = open_instrument(args.instrument, InstrumentOptions(signal_kind=KINDS[args.kind], data=args.data,
                                                                  size=max(scan) if scan else 128))
        if scan is None:
            scan = inst.survey().shape
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = stream(inst, args.kind, scan, args.out, stage=args.stage, scalarizer=args.scalarizer,
                        codec=args.codec, dtype=dtype, queue_bytes=int(args.queue_mb * 1e6), stop=stop,
                        block_rows=args.block_rows, adapt_codec=not args.fixed_codec)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        close = getattr(inst, "close", None)
        if close is not None:
            close()
    if result.stopped:
        print(f"emedge: warning: {result.stopped}", file=sys.stderr)
    if args.json:
        print_json(result.summary())
    else:
        print(f"{result.frames} frames in {result.seconds:.2f} s ({result.sustained_MBps:.1f} MB/s), "
              f"latency p50 {result.latency_ms_p50:.1f} ms, p95 {result.latency_ms_p95:.1f} ms; "
              f"{result.chunks_published} blocks published; map {result.scalar_map}")
    return 0 if result.complete else 1
