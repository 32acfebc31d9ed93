"""Longest UI-thread stall while the Autonomous Experiment runs 50 steps inside Swift.

Swift (headless TestUI) runs with nionswift-usim connected; the experiment is started exactly as the
panel starts it (:func:`nionswift_plugin.emedge.console.start`) and its live data items update after
every step. This script's main thread plays Swift's UI thread: every ``--tick-ms`` it runs the queued
UI tasks (``document_controller.periodic()``). A stall is how much later than scheduled a tick comes
(the UI thread was busy with our tasks, or starved of the GIL by the loop's thread); the longest one
is the figure (goal <= 50 ms).

    python benchmarks/ui_stall.py [--instrument usim|twin] [--steps 50] [--survey 64] [--tick-ms 5]

Prints one JSON line: max_stall_ms, p99_stall_ms, max_ui_task_ms (the longest ``periodic()``: our tasks
and Swift's own work, e.g. the camera's live data items), max_emedge_task_ms (the longest of emedge's
own UI tasks), ui_updates, steps, seconds, ... and baseline_max_stall_ms, the same loop for
``--baseline-s`` before the run starts (the machine's own noise).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import typing

import numpy as np


def ui_loop(dc: typing.Any, tick: float, more: typing.Callable[[], bool]) -> tuple[list[float], list[float]]:
    """Run ``dc.periodic()`` every ``tick`` s while ``more()``; returns (stalls, task times) in s."""
    stalls: list[float] = []
    tasks: list[float] = []
    last = time.perf_counter()
    while more():
        t0 = time.perf_counter()
        dc.periodic()
        tasks.append(time.perf_counter() - t0)
        time.sleep(tick)
        now = time.perf_counter()
        stalls.append(now - last - tick)
        last = now
    return stalls, tasks


def _timed(fn: typing.Callable[..., None], out: list[float]) -> typing.Callable[..., None]:
    def timed(*args: typing.Any) -> None:
        t0 = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t0)
    return timed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instrument", choices=("usim", "twin"), default="usim")
    p.add_argument("--steps", type=int, default=50, help="loop steps (the seeds are the first step)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--survey", type=int, default=64, help="survey edge (px)")
    p.add_argument("--tick-ms", type=float, default=5.0, help="UI loop period (ms)")
    p.add_argument("--baseline-s", type=float, default=5.0, help="idle UI loop before the run (s)")
    args = p.parse_args()

    from nion.swift import Facade
    from nion.swift.test import TestContext

    from nionswift_plugin.emedge import console
    from nionswift_plugin.emedge.live import LiveExperiment
    from nionswift_plugin.emedge.swift_instrument import UsimSession

    ours: list[float] = []
    for name in ("_apply", "_next"):        # time emedge's own UI tasks
        setattr(LiveExperiment, name, _timed(getattr(LiveExperiment, name), ours))

    Facade.initialize()
    usim = UsimSession() if args.instrument == "usim" else None   # before Swift's app (see the tests)
    setup = TestContext.TestSetup(set_global=True)
    profile = TestContext.MemoryProfileContext()
    dc = setup.app.create_document_controller(profile.create_document_model(auto_close=False), "library")
    tick = args.tick_ms / 1e3
    updates = 0
    t_base = time.perf_counter() + args.baseline_s
    baseline, _ = ui_loop(dc, tick, lambda: time.perf_counter() < t_base)
    try:
        with tempfile.TemporaryDirectory() as out:
            live = console.start("microscope" if usim else "twin", "eels_band_integral",
                                 budget=args.seeds + args.steps - 1, seeds=args.seeds, window_px=8,
                                 survey_px=args.survey, out_dir=out, document_window=Facade.DocumentWindow(dc))

            def count(_: object) -> None:
                nonlocal updates
                updates += 1

            live.listeners.append(count)
            t_start = time.perf_counter()
            stalls, tasks = ui_loop(dc, tick, lambda: not live.done)
            seconds = time.perf_counter() - t_start
            if live.error or live.result is None:
                raise SystemExit(f"ui_stall: the run failed: {live.error}")
            steps = len(live.result.step_seconds)
    finally:
        dc.close()
        profile.close()
        if usim is not None:
            usim.close()
    s = np.asarray(stalls) * 1e3
    print(json.dumps({
        "max_stall_ms": round(float(s.max()), 1), "p99_stall_ms": round(float(np.percentile(s, 99)), 1),
        "max_ui_task_ms": round(max(tasks) * 1e3, 1), "max_emedge_task_ms": round(max(ours) * 1e3, 1),
        "ui_updates": updates, "steps": steps,
        "seconds": round(seconds, 1), "median_step_s": round(float(np.median(live.result.step_seconds)), 3),
        "baseline_max_stall_ms": round(max(baseline) * 1e3, 1), "instrument": args.instrument,
        "survey_px": args.survey, "tick_ms": args.tick_ms, "goal_ms": 50,
        "ok": bool(s.max() <= 50)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
