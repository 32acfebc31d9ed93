"""Streaming chain throughput and latency: ``emedge stream`` against the raw write speed of the same disk.

    python benchmarks/stream.py [--dir DIR] [--rows 32] [--repeats 2] [--cases 4d,si]
                                [--modes fixed,adaptive] [--json]

Cases (twin frames, Poisson counts stored as uint16): ``4d`` - 128 x 128 px diffraction patterns,
a ROWS x 128 scan (32 KiB per frame); ``si`` - 2048-channel EELS spectra, a (4*ROWS) x 128 scan.
The frames are made before the timer starts and handed out row by row from memory (the "detector"),
so the chain is measured, not the twin's simulator: queue -> scalarize -> compress (codec auto) ->
FILE.h5, and blocks published to a stage directory on the same disk (write, fsync, rename).
Each repeat runs ``--modes``: ``fixed`` (auto's first choice kept for the whole scan, the chain
before the speed-aware codec) and ``adaptive`` (``stream``'s default: lighter Blosc2 settings while
the chain falls behind; ``codec_switches`` lists them), on the same frames, one after the other
(the first run of a process pays one-off costs: the order alternates between repeats).

Per case and repeat, one JSON line: ``raw_MBps`` (the same bytes written to the same disk with one
fsync, as a plain file, in the same run), ``chain_MBps`` (raw frame bytes / seconds from the first
row's arrival to FILE.h5 closed, detector at full speed), ``ratio`` = chain / raw (goal >= 0.8),
dropped, spilled frames, and latency p50 / p95 (frame arrival -> value in the map; goal p95 < 100
ms) twice: at full speed (rows queue when the chain is slower than the detector) and paced (the
detector gives a row every 1.5x the chain's mean time per row). ``goal_*``: a third scan with the
detector at the goal's rate, 0.8x the raw disk speed of that repeat (``goal_row_ms`` between rows):
does the chain keep up there - its MB/s, latency, switches, stored size. A last line describes the machine
(cores, load average: this box's 2 cores are shared with other work). ``chain_cpu_MBps``: raw MB per
second of the process's CPU time (all threads) over the full-speed run - what the chain costs, less
sensitive than wall time to what else the cores run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import typing

import numpy as np

from emedge_core.instrument import Frames, Survey
from emedge_core.stream import stream
from emedge_core.twin import DigitalTwin


class Detector:
    """Rows of frames made beforehand, handed out in scan order (``pace_s``: seconds between rows)."""

    def __init__(self, frames: np.ndarray, kind: str, energy: typing.Optional[np.ndarray],
                 mrad: typing.Optional[float], pace_s: float = 0.0) -> None:
        self.frames, self.signal_kind, self.energy, self.mrad = frames, kind, energy, mrad
        self.pace_s, self._next = pace_s, 0.0

    def survey(self) -> Survey:
        return Survey(np.zeros(self.frames.shape[:2], np.float32))

    def state(self) -> dict[str, typing.Any]:
        return {"instrument": "prerecorded twin frames"}

    def available(self) -> typing.Optional[np.ndarray]:
        return None                      # every position

    def measure(self, positions: np.ndarray) -> Frames:
        if self.pace_s:
            now = time.perf_counter()
            self._next = max(self._next, now)
            time.sleep(max(0.0, self._next - now))
            self._next += self.pace_s
        return Frames(self.frames[int(positions[0, 0])], self.signal_kind, self.energy, self.mrad)


def make(case: str, rows: int) -> tuple[np.ndarray, str, typing.Optional[np.ndarray], typing.Optional[float]]:
    if case == "4d":
        twin = DigitalTwin(size=128, signal="diffraction", detector=128)
        h = rows
    else:
        twin = DigitalTwin(size=128, signal="spectrum", channels=2048)
        h = 4 * rows
    out = np.empty((h, 128) + ((128, 128) if case == "4d" else (2048,)), np.uint16)
    for r in range(h):
        got = twin.measure(np.stack([np.full(128, r), np.arange(128)], axis=1))
        out[r] = got.data
    kind = "diffraction" if case == "4d" else "spectrum"
    return out, kind, got.energy_eV, got.mrad_per_px


def raw_write(path: str, frames: np.ndarray) -> float:
    """MB/s writing ``frames``' bytes to ``path`` row by row, then one fsync (the disk's plain speed)."""
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for row in frames:
            f.write(row.tobytes())
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    os.remove(path)
    return frames.nbytes / 1e6 / seconds


def run(case: str, rep: int, adapt: bool, frames: np.ndarray, kind: str, energy: typing.Optional[np.ndarray],
        mrad: typing.Optional[float], work: str, raw: float) -> dict[str, typing.Any]:
    """One full-speed and one paced scan of ``frames`` (``adapt``: auto's speed-aware codec, else its
    first choice kept); the JSON line's fields (see the module docstring)."""
    tag = "a" if adapt else "f"
    scan = "4d" if case == "4d" else "si"
    cpu = time.process_time()
    full = stream(Detector(frames, kind, energy, mrad), scan, frames.shape[:2], os.path.join(work, f"full{tag}.h5"),
                  stage=os.path.join(work, f"stage{tag}"), adapt_codec=adapt)
    cpu = time.process_time() - cpu
    pace = 1.5 * full.seconds / frames.shape[0]
    paced = stream(Detector(frames, kind, energy, mrad, pace), scan, frames.shape[:2],
                   os.path.join(work, f"paced{tag}.h5"), stage=os.path.join(work, f"pstage{tag}"), adapt_codec=adapt)
    goal_pace = frames[0].nbytes / (0.8 * raw * 1e6)        # the detector at 0.8x the raw disk speed
    goal = stream(Detector(frames, kind, energy, mrad, goal_pace), scan, frames.shape[:2],
                  os.path.join(work, f"goal{tag}.h5"), stage=os.path.join(work, f"gstage{tag}"), adapt_codec=adapt)
    line = {"case": case, "repeat": rep, "codec": "auto (adaptive)" if adapt else "auto (first choice kept)",
            "scan": list(frames.shape[:2]), "frame": list(frames.shape[2:]), "dtype": "uint16",
            "MB": frames.nbytes / 1e6,
            "raw_MBps": raw, "chain_MBps": full.sustained_MBps, "ratio": full.sustained_MBps / raw,
            "chain_cpu_MBps": frames.nbytes / 1e6 / cpu,
            "frames": full.frames, "dropped": full.dropped + paced.dropped,
            "spilled_frames": full.spilled_frames, "chunks_published": full.chunks_published,
            "latency_ms_p50": full.latency_ms_p50, "latency_ms_p95": full.latency_ms_p95,
            "paced_row_ms": pace * 1e3, "paced_MBps": paced.sustained_MBps,
            "paced_latency_ms_p50": paced.latency_ms_p50, "paced_latency_ms_p95": paced.latency_ms_p95,
            "ratio_stored": os.path.getsize(os.path.join(work, f"full{tag}.h5")) / frames.nbytes,
            "codec_switches": full.codec_switches, "paced_codec_switches": paced.codec_switches,
            "goal_row_ms": goal_pace * 1e3, "goal_MBps": goal.sustained_MBps,
            "goal_latency_ms_p50": goal.latency_ms_p50, "goal_latency_ms_p95": goal.latency_ms_p95,
            "goal_dropped": goal.dropped, "goal_codec_switches": goal.codec_switches,
            "goal_ratio_stored": os.path.getsize(os.path.join(work, f"goal{tag}.h5")) / frames.nbytes}
    return line


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cases", default="4d,si")
    p.add_argument("--modes", default="fixed,adaptive",
                   help="codec auto with its first choice kept (fixed, the chain before) and/or speed-aware (adaptive)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    modes = [{"fixed": False, "adaptive": True}[m] for m in args.modes.split(",")]
    base = tempfile.mkdtemp(prefix="emedge-stream-", dir=args.dir)
    try:
        for case in args.cases.split(","):
            frames, kind, energy, mrad = make(case, args.rows)
            for rep in range(args.repeats):
                work = os.path.join(base, f"{case}{rep}")
                os.makedirs(work)
                raw = raw_write(os.path.join(work, "raw.bin"), frames)
                for adapt in (modes if rep % 2 == 0 else modes[::-1]):      # either goes first in turn
                    line = run(case, rep, adapt, frames, kind, energy, mrad, work, raw)
                    print(json.dumps(line) if args.json else
                          f"{case} #{rep} {'adaptive' if adapt else 'fixed'}: chain {line['chain_MBps']:.0f} MB/s vs "
                          f"raw disk {raw:.0f} MB/s ({line['ratio']:.2f}x), dropped {line['dropped']}, latency "
                          f"p50/p95 {line['latency_ms_p50']:.0f}/{line['latency_ms_p95']:.0f} ms full speed, "
                          f"{line['paced_latency_ms_p50']:.0f}/{line['paced_latency_ms_p95']:.0f} ms paced, "
                          f"{len(line['codec_switches'])} codec switches")
                    sys.stdout.flush()
                shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    machine = {"machine": True, "cpus": os.cpu_count(), "loadavg_1min": os.getloadavg()[0],
               "note": "shared box: other work ran on the same cores"}
    print(json.dumps(machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
