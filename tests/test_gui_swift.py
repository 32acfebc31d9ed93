"""The real Swift GUI (PySide6) under Xvfb: the plug-in loads, Start runs on nionswift-usim, screenshot.

The test starts Xvfb and runs this file as a script in a child process (Qt owns that process's
main thread). The script pre-creates a Swift profile so no "Choose Project" dialog appears,
launches Swift, shows the Autonomous Experiment panel, splits the workspace into three empty display
panels, presses Start (the three live data items fill them) and takes a screenshot of the whole
screen when the run has finished:
``test-artifacts/swift_panel.png`` (and a JSON report next to it).
"""
from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import typing
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SCREEN_PX = (1600, 1000)
SCREEN = f"{SCREEN_PX[0]}x{SCREEN_PX[1]}x24"


def _make_profile(home: pathlib.Path) -> None:
    """A Swift profile with one project, so Swift opens straight into it."""
    from nion.swift.model import FileStorageSystem, Profile

    d = home / ".local" / "share" / "Nion" / "Nion Swift"
    d.mkdir(parents=True)
    p = d / "Profile.nsproj"
    p.write_text(json.dumps({"version": 2, "uuid": str(uuid.uuid4())}))
    st = FileStorageSystem.make_file_persistent_storage_system(p)
    st.load_properties()
    try:     # nionswift >= 16.17 takes the event loop first
        pr = Profile.Profile(asyncio.new_event_loop(), storage_system=st, cache_dir_path=d / "Cache")
    except TypeError:
        pr = Profile.Profile(storage_system=st, cache_dir_path=d / "Cache")
    pr.read_profile()
    pr.last_project_reference = pr.create_project(d / "Projects", "emedge").uuid
    pr.close()


def on_ui(fn: typing.Callable[[], typing.Any], dc: typing.Any) -> typing.Any:
    """Run ``fn`` on Swift's UI thread (from the script thread) and return its result."""
    box: list[typing.Any] = []
    done = threading.Event()

    def task() -> None:
        try:
            box.append(fn())
        finally:
            done.set()

    dc.queue_task(task)
    if not done.wait(30):
        raise TimeoutError("UI task did not run")
    if not box:
        raise RuntimeError("UI task failed (traceback on stderr)")
    return box[0]


def first_window(app: typing.Any, seconds: float = 60.0) -> typing.Any:
    """Swift's first document controller (window), once it is there."""
    t_end = time.monotonic() + seconds
    while not app.document_controllers:
        if time.monotonic() > t_end:
            raise TimeoutError("no Swift window")
        time.sleep(0.2)
    return app.document_controllers[0]


def persistent_items_only(dc: typing.Any) -> None:
    """Show only persistent items in Swift's Data Panel (Collections > Persistent; on the UI thread).

    nionui 10.2.2 (the newest) can deadlock the UI: a thumbnail thread holds a grid item's update
    lock and waits for the grid's, while the UI thread, re-sorting the grid when a camera's live
    acquisition starts (its item moves to the top), holds the grid's and waits for the item's
    (both stacks in test-artifacts/gui_stderr.txt when it happened: DataPanel thumbnail_updated vs
    GridFlowCanvasItem._batch_update_ended). Acquisition items are temporary, so with this filter
    they never move in the grid. docs/swift.md gives users the same advice.
    """
    dc.set_filter("persistent")


def drive(out: pathlib.Path) -> int:
    """Run Swift, press Start, screenshot; writes ``out/swift_panel.png`` and ``out/gui_report.json``."""
    faulthandler.dump_traceback_later(270, exit=True)   # a hang prints every thread's stack before the timeout
    _make_profile(pathlib.Path(os.environ["HOME"]))
    import nion.ui.command
    from PySide6 import QtCore, QtWidgets

    app, err = nion.ui.command.bootstrap_main(["nionui", "nionui_app.nionswift"])
    assert app is not None, err
    report: dict[str, typing.Any] = {"ok": False}

    def script() -> None:
        dc = None
        try:
            dc = first_window(app)
            report["window_s"] = round(time.monotonic() - t0, 1)

            def press_start() -> typing.Any:
                for w in QtWidgets.QApplication.topLevelWidgets():
                    if w.isVisible():                 # no window manager under Xvfb: fill the screen
                        w.setGeometry(0, 0, *SCREEN_PX)
                persistent_items_only(dc)
                panel = dc.find_dock_panel("emedge-experiment-panel")
                panel.show()
                view = panel.panel_delegate.views[-1]
                view.budget.text, view.seeds.text, view.survey_px.text = "16", "4", "64"
                wc = dc.workspace_controller           # three empty display panels: the live items fill them
                for p in wc.apply_layouts(wc.display_panels[0], [wc.display_panels[0]], 3, 1):
                    p.set_display_panel_display_item(None)
                view.start_button.on_clicked()
                return view

            view = on_ui(press_start, dc)
            report["status_after_start"] = on_ui(lambda: view.status.text, dc)
            live = view.live
            assert live is not None, report["status_after_start"]
            live.wait(240)
            time.sleep(2.0)                     # the last UI updates, and Qt paints
            report["shown"] = on_ui(lambda: [p.display_item.displayed_title if p.display_item else None
                                             for p in dc.workspace_controller.display_panels], dc)
            report["status"] = on_ui(lambda: view.status.text, dc)
            report["titles"] = on_ui(lambda: sorted(d.title for d in dc.document_model.data_items), dc)
            report["graphics"] = on_ui(lambda: len(live.data_items["survey"].graphics), dc)
            report["error"] = live.error
            subprocess.run(["import", "-window", "root", str(out / "swift_panel.png")], check=True, timeout=30)
            report["ok"] = True
        except BaseException as e:
            report["exception"] = f"{type(e).__name__}: {e}"
        finally:
            (out / "gui_report.json").write_text(json.dumps(report, indent=1))
            if dc is not None:
                dc.queue_task(lambda: QtCore.QTimer.singleShot(0, app.exit))

    t0 = time.monotonic()
    threading.Thread(target=script, daemon=True).start()
    app.run()
    return 0 if report["ok"] else 1


@pytest.fixture
def display() -> typing.Iterator[str]:
    """A fresh Xvfb display (started here; .ci/run needs nothing else running)."""
    missing = [tool for tool in ("Xvfb", "import", "identify") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} not installed (scripts/test.sh installs them as root)")
        pytest.skip(f"{missing} not installed (scripts/test.sh installs them as root)")
    if os.environ.get("CI") != "true":
        pytest.importorskip("PySide6")
    r, w = os.pipe()            # Xvfb picks a free display and writes its number to w
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", SCREEN, "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r) as fp:
            num = fp.readline().strip()
        if not num:
            raise RuntimeError("Xvfb did not start")
        yield f":{num}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_swift_gui_start_and_screenshot(display: str, tmp_path: pathlib.Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for name in ("swift_panel.png", "gui_report.json"):
        (ARTIFACTS / name).unlink(missing_ok=True)
    # PYTHONPATH: Swift finds plug-ins with pkgutil.iter_modules(nionswift_plugin.__path__), which does not
    # see packages installed with "pip install -e" (setuptools' editable finder); a wheel install needs nothing
    env = dict(os.environ, DISPLAY=display, HOME=str(tmp_path), QT_QPA_PLATFORM="xcb", PYTHONPATH=str(ROOT),
               EMEDGE_STAGING_DIR=str(tmp_path / "staging"), EMEDGE_SYSTEM_CONFIG=str(tmp_path / "none.toml"))
    env.pop("XDG_CONFIG_HOME", None)
    proc = subprocess.run([sys.executable, __file__, str(ARTIFACTS)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    (ARTIFACTS / "gui_stderr.txt").write_text(proc.stderr)      # Swift's log, and thread stacks on a hang
    assert (ARTIFACTS / "gui_report.json").exists(), proc.stderr[-3000:]
    report = json.loads((ARTIFACTS / "gui_report.json").read_text())
    assert proc.returncode == 0 and report["ok"], (report, proc.stderr[-3000:])
    assert report["error"] is None
    assert report["status"].startswith("finished: 16 measured"), report
    assert {"emedge survey + measured", "emedge prediction", "emedge uncertainty"} <= set(report["titles"])
    assert report["graphics"] == 16
    assert report["shown"] == ["emedge survey + measured", "emedge prediction", "emedge uncertainty"]
    png = ARTIFACTS / "swift_panel.png"
    assert png.stat().st_size > 20_000
    size = subprocess.run(["identify", "-format", "%w %h %k", str(png)], capture_output=True, text=True, check=True)
    w, h, colours = (int(x) for x in size.stdout.split())
    assert (w, h) == SCREEN_PX and colours > 200          # a real screen, not a blank one


if __name__ == "__main__":
    sys.exit(drive(pathlib.Path(sys.argv[1])))
