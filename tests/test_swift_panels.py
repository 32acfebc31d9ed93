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

from nion.swift import Facade  # noqa: E402
from nion.swift.model import PlugInManager  # noqa: E402
from nion.utils import Registry  # noqa: E402

from nionswift_plugin.emedge import console  # noqa: E402
from swift_harness import pump, swift_with_usim  # noqa: E402

Facade.initialize()
PANEL = "emedge-experiment-panel"


@pytest.fixture
def swift(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> typing.Iterator[typing.Any]:
    """Swift with the plug-in loaded and usim connected; yields a document controller."""
    def stop_runs(dc: typing.Any) -> None:
        for panel in _panel(dc).views if dc.find_dock_panel(PANEL) else []:
            if panel.live is not None:
                panel.live.stop()
                panel.live.wait(30)

    with swift_with_usim(tmp_path, monkeypatch, stop_runs) as dc:
        yield dc


def _panel(dc: typing.Any) -> typing.Any:
    return dc.find_dock_panel(PANEL).panel_delegate


def _view(dc: typing.Any) -> typing.Any:
    return _panel(dc).views[-1]


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
    assert [a.title for a in actions] == ["Show Autonomous Experiment", "Show Compress & Export", "Show HPC Jobs",
                                          "Show Remote Control", "Show Stream Scan"]
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
    pump(dc, lambda: run.latest is not None)     # Swift's event loop runs between console lines
    for line in code:
        exec(line, ns)
    pump(dc, lambda: run.done)
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
    pump(dc, lambda: live.done)
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
    pump(dc, lambda: live.latest is not None and live.latest.n_measured >= 3)
    view.pause_button.on_clicked()
    assert view.pause_button.text == "Resume" and live.experiment.paused
    time.sleep(1.0)                      # the step in progress ends, then the loop waits
    pump(dc, lambda: True)
    n = live.latest.n_measured
    time.sleep(0.5)
    pump(dc, lambda: True)
    assert live.latest.n_measured == n and live.running
    view.pause_button.on_clicked()
    assert view.pause_button.text == "Pause"
    view.stop_button.on_clicked()
    pump(dc, lambda: live.done)
    assert live.result is not None and live.result.stopped_by == "stopped"
    assert len(live.result.values) < 200
    assert view.status.text.startswith("stopped:")
    assert view.start_button.text == "Start"


@pytest.mark.parametrize("content, expected", [
    (None, "file not found"),
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
    view.params.text = "{}"
    view.drift_every.text = "often"
    view.start_button.on_clicked()
    assert view.status.text == "error: drift every must be a whole number, not 'often'"
    assert view.live is None


def test_console_api_on_twin(swift: typing.Any) -> None:
    dc = swift
    window = Facade.DocumentWindow(dc)
    run = console.start("twin", "eels_peak_energy", budget=8, seeds=3, window_px=8, survey_px=32, drift_every=2,
                        document_window=window)
    pump(dc, lambda: run.done)
    assert run.error is None, run.error
    maps = run.maps
    assert set(maps) == {"measured", "prediction", "uncertainty"}
    assert maps["prediction"].shape == (32, 32) and np.isfinite(maps["measured"]).sum() == 8
    assert run.latest is not None and run.latest.state == "finished"
    assert "drift (+0.0, +0.0) px" in run.latest.message        # tracked; the twin here does not drift
    assert sorted(run.files) == ["h5", "maps", "summary"]


def _spectrum_image(dc: typing.Any, shape: tuple[int, int] = (6, 6)) -> tuple[typing.Any, np.ndarray]:
    """A calibrated spectrum image data item (plasmon growing along x) in ``dc``'s library."""
    from nion.data import Calibration, DataAndMetadata

    e = -20.0 + np.arange(256)
    h, w = shape
    amp = np.linspace(100, 1000, w)[None, :, None] * np.ones((h, 1, 1))
    data = (1e4 * np.exp(-0.5 * (e / 2) ** 2) + amp * np.exp(-0.5 * ((e - 18) / 4) ** 2)).astype(np.float32)
    xd = DataAndMetadata.new_data_and_metadata(
        data, dimensional_calibrations=[Calibration.Calibration(0, 2.0, "nm"), Calibration.Calibration(0, 2.0, "nm"),
                                        Calibration.Calibration(-20.0, 1.0, "eV")],
        intensity_calibration=Calibration.Calibration(units="counts"),
        data_descriptor=DataAndMetadata.DataDescriptor(False, 2, 1), metadata={"instrument": {"high_tension_V": 1e5}})
    item = Facade.DocumentWindow(dc).library.create_data_item_from_data_and_metadata(xd, "SI: flake/edge")
    return item, data


def _select(dc: typing.Any, *items: typing.Any) -> None:
    """Select ``items`` in the data panel, as a click there would."""
    dc.periodic()                               # the data panel's list catches up with the new items
    dc.selected_display_panel = None
    dc.select_display_items_in_data_panel([dc.document_model.get_display_item_for_data_item(i._data_item)
                                           for i in items])
    assert len(dc.selected_data_items) == len(items)


def test_export_selected_items_to_emd(swift: typing.Any, tmp_path: pathlib.Path) -> None:
    from emedge_core import emd

    dc = swift
    view = dc.find_dock_panel("emedge-export-panel").panel_delegate.views[-1]
    view.export_button.on_clicked()
    assert view.status.text == "error: select one or more data items first"
    si, data = _spectrum_image(dc)
    image = Facade.DocumentWindow(dc).library.create_data_item_from_data(np.arange(64.0).reshape(8, 8), "survey")
    _select(dc, si, image)
    view.path.text = str(tmp_path / "out" / "export.emd")
    view.export_button.on_clicked()
    pump(dc, lambda: view.status.text.startswith(("wrote", "error")))
    assert view.status.text.startswith(f"wrote {tmp_path / 'out' / 'export.emd'}: "), view.status.text
    assert "SI_flake_edge " in view.status.text and "survey " in view.status.text
    assert set(view.stats) == {"SI_flake_edge", "survey"} and all(s["ratio"] > 1 for s in view.stats.values())
    back = emd.read(view.written)
    np.testing.assert_array_equal(back["SI_flake_edge"], data)
    np.testing.assert_array_equal(back["survey"], np.arange(64.0).reshape(8, 8))
    prov = emd.info(view.written)["provenance"]
    assert sorted(d["title"] for d in prov["parameters"]["data_items"]) == ["SI: flake/edge", "survey"]
    assert prov["instrument_state"] == {"high_tension_V": 1e5} and prov["parameters"]["codec"] == "auto"
    view.codec.text = "no-such-codec"
    view.export_button.on_clicked()
    pump(dc, lambda: view.status.text.startswith("error"))
    assert "no-such-codec" in view.status.text and "\n" not in view.status.text


def test_hpc_reduce_job_local_backend(swift: typing.Any) -> None:
    """Submit the selected spectrum image, follow the job, fetch the map back as a data item."""
    from emedge_core.instrument import Frames
    from emedge_core.scalarize import reduce

    dc = swift
    view = dc.find_dock_panel("emedge-hpc-panel").panel_delegate.views[-1]
    assert view.backend.current_item == "local"
    si, data = _spectrum_image(dc)
    _select(dc, si)
    view.kind.current_item = "reduce"
    view.submit_button.on_clicked()
    pump(dc, lambda: not view.thread.is_alive())
    assert view.status.text.startswith("submitted local:"), view.status.text
    (job_id,) = view.jobs
    t_end = time.monotonic() + 120
    while view.jobs[job_id].state.value not in ("COMPLETED", "FAILED"):
        assert time.monotonic() < t_end, view.jobs_label.text
        time.sleep(0.5)
        view.refresh_button.on_clicked()
        pump(dc, lambda: not view.thread.is_alive())
    assert view.jobs[job_id].state.value == "COMPLETED", view.jobs[job_id]
    assert f"{job_id}  COMPLETED  reduce" in view.jobs_label.text
    view.fetch_button.on_clicked()
    pump(dc, lambda: not view.thread.is_alive() and job_id in view.fetched and bool(view.fetched[job_id]))
    assert view.status.text.startswith("fetched"), view.status.text
    maps = {i.title: i.data for i in view.fetched[job_id]}
    reduced = maps["reduce reduced.npy"]
    want = reduce("eels_band_integral", Frames(data.reshape(-1, 256), "spectrum",
                                                energy_eV=-20.0 + np.arange(256.0))).values.reshape(6, 6)
    np.testing.assert_allclose(reduced, want, rtol=1e-5)
    assert reduced[0, -1] > reduced[0, 0]


def test_hpc_bad_requests_are_error_lines(swift: typing.Any) -> None:
    dc = swift
    view = dc.find_dock_panel("emedge-hpc-panel").panel_delegate.views[-1]
    view.kind.current_item = "reduce"
    view.submit_button.on_clicked()
    assert view.status.text.startswith("error: select one data item")
    view.kind.current_item = "retrain"
    view.experiment.text = "/nonexistent/experiment.h5"
    view.submit_button.on_clicked()
    pump(dc, lambda: not view.thread.is_alive())
    assert view.status.text == "error: experiment file not found: /nonexistent/experiment.h5"
    view.fetch_button.on_clicked()
    pump(dc, lambda: not view.thread.is_alive())
    assert view.status.text == "nothing to fetch: no newly completed job"


def test_hpc_retrain_on_experiment_file(swift: typing.Any) -> None:
    """An experiment run from the console, refitted as a local HPC job; the maps come back as data items."""
    dc = swift
    run = console.start("twin", "eels_peak_energy", budget=8, seeds=4, window_px=8, survey_px=24,
                        document_window=Facade.DocumentWindow(dc))
    pump(dc, lambda: run.done)
    assert run.error is None, run.error
    view = dc.find_dock_panel("emedge-hpc-panel").panel_delegate.views[-1]
    view.kind.current_item = "retrain"
    view.experiment.text = run.files["h5"]
    view.submit_button.on_clicked()
    pump(dc, lambda: not view.thread.is_alive())
    assert view.status.text.startswith("submitted local:"), view.status.text
    (job_id,) = view.jobs
    t_end = time.monotonic() + 120
    while not view.jobs[job_id].state.terminal:
        assert time.monotonic() < t_end, view.jobs_label.text
        time.sleep(0.5)
        view.refresh_button.on_clicked()
        pump(dc, lambda: not view.thread.is_alive())
    assert view.jobs[job_id].state.value == "COMPLETED", view.jobs[job_id]
    view.fetch_button.on_clicked()
    pump(dc, lambda: not view.thread.is_alive() and bool(view.fetched.get(job_id)))
    maps = {i.title: i.data for i in view.fetched[job_id]}
    assert {"retrain prediction", "retrain uncertainty"} <= set(maps), sorted(maps)
    assert maps["retrain prediction"].shape == (24, 24)
    assert np.isfinite(maps["retrain uncertainty"]).any()
