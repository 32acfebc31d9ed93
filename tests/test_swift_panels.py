"""nionswift-emedge inside a real (headless) Swift with the nionswift-usim microscope.

Swift's TestUI application loads the plug-in through its plug-in manager; usim registers the
STEM controller, scan device and cameras the panel drives. UI tasks queued by the experiment
run when the test pumps ``dc.periodic()``, as Swift's event loop would.
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
import time
import typing

import numpy as np
import pytest

pytest.importorskip("nionswift_plugin.usim")

from nion.swift import Application, Facade  # noqa: E402
from nion.swift.model import PlugInManager  # noqa: E402
from nion.swift.test import TestContext  # noqa: E402
from nion.utils import Registry  # noqa: E402

from nionswift_plugin.emedge import console  # noqa: E402
from nionswift_plugin.emedge.swift_instrument import UsimSession  # noqa: E402

Facade.initialize()
PANEL = "emedge-experiment-panel"


@pytest.fixture
def swift(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> typing.Iterator[typing.Any]:
    """Swift with the plug-in loaded and usim connected; yields a document controller."""
    monkeypatch.setenv("EMEDGE_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("EMEDGE_SYSTEM_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("EMEDGE_CONFIG", str(tmp_path / "none-user.toml"))
    usim = UsimSession()        # first: every Application() becomes Swift's global app, usim's included
    setup = TestContext.TestSetup(set_global=True)
    PlugInManager.load_plug_in("pip", "nionswift_plugin.emedge")
    profile = TestContext.MemoryProfileContext()
    dc = setup.app.create_document_controller(profile.create_document_model(auto_close=False), "library")
    setup.app._set_document_model(dc.document_model)    # what opening a project does in the GUI
    try:
        yield dc
    finally:
        for panel in _panel(dc).views if dc.find_dock_panel(PANEL) else []:
            if panel.live is not None:
                panel.live.stop()
                panel.live.wait(30)
        dc.close()
        profile.close()
        usim.close()
        PlugInManager.unload_plug_ins()


def _panel(dc: typing.Any) -> typing.Any:
    return dc.find_dock_panel(PANEL).panel_delegate


def _view(dc: typing.Any) -> typing.Any:
    return _panel(dc).views[-1]


def _pump(dc: typing.Any, until: typing.Callable[[], bool], timeout: float = 60.0) -> None:
    """Run Swift's queued UI tasks until ``until()`` holds."""
    t_end = time.monotonic() + timeout
    while not until():
        if time.monotonic() > t_end:
            raise AssertionError("timed out")
        dc.periodic()
        time.sleep(0.01)
    dc.periodic()


def _titles(dc: typing.Any) -> list[str]:
    return [d.title for d in dc.document_model.data_items]


def test_plugin_found_panel_menu_and_console(swift: typing.Any) -> None:
    dc = swift
    assert any(type(x).__name__ == "EmedgeExtension" for x in PlugInManager.extensions)
    view = _view(dc)
    assert view.status.text == "Ready."
    assert view.source.items == ["microscope", "twin", "replay"]
    assert "eels_peak_energy" in view.scalarizer.items
    actions = dc.get_or_create_menu("emedge_menu", "eMEDGE", "window_menu").get_menu_actions()
    assert [a.title for a in actions] == ["Show Autonomous Experiment"]
    actions[0].callback()
    assert dc.find_dock_panel(PANEL).widget.visible


def test_console_example_from_the_docs_runs(swift: typing.Any) -> None:
    """Swift's console startup lines (ours included), then the worked example of docs/swift.md."""
    dc = swift
    log = logging.getLogger("console-test")
    lines = [line for c in Registry.get_components_by_type("console-startup")
             for line in c.get_console_startup_info(log).console_startup_lines]
    assert "from nionswift_plugin.emedge import console as emedge" in lines
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "swift.md").read_text()
    example = re.search(r"<!-- console-example -->\n```python\n(.*?)```", doc, re.S)
    assert example is not None
    ns: dict[str, typing.Any] = {}
    exec("\n".join(lines), ns)
    code = example.group(1).splitlines()
    start = code.pop(0)
    exec(start, ns)                               # starts the run on usim
    run = ns["run"]
    _pump(dc, lambda: run.latest is not None)     # Swift's event loop runs between console lines
    for line in code:
        exec(line, ns)
    _pump(dc, lambda: not run.running)
    assert run.error is None, run.error
    assert ns["result"].stopped_by == "budget" and len(ns["result"].values) == 12
    assert run.maps["prediction"].shape == (32, 32)
    assert os.path.isfile(run.files["h5"])


def test_start_on_usim_live_items_update_and_file_written(swift: typing.Any) -> None:
    dc = swift
    view = _view(dc)
    view.budget.text, view.seeds.text, view.survey_px.text = "7", "3", "32"
    view.start_button.on_clicked()
    assert view.live is not None, view.status.text
    live = view.live
    seen: list[np.ndarray] = []
    live.listeners.append(lambda s: s.prediction is not None and seen.append(s.prediction.copy()))
    _pump(dc, lambda: not live.running)
    assert live.error is None, live.error
    assert set(_titles(dc)) >= {"emedge survey + measured", "emedge prediction", "emedge uncertainty"}
    assert len(seen) >= 2 and not np.allclose(seen[0], seen[-1], equal_nan=True)   # the maps changed
    survey = live.data_items["survey"]
    assert survey.data.shape == (32, 32)
    assert len(survey.graphics) == 7                       # one point per measured position
    assert view.progress.value == 100
    assert view.status.text.startswith("finished: 7 measured, stopped by budget")
    assert live.result is not None and live.result.instrument_state["instrument"] == "swift"
    assert os.path.isfile(live.files["h5"])
    from emedge_core.replay import Replay

    replay = Replay(live.files["h5"])
    np.testing.assert_array_equal(replay.available().sum(), 7)
    replay.close()


def test_stop_and_pause(swift: typing.Any) -> None:
    dc = swift
    view = _view(dc)
    view.budget.text, view.seeds.text, view.survey_px.text = "200", "3", "32"
    view.start_button.on_clicked()
    live = view.live
    _pump(dc, lambda: live.latest is not None and live.latest.n_measured >= 3)
    view.pause_button.on_clicked()
    assert view.pause_button.text == "Resume" and live.experiment.paused
    time.sleep(1.0)                      # the step in progress ends, then the loop waits
    _pump(dc, lambda: True)
    n = live.latest.n_measured
    time.sleep(0.5)
    _pump(dc, lambda: True)
    assert live.latest.n_measured == n and live.running
    view.pause_button.on_clicked()
    assert view.pause_button.text == "Pause"
    view.stop_button.on_clicked()
    _pump(dc, lambda: not live.running)
    assert live.result is not None and live.result.stopped_by == "stopped"
    assert len(live.result.values) < 200
    assert view.status.text.startswith("stopped:")
    assert view.start_button.text == "Start"


@pytest.mark.parametrize("content, expected", [
    (None, "replay file not found"),
    (b"this is not HDF5", "cannot read"),
])
def test_bad_replay_file_is_an_error_line(swift: typing.Any, tmp_path: typing.Any, content: typing.Optional[bytes],
                                          expected: str) -> None:
    dc = swift
    view = _view(dc)
    path = tmp_path / "bad.h5"
    if content is not None:
        path.write_bytes(content)
    view.source.current_item = "replay"
    view.replay_path.text = str(path)
    view.start_button.on_clicked()
    assert view.live is None
    assert view.status.text.startswith("error: ") and expected in view.status.text
    assert "Traceback" not in view.status.text and "\n" not in view.status.text


def test_bad_inputs_are_error_lines(swift: typing.Any) -> None:
    view = _view(swift)
    view.budget.text = "lots"
    view.start_button.on_clicked()
    assert view.status.text == "error: budget must be a whole number, not 'lots'"
    view.budget.text = "10"
    view.params.text = "{not json"
    view.start_button.on_clicked()
    assert view.status.text.startswith("error: parameters are not valid JSON")
    view.params.text = '{"colour": 3}'
    view.start_button.on_clicked()
    assert view.status.text.startswith("error: bad parameters for scalarizer 'eels_band_integral'")
    assert view.live is None


def test_console_api_on_twin(swift: typing.Any) -> None:
    dc = swift
    window = Facade.DocumentWindow(dc)
    run = console.start("twin", "eels_peak_energy", budget=8, seeds=3, window_px=8, survey_px=32,
                        document_window=window)
    _pump(dc, lambda: not run.running)
    assert run.error is None, run.error
    maps = run.maps
    assert set(maps) == {"measured", "prediction", "uncertainty"}
    assert maps["prediction"].shape == (32, 32) and np.isfinite(maps["measured"]).sum() == 8
    assert run.latest is not None and run.latest.state == "finished"
    assert sorted(run.files) == ["h5", "maps", "summary"]
