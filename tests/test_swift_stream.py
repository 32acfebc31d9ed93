"""Streamed scans inside a real (headless) Swift on nionswift-usim (issue 15): the scalar map of a
synchronized SI / 4D scan as a live data item that fills in row by row (console API and the Stream
Scan panel), and a ``follow`` job's RESULT.h5 coming back into the HPC Jobs panel while the scan runs
(local backend; the real one-node Slurm of scripts/start-slurm.sh).

"While the scan runs" is made certain by counting, not timing: the test's instrument holds each
scan row back (the usim scan itself runs on, its rows wait in a queue) until Swift has shown what the
test waits for - the previous row in the live map, or the follow job's first rows.
"""
from __future__ import annotations

import json
import os
import pathlib
import queue
import threading
import time
import typing

import numpy as np
import pytest

pytest.importorskip("nionswift_plugin.usim")

from nion.swift import Facade  # noqa: E402

from emedge_core import emd  # noqa: E402
from emedge_core.instrument import Frames  # noqa: E402
from emedge_core.stream.stage import read_manifest  # noqa: E402
from nionswift_plugin.emedge import console  # noqa: E402
from nionswift_plugin.emedge.live_stream import LiveStream, MapSnapshot  # noqa: E402
from nionswift_plugin.emedge.swift_instrument import SwiftInstrument, from_registry  # noqa: E402
from swift_harness import pump, swift_with_usim  # noqa: E402

Facade.initialize()
WAIT_S = 180.0


def _views(dc: typing.Any, panel_id: str) -> list[typing.Any]:
    panel = dc.find_dock_panel(panel_id)
    return panel.panel_delegate.views if panel is not None else []


@pytest.fixture
def started() -> list[LiveStream]:
    """The scans a test starts from the console (stopped before Swift closes)."""
    return []


@pytest.fixture
def swift(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch,
          started: list[LiveStream]) -> typing.Iterator[typing.Any]:
    """Swift with the plug-in loaded and usim connected; scans are stopped and follow jobs cancelled
    before it closes."""
    monkeypatch.setenv("EMEDGE_HPC_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("EMEDGE_HPC_STAGING", str(tmp_path / "hpc-jobs"))
    monkeypatch.setenv("EMEDGE_HPC_CONFIG", str(tmp_path / "no-hpc.toml"))

    def stop_all(dc: typing.Any) -> None:
        for live in started + [v.live for v in _views(dc, "emedge-stream-panel") if v.live is not None]:
            live.stop()
            live.wait(60)
        for view in _views(dc, "emedge-hpc-panel"):
            for job_id, watch in view.watches.items():
                watch.stop()
                view.clients[view.jobs[job_id].backend].cancel(job_id)

    with swift_with_usim(tmp_path, monkeypatch, stop_all) as dc:
        yield dc


def _pump(dc: typing.Any, until: typing.Callable[[], bool], timeout: float = WAIT_S) -> None:
    pump(dc, until, timeout)


class HeldRows:
    """A Swift instrument whose synchronized scan hands row r to the chain only once ``gate(r)``
    returns. The usim scan runs on its own thread, undisturbed; its rows wait in a queue."""

    def __init__(self, inner: SwiftInstrument, gate: typing.Callable[[int], None]) -> None:
        self.inner, self.gate = inner, gate

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self.inner, name)

    def scan_rows(self, shape: tuple[int, int], on_row: typing.Callable[[int, Frames], None]) -> int:
        rows: queue.Queue[typing.Optional[tuple[int, Frames]]] = queue.Queue()
        failed: list[BaseException] = []

        def scan() -> None:
            try:
                self.inner.scan_rows(shape, lambda r, got: rows.put((r, got)))
            except BaseException as e:
                failed.append(e)
            finally:
                rows.put(None)

        t = threading.Thread(target=scan, daemon=True)
        t.start()
        n = 0
        while (item := rows.get()) is not None:
            self.gate(item[0])
            on_row(*item)
            n += 1
        t.join()
        if failed:
            raise failed[0]
        return n


def _wait_for(what: str, ok: typing.Callable[[], bool]) -> None:
    """Block the acquisition thread until ``ok()`` (the test thread pumps Swift meanwhile)."""
    t_end = time.monotonic() + WAIT_S
    while not ok():
        if time.monotonic() > t_end:
            raise RuntimeError(f"test gate: no {what} after {WAIT_S:g} s")
        time.sleep(0.02)


def test_console_stream_map_fills_in_row_by_row(swift: typing.Any, started: list[LiveStream],
                                                tmp_path: typing.Any) -> None:
    """emedge.stream on usim's synchronized SI scan: the map data item exists during the scan, shows
    each new row (the next row is held until Swift shows the last), and ends equal to scan.map.npy."""
    dc = swift
    h, w = 6, 5
    holder: list[LiveStream] = []
    inst = HeldRows(from_registry("spectrum", survey_px=32, exposure_ms=5),
                    lambda r: _wait_for(f"row {r} in the map", lambda: r == 0 or (
                        bool(holder[0].shown_rows) and holder[0].shown_rows[-1] >= r)))
    seen: list[tuple[MapSnapshot, np.ndarray, list[str]]] = []
    live = console.stream(inst, "si", f"{h}x{w}", "eels_band_integral", out_dir=str(tmp_path / "s"), block_rows=2,
                          document_window=Facade.DocumentWindow(dc))
    started.append(live)
    holder.append(live)
    live.listeners.append(lambda s: seen.append((s, np.array(live.item.data_item.data),
                                                 [d.title for d in dc.document_model.data_items])))
    _pump(dc, lambda: live.done)
    assert live.error is None, live.error
    r = live.result
    assert r is not None and r.complete and r.frames == h * w and r.dropped == 0 and r.chunks_published == 3
    final = np.load(r.scalar_map)
    assert final.shape == (h, w) and np.isfinite(final).all() and final.std() > 0
    np.testing.assert_array_equal(emd.read(r.scalar_map.replace(".map.npy", ".h5"), "scalar_map"), final)
    assert live.shown_rows == list(range(1, h + 1)) + [h]          # every row, then the finished map
    running = [(s, data, titles) for s, data, titles in seen if s.state == "running"]
    assert [s.rows for s, _, _ in running] == list(range(1, h + 1))
    for s, data, titles in running:
        assert "emedge stream map" in titles                     # the item exists while the scan runs
        np.testing.assert_array_equal(data[:s.rows], final[:s.rows])   # the rows in so far, as they end
        if s.rows < h:                                           # the rest: not yet measured (shown as min)
            assert (data[s.rows:] == data[:s.rows].min()).all()
    last, data, _ = seen[-1]
    assert last.state == "finished" and last.message.startswith(f"finished: {h}/{h} rows, {h * w} frames, 0 dropped")
    np.testing.assert_array_equal(data, final)
    np.testing.assert_array_equal(live.map, final)
    m = read_manifest(str(tmp_path / "s" / "stage"))
    assert m is not None and m["complete"] and [b["row_start"] for b in m["blocks"]] == [0, 2, 4]


def test_stream_panel_4d_scan(swift: typing.Any, tmp_path: typing.Any) -> None:
    """The Stream Scan panel: a usim 4D scan (Ronchigram) with virtual_bf; the live item ends as the map."""
    dc = swift
    view = _views(dc, "emedge-stream-panel")[-1]
    view.kind.current_item = "4d"
    view.scan.text = "3x4"
    view.scalarizer.current_item = "virtual_bf"
    view.out_dir.text = str(tmp_path / "p")
    view.start_button.on_clicked()
    assert view.live is not None, view.status.text
    assert view.start_button.text == "Running"
    live = view.live
    _pump(dc, lambda: live.done)
    assert live.error is None, live.error
    assert view.status.text.startswith("finished: 3/3 rows, 12 frames, 0 dropped"), view.status.text
    assert view.progress.value == 100 and view.start_button.text == "Start"
    final = np.load(str(tmp_path / "p" / "scan.map.npy"))
    assert final.shape == (3, 4) and np.isfinite(final).all()
    np.testing.assert_array_equal(live.item.data_item.data, final)
    assert live.shown_rows == sorted(live.shown_rows) and live.shown_rows[-1] == 3
    assert read_manifest(str(tmp_path / "p" / "stage"))["complete"]


def test_stream_panel_bad_inputs_are_error_lines(swift: typing.Any) -> None:
    view = _views(swift, "emedge-stream-panel")[-1]
    view.scan.text = "big"
    view.start_button.on_clicked()
    assert view.status.text == "error: scan must be HxW (e.g. 16x16), not 'big'"
    view.scan.text = "4x4"
    view.scalarizer.current_item = "virtual_bf"          # a 4D scalarizer on an SI scan
    view.start_button.on_clicked()
    assert view.status.text == ("error: scalarizer virtual_bf reduces diffraction frames; kind 'si' gives "
                                "spectrum frames")
    view.scalarizer.current_item = "(default)"
    view.exposure_ms.text = "short"
    view.start_button.on_clicked()
    assert view.status.text == "error: exposure must be a number, not 'short'"
    view.exposure_ms.text = "5"
    view.block_rows.text = "two"
    view.start_button.on_clicked()
    assert view.status.text == "error: block rows must be a whole number, not 'two'"
    view.block_rows.text = "0"
    view.start_button.on_clicked()
    assert view.status.text == "error: block rows must be >= 1 (empty: one EMD chunk's rows), not 0"
    assert view.live is None


@pytest.mark.parametrize("backend", ["local", pytest.param("slurmrest", marks=pytest.mark.slurm)])
def test_follow_job_results_come_back_while_the_scan_runs(swift: typing.Any, started: list[LiveStream],
                                                          tmp_path: typing.Any, request: pytest.FixtureRequest,
                                                          backend: str) -> None:
    """The HPC Jobs panel submits a follow job on the stage before the scan starts; the scan holds its
    second half until the job's RESULT.h5 has rows in Swift; the live follow item ends equal to the
    map the scan made in one process."""
    if backend == "slurmrest":
        request.getfixturevalue("slurm")
    dc = swift
    h, w = 6, 4
    stage = str(tmp_path / "nas" / "stage")
    view = _views(dc, "emedge-hpc-panel")[-1]
    view.backend.current_item = backend
    view.kind.current_item = "follow"
    view.stage.text = stage
    view.scalarizer.text = "eels_band_integral"
    view.submit_button.on_clicked()
    _pump(dc, lambda: not view.thread.is_alive() and bool(view.watches))
    (job_id,) = view.watches
    assert job_id.startswith(f"{backend}:") and job_id in view.jobs_label.text, view.status.text
    watch = view.watches[job_id]
    during: list[tuple[int, bool]] = []          # (rows in the follow map, scan still running) per update
    holder: list[LiveStream] = []
    watch.listeners.append(lambda s, job: during.append((s.rows, holder[0].result is None)) if holder else None)

    def hold_second_half(r: int) -> None:
        if r == h // 2:
            _wait_for("follow job result", lambda: watch.latest is not None and watch.latest.rows > 0)

    inst = HeldRows(from_registry("spectrum", survey_px=32, exposure_ms=5), hold_second_half)
    live = console.stream(inst, "si", (h, w), "eels_band_integral", out_dir=str(tmp_path / "nas"), block_rows=1,
                          document_window=Facade.DocumentWindow(dc))
    started.append(live)
    holder.append(live)
    _pump(dc, lambda: live.done and watch.done)
    assert live.error is None and watch.error is None, (live.error, watch.error)
    assert view.jobs[job_id].state.value == "COMPLETED", view.jobs[job_id]
    assert any(0 < rows < h and running for rows, running in during), during   # partial, while scanning
    assert watch.shown_rows[-1] == h and watch.shown_rows == sorted(watch.shown_rows)
    assert f"emedge follow {job_id}" in [d.title for d in dc.document_model.data_items]
    assert live.result is not None and live.result.complete
    final = np.load(live.result.scalar_map)
    np.testing.assert_allclose(watch.item.data_item.data, final, rtol=1e-6)
    assert f"{job_id} COMPLETED: {h}/{h} rows reduced" == view.status.text
    view.fetch_button.on_clicked()                       # the final RESULT.h5, checksum-checked, as items
    _pump(dc, lambda: not view.thread.is_alive() and bool(view.fetched.get(job_id)))
    maps = {i.title: i.data for i in view.fetched[job_id]}
    np.testing.assert_allclose(maps["follow map"], final, rtol=1e-6)
    assert os.path.isfile(os.path.join(str(tmp_path / "staging"), "hpc-results", job_id.replace(":", "_"),
                                       "follow.h5"))


def test_console_stream_example_from_the_docs_runs(swift: typing.Any, started: list[LiveStream]) -> None:
    """The stream example of docs/swift.md, line by line, in a namespace set up by Swift's console startup."""
    import logging
    import re

    from nion.utils import Registry

    dc = swift
    lines = [line for c in Registry.get_components_by_type("console-startup")
             for line in c.get_console_startup_info(logging.getLogger("console-test")).console_startup_lines]
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "swift.md").read_text()
    example = re.search(r"<!-- stream-example -->\n```python\n(.*?)```", doc, re.S)
    assert example is not None
    ns: dict[str, typing.Any] = {}
    exec("\n".join(lines), ns)
    code = example.group(1).splitlines()
    exec(code.pop(0), ns)                       # starts the scan on usim
    scan = ns["scan"]
    started.append(scan)
    for line in code:
        exec(line, ns)
    _pump(dc, lambda: scan.done)
    r = ns["r"]
    assert scan.error is None and r.complete and (r.frames, r.dropped) == (30, 0)
    assert r.scalar_map.startswith(os.environ["EMEDGE_STAGING_DIR"])
    np.testing.assert_array_equal(scan.item.data_item.data, np.load(r.scalar_map))


def test_failed_follow_job_is_one_error_line(swift: typing.Any, started: list[LiveStream],
                                             tmp_path: typing.Any) -> None:
    """A follow job whose scalarizer does not fit the scan fails on the node; the panel says why."""
    dc = swift
    stage = str(tmp_path / "t" / "stage")
    view = _views(dc, "emedge-hpc-panel")[-1]
    view.kind.current_item = "follow"
    view.stage.text = stage
    view.scalarizer.text = "virtual_bf"
    view.submit_button.on_clicked()
    _pump(dc, lambda: not view.thread.is_alive() and bool(view.watches))
    (watch,) = view.watches.values()
    live = console.stream("twin", "si", (4, 4), out_dir=str(tmp_path / "t"), survey_px=16,
                          document_window=Facade.DocumentWindow(dc))
    started.append(live)
    _pump(dc, lambda: live.done and watch.done)
    assert live.error is None and live.result is not None and live.result.complete
    assert watch.job.state.value == "FAILED"
    assert view.status.text.startswith(f"{watch.job_id} FAILED: no results yet (")
    assert "virtual_bf reduces diffraction frames" in view.status.text and "\n" not in view.status.text
    view.kind.current_item = "follow"
    view.stage.text = ""
    view.submit_button.on_clicked()
    _pump(dc, lambda: not view.thread.is_alive())
    assert view.status.text == "error: no stage directory given (the Stream Scan panel's <folder>/stage)"


def test_experiment_panel_batches_by_synchronized_subscans(swift: typing.Any) -> None:
    """The Autonomous Experiment panel with *Batches: synchronized sub-scans* on usim: the loop's
    batches go through grab_synchronized (counted), the run ends on its budget."""
    dc = swift
    view = _views(dc, "emedge-experiment-panel")[-1]
    view.batches.current_item = "scan"
    view.source.current_item = "twin"
    view.start_button.on_clicked()
    assert view.status.text == "error: batch_scan (Batches: synchronized sub-scans) needs the microscope as the source"
    view.source.current_item = "microscope"
    view.budget.text, view.seeds.text, view.survey_px.text, view.window_px.text = "7", "3", "16", "6"
    view.start_button.on_clicked()
    assert view.live is not None, view.status.text
    inst = view.live._instrument.inner
    assert isinstance(inst, SwiftInstrument) and inst.batch_scan
    grabs: list[tuple[int, int]] = []
    grab = inst._grab
    inst._grab = lambda fp, shape, on_row: grabs.append(shape) or grab(fp, shape, on_row)   # type: ignore
    _pump(dc, lambda: view.live.done)
    assert view.live.error is None, view.live.error
    result = view.live.result
    assert result is not None and result.stopped_by == "budget" and len(result.values) == 7
    assert len(grabs) >= 3 and all(h == 1 and w >= 2 for h, w in grabs)


def test_two_component_map_is_a_collection_item(swift: typing.Any, started: list[LiveStream],
                                                tmp_path: typing.Any) -> None:
    """``com`` gives (H, W, 2): the live item is a 2-D collection of 2-vectors, ending equal to the map."""
    dc = swift
    live = console.stream("twin", "4d", (8, 10), "com", out_dir=str(tmp_path / "c"), survey_px=16,
                          document_window=Facade.DocumentWindow(dc))
    started.append(live)
    _pump(dc, lambda: live.done)
    assert live.error is None and live.result is not None and live.result.complete
    final = np.load(live.result.scalar_map)
    assert final.shape == (8, 10, 2)
    item = live.item.data_item
    assert item.xdata.is_collection and item.xdata.collection_dimension_count == 2
    assert item.xdata.datum_dimension_count == 1
    np.testing.assert_array_equal(item.data, final)


@pytest.mark.parametrize("rel,kind,spec", [
    ("merlin/001_4x2_6bit.mib", "4d", '{"name": "virtual_bf", "outer": 23, "center": [112, 25.5]}'),
    ("dm/EELS_SI.dm4", "si", '{"name": "eels_band_integral", "band_eV": [400, 1500]}')])
def test_real_file_streamed_in_swift_and_followed(swift: typing.Any, started: list[LiveStream], tmp_path: typing.Any,
                                                  rel: str, kind: str, spec: str) -> None:
    """A real instrument file (rosettasciio's test data: a Merlin 4x2 4D scan, a 2x2 DM4 EELS SI)
    replayed through emedge.stream, followed by a local follow job from the HPC Jobs panel: the live
    map and the follow job's map both equal the whole file reduced at once."""
    from emedge_core.instrument import InstrumentOptions, open_instrument
    from emedge_core.scalarize import reduce

    dc = swift
    path = str(pathlib.Path(__file__).parent / "data" / rel)
    inst = open_instrument("replay", InstrumentOptions(signal_kind="spectrum" if kind == "si" else "diffraction",
                                                       data=path))
    h, w = inst.survey().shape
    ref = reduce(spec, inst.measure(np.stack(np.mgrid[0:h, 0:w], axis=-1).reshape(-1, 2)), scan_shape=(h, w)).values
    view = _views(dc, "emedge-hpc-panel")[-1]
    view.kind.current_item = "follow"
    view.stage.text = str(tmp_path / "r" / "stage")
    view.scalarizer.text = spec
    view.submit_button.on_clicked()
    _pump(dc, lambda: not view.thread.is_alive() and bool(view.watches))
    (watch,) = view.watches.values()
    live = console.stream(path, kind, (h, w), json.loads(spec), out_dir=str(tmp_path / "r"), block_rows=1,
                          document_window=Facade.DocumentWindow(dc))
    started.append(live)
    _pump(dc, lambda: live.done and watch.done)
    assert live.error is None and watch.error is None, (live.error, watch.error)
    assert live.result is not None and live.result.complete and live.result.frames == h * w
    np.testing.assert_allclose(live.item.data_item.data, ref, rtol=1e-6)
    np.testing.assert_allclose(watch.item.data_item.data, ref, rtol=1e-6)
    assert watch.job.state.value == "COMPLETED" and watch.shown_rows[-1] == h
