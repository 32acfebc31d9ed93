"""The real Swift GUI (PySide6) under Xvfb: a usim SI scan streamed from the Stream Scan panel while the
HPC Jobs panel follows its stage with a local ``follow`` job; both maps fill in live; screenshots
(one while the scan runs, once the follow job's map has rows, when it gets there first; one at the end).
That the follow map arrives during the scan is asserted by tests/test_swift_stream.py (by counting);
here it is only reported (``follow_updates``: rows and whether the scan was still running).

Run as a script in a child process (Qt owns its main thread), as tests/test_gui_swift.py does (its
profile and Xvfb helpers are reused). Writes ``test-artifacts/swift_stream.png`` and
``test-artifacts/gui_stream_report.json``.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import typing

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_gui_swift import (ARTIFACTS, ROOT, SCREEN_PX, _make_profile, display,  # noqa: E402, F401
                            first_window, on_ui, persistent_items_only)

SCAN = (24, 24)


def drive(out: pathlib.Path, work: pathlib.Path) -> int:
    """Run Swift, submit the follow job, start the scan, screenshot when both have ended."""
    _make_profile(pathlib.Path(os.environ["HOME"]))
    import nion.ui.command
    from PySide6 import QtCore, QtWidgets

    app, err = nion.ui.command.bootstrap_main(["nionui", "nionui_app.nionswift"])
    assert app is not None, err
    report: dict[str, typing.Any] = {"ok": False, "follow_updates": []}

    def script() -> None:
        dc = None
        try:
            dc = first_window(app)

            def submit_follow() -> typing.Any:
                for w in QtWidgets.QApplication.topLevelWidgets():
                    if w.isVisible():
                        w.setGeometry(0, 0, *SCREEN_PX)
                wc = dc.workspace_controller            # two empty display panels: the live maps fill them
                for p in wc.apply_layouts(wc.display_panels[0], [wc.display_panels[0]], 2, 1):
                    p.set_display_panel_display_item(None)
                hpc = dc.find_dock_panel("emedge-hpc-panel")
                hpc.show()
                view = hpc.panel_delegate.views[-1]
                view.backend.current_item = "local"
                view.kind.current_item = "follow"
                view.stage.text = str(work / "scan" / "stage")
                view.scalarizer.text = "eels_band_integral"
                view.submit_button.on_clicked()
                return view

            hpc = on_ui(submit_follow, dc)
            t_end = time.monotonic() + 60
            while not hpc.watches:
                if time.monotonic() > t_end:
                    raise TimeoutError(f"no follow job: {on_ui(lambda: hpc.status.text, dc)}")
                time.sleep(0.2)
            (watch,) = hpc.watches.values()

            def start_scan() -> typing.Any:
                persistent_items_only(dc)
                panel = dc.find_dock_panel("emedge-stream-panel")
                panel.show()
                view = panel.panel_delegate.views[-1]
                view.scan.text = f"{SCAN[0]}x{SCAN[1]}"
                view.scalarizer.current_item = "eels_band_integral"
                view.out_dir.text = str(work / "scan")
                view.block_rows.text = "2"          # a block file (and a follow update) per 2 rows
                view.start_button.on_clicked()
                live = view.live
                watch.listeners.append(lambda s, job: report["follow_updates"].append([s.rows, live.result is None]))
                return view

            view = on_ui(start_scan, dc)
            live = view.live
            assert live is not None, on_ui(lambda: view.status.text, dc)
            t_mid = time.monotonic() + 240
            while live.running and not any(0 < r < SCAN[0] for r, _ in report["follow_updates"]):
                if time.monotonic() > t_mid:
                    break
                time.sleep(0.1)
            time.sleep(0.5)                         # Qt paints the partial maps
            subprocess.run(["import", "-window", "root", str(out / "swift_stream_during.png")], check=True,
                           timeout=30)
            report["screenshot_during_scan"] = live.running
            live.wait(240)
            watch.wait(240)
            time.sleep(2.0)                         # the last UI updates, and Qt paints
            report["stream_status"] = on_ui(lambda: view.status.text, dc)
            report["hpc_status"] = on_ui(lambda: hpc.status.text, dc)
            report["shown"] = on_ui(lambda: [p.display_item.displayed_title if p.display_item else None
                                             for p in dc.workspace_controller.display_panels], dc)
            report["stream_rows_shown"] = live.shown_rows
            report["errors"] = [live.error, watch.error]
            subprocess.run(["import", "-window", "root", str(out / "swift_stream.png")], check=True, timeout=30)
            report["ok"] = True
        except BaseException as e:
            report["exception"] = f"{type(e).__name__}: {e}"
        finally:
            (out / "gui_stream_report.json").write_text(json.dumps(report, indent=1))
            if dc is not None:
                dc.queue_task(lambda: QtCore.QTimer.singleShot(0, app.exit))

    threading.Thread(target=script, daemon=True).start()
    app.run()
    return 0 if report["ok"] else 1


def test_swift_gui_stream_and_follow_screenshot(display: str, tmp_path: pathlib.Path) -> None:  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    for name in ("swift_stream.png", "swift_stream_during.png", "gui_stream_report.json"):
        (ARTIFACTS / name).unlink(missing_ok=True)
    env = dict(os.environ, DISPLAY=display, HOME=str(tmp_path), QT_QPA_PLATFORM="xcb", PYTHONPATH=str(ROOT),
               EMEDGE_STAGING_DIR=str(tmp_path / "staging"), EMEDGE_SYSTEM_CONFIG=str(tmp_path / "none.toml"),
               EMEDGE_HPC_REGISTRY=str(tmp_path / "registry.json"), EMEDGE_HPC_STAGING=str(tmp_path / "jobs"),
               EMEDGE_HPC_CONFIG=str(tmp_path / "none-hpc.toml"))
    env.pop("XDG_CONFIG_HOME", None)
    proc = subprocess.run([sys.executable, __file__, str(ARTIFACTS), str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=500)
    assert (ARTIFACTS / "gui_stream_report.json").exists(), proc.stderr[-3000:]
    report = json.loads((ARTIFACTS / "gui_stream_report.json").read_text())
    assert report["ok"], (report, proc.stderr[-3000:])
    # After a synchronized usim scan in the GUI, this Python (3.11.7, PySide6 6.12, nionswift 16.16,
    # instrumentation 23.6) sometimes aborts as Swift closes ("Fatal Python error: none_dealloc: deallocating
    # None: bug likely caused by a refcount error in a C extension", SIGABRT) - after everything is written
    # and checked; the same stream from the twin exits 0. That one crash is tolerated, nothing else.
    known_crash = proc.returncode == -6 and "none_dealloc" in proc.stderr
    assert proc.returncode == 0 or known_crash, (proc.returncode, proc.stderr[-3000:])
    assert report["errors"] == [None, None]
    h, w = SCAN
    assert report["stream_status"].startswith(f"finished: {h}/{h} rows, {h * w} frames, 0 dropped"), report
    assert report["hpc_status"].endswith(f"COMPLETED: {h}/{h} rows reduced"), report
    shown = report["shown"]
    assert len(shown) == 2 and "emedge stream map" in shown and any(
        t is not None and t.startswith("emedge follow local:") for t in shown), shown
    assert report["stream_rows_shown"][-1] == h and report["follow_updates"][-1][0] == h
    assert (ARTIFACTS / "swift_stream.png").stat().st_size > 20_000


if __name__ == "__main__":
    sys.exit(drive(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])))
