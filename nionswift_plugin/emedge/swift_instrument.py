"""The acquisition hooks: an :class:`emedge_core.instrument.Instrument` over nionswift-instrumentation.

- ``survey()``: one HAADF frame from the STEM controller's scan device (``record_immediate``);
- ``measure(positions)``: park the probe on each survey pixel (``probe_position``, fractions of
  the last scan) and take one frame from the EELS camera (spectra: summed over the
  non-dispersive axis) or the Ronchigram camera (diffraction patterns); with ``batch_scan`` the
  batch goes through nionswift-instrumentation's synchronized scan instead: one line sub-scan of the
  survey grid per survey row the batch touches (the camera exposes on the scan's pixel clock);
- ``scan_rows(shape, on_row)``: a whole synchronized scan, row by row (``emedge stream``);
- ``state()``: high tension, defocus and aberrations, beam current, probe and stage position,
  scan and camera settings, for provenance.

It leaves the microscope as it found it (as nionswift-instrumentation's device-state restore
does): the camera's frame parameters come back and the camera stops after every batch, whether
it ended, failed or was cancelled; the probe position it had before the first measurement comes
back on :meth:`SwiftInstrument.restore` (called by :meth:`~SwiftInstrument.close`, by
``emedge run`` and by the Swift panel when a run ends, fails or is stopped) - every change undone
in reverse order. :meth:`SwiftInstrument.cancel` ends a batch between two frames; ``measure``
then returns the frames taken so far.

The same class drives a real microscope inside Swift (:func:`from_registry`) and the
nionswift-usim simulator without a GUI (:class:`UsimSession`, and the ``usim`` entry of the
``emedge.instruments`` group that ``emedge run --instrument usim`` loads).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames, InstrumentOptions, Survey, check_positions

#: STEM controller values recorded by ``state()`` when the instrument has them
STATE_CONTROLS = ("EHT", "C10", "C12.x", "C12.y", "C21.x", "C21.y", "C23.x", "C23.y", "C30", "C32.x", "C32.y",
                  "C34.x", "C34.y", "C50", "BeamCurrent", "ZLPoffset")
SYNC_TIMEOUT_S = 5.0


class SwiftInstrument:
    """A STEM controller with its scan device and one camera, as an emedge instrument.

    stem: the ``stem_controller`` component; signal_kind: ``"spectrum"`` (EELS camera) or
    ``"diffraction"`` (Ronchigram camera); survey_px: survey edge in pixels; fov_nm: survey
    field of view; exposure_ms: camera exposure per measured frame; binning: camera binning
    (None = the camera's current setting); batch_scan: measure each batch through synchronized
    sub-scans (:meth:`measure_scanned`) instead of parking the probe point by point.
    """

    def __init__(self, stem: typing.Any, signal_kind: str = "spectrum", *, survey_px: int = 64,
                 fov_nm: float = 100.0, exposure_ms: float = 10.0, binning: typing.Optional[int] = None,
                 batch_scan: bool = False, owner: typing.Optional["UsimSession"] = None) -> None:
        if signal_kind not in ("spectrum", "diffraction"):
            raise EmedgeError(f"signal must be 'spectrum' or 'diffraction', not {signal_kind!r}")
        self.stem = stem
        self.signal_kind = signal_kind
        self.scan = stem.scan_controller
        self.camera = stem.eels_camera if signal_kind == "spectrum" else stem.ronchigram_camera
        if self.scan is None or self.camera is None:
            camera = ("EELS" if signal_kind == "spectrum" else "Ronchigram") + " camera"
            what = "scan device" if self.scan is None else camera
            raise EmedgeError(f"the STEM controller has no {what}")
        self.survey_px, self.fov_nm = int(survey_px), float(fov_nm)
        self.exposure_ms, self.binning, self.batch_scan = float(exposure_ms), binning, bool(batch_scan)
        self._survey: typing.Optional[Survey] = None
        self._owner = owner
        self._undo = contextlib.ExitStack()      # how to put back what a run changed, newest first
        self._probe_saved = False
        self._cancel = threading.Event()
        self._last_frame: typing.Any = None
        self._scanning = False

    def cancel(self) -> None:
        """End the batch in progress after the frame being taken (any thread); a new :meth:`survey` clears it.
        A synchronized scan (:meth:`scan_rows`) in progress is aborted."""
        self._cancel.set()
        if self._scanning:
            self.scan.grab_synchronized_abort()

    def restore(self) -> None:
        """Put back what the run changed on the microscope (the probe position), newest change first."""
        undo, self._undo, self._probe_saved = self._undo, contextlib.ExitStack(), False
        undo.close()

    def close(self) -> None:
        """:meth:`restore`, then close the simulator session this instrument owns, if any
        (``emedge run --instrument usim``)."""
        try:
            self.restore()
        finally:
            if self._owner is not None:
                self._owner.close()

    def _set_probe(self, position: typing.Any) -> None:
        self.stem.probe_position = position

    def _move_probe(self, position: typing.Any) -> None:
        """Park the probe at ``position``; the position it had before the run's first move is restored later."""
        if not self._probe_saved:
            self._undo.callback(self._set_probe, self.stem.probe_position)
            self._probe_saved = True
        self.stem.probe_position = position

    def survey(self) -> Survey:
        """Record one HAADF frame (the first scan channel) at ``survey_px`` x ``survey_px``."""
        from nion.utils import Geometry

        fp = self.scan.get_current_frame_parameters()
        fp.size = Geometry.IntSize(self.survey_px, self.survey_px)
        fp.fov_nm = self.fov_nm
        self._cancel.clear()
        xdatas = self.scan.record_immediate(fp)
        if not xdatas:
            raise EmedgeError("the scan device returned no survey image")
        xd = xdatas[0]
        cal_y, cal_x = xd.dimensional_calibrations
        self._survey = Survey(np.asarray(xd.data, np.float32), pixel_size_nm=float(cal_x.scale),
                              origin_nm=(float(cal_y.offset), float(cal_x.offset)),
                              channel=str(xd.metadata.get("hardware_source", {}).get("channel_name", "HAADF")))
        return self._survey

    def measure(self, positions: np.ndarray) -> Frames:
        """One camera frame per survey pixel (row, col) in ``positions``; the camera plays while
        the probe moves and each frame is one that started after the probe got there (with
        ``batch_scan``: :meth:`measure_scanned`)."""
        from nion.utils import Geometry

        if self.batch_scan:
            return self.measure_scanned(positions)
        if self._survey is None:
            raise EmedgeError("measure() before survey(): the probe positions are fractions of the survey scan")
        h, w = self._survey.shape
        pos = check_positions(positions, (h, w))
        frames: list[np.ndarray] = []
        xd: typing.Any = None
        with contextlib.ExitStack() as batch:         # undone in reverse: stop the camera, then its settings
            saved = self.camera.get_current_frame_parameters()
            fp = self.camera.get_frame_parameters_from_dict(saved.as_dict())
            fp.exposure_ms = self.exposure_ms
            if self.binning is not None:
                fp.binning = int(self.binning)
            self.camera.set_current_frame_parameters(fp)
            batch.callback(self.camera.set_current_frame_parameters, saved)
            self.camera.start_playing(sync_timeout=SYNC_TIMEOUT_S)
            batch.callback(self.camera.stop_playing, sync_timeout=SYNC_TIMEOUT_S)
            for r, c in pos.tolist():
                if self._cancel.is_set():      # cancelled: keep the frames taken so far
                    break
                self._move_probe(Geometry.FloatPoint(y=(r + 0.5) / h, x=(c + 0.5) / w))
                xd = self.camera.get_next_xdatas_to_start(timeout=SYNC_TIMEOUT_S)[0]
                if xd is None:
                    raise EmedgeError(f"the camera returned no frame at {(r, c)}")
                data = np.asarray(xd.data, np.float32)
                frames.append(data.sum(axis=0) if self.signal_kind == "spectrum" and data.ndim == 2 else data)
        xd = xd if xd is not None else self._last_frame
        if xd is None:
            raise EmedgeError("measure() took no frame: no position given, or the batch was cancelled first")
        self._last_frame = xd               # its shape and calibration describe an empty (cancelled) batch
        sig = (xd.data.shape[-1],) if self.signal_kind == "spectrum" else tuple(xd.data.shape)
        data = np.stack(frames) if frames else np.zeros((0, *sig), np.float32)
        if self.signal_kind == "spectrum":
            cal = xd.dimensional_calibrations[-1]
            return Frames(data, "spectrum", energy_eV=cal.offset + cal.scale * np.arange(data.shape[1]))
        mrad = None
        if xd.dimensional_calibrations[-1].units == "rad":
            mrad = float(xd.dimensional_calibrations[-1].scale) * 1e3
        return Frames(data, "diffraction", mrad_per_px=mrad)

    def measure_scanned(self, positions: np.ndarray) -> Frames:
        """One camera frame per survey pixel (row, col) in ``positions``, taken by synchronized scans:
        for each survey row the batch touches (in the order of its first position there), one line
        sub-scan of the survey's grid from the row's first to its last column (at least 2 pixels: a
        one-pixel synchronized scan does not run on nionswift-usim), the frames at the other columns
        of the line discarded. :meth:`cancel` ends the batch between two lines; the frames of the
        leading positions already taken are returned."""
        from nion.utils import Geometry

        if self._survey is None:
            raise EmedgeError("measure() before survey(): the probe positions are fractions of the survey scan")
        h, w = self._survey.shape
        if w < 2:
            raise EmedgeError("batch_scan needs a survey at least 2 px wide (survey_px)")
        pos = check_positions(positions, (h, w))
        got: dict[tuple[int, int], np.ndarray] = {}
        last: list[Frames] = []
        for r in dict.fromkeys(pos[:, 0].tolist()):             # rows in the order the batch reaches them
            if self._cancel.is_set():
                break
            cols = sorted(set(pos[pos[:, 0] == r, 1].tolist()))
            n = max(cols[-1] - cols[0] + 1, 2)
            c0 = min(cols[0], w - n)
            fp = self.scan.get_current_frame_parameters()
            fp.size = Geometry.IntSize(h, w)
            fp.fov_nm = self.fov_nm
            fp.subscan_pixel_size = (1, n)
            fp.subscan_fractional_size = (1 / h, n / w)
            fp.subscan_fractional_center = ((r + 0.5) / h, (c0 + n / 2) / w)

            def keep(_: int, line: Frames, r: int = r, cols: list[int] = cols, c0: int = c0) -> None:
                got.update({(r, c): line.data[c - c0] for c in cols})
                last[:] = [line]
            try:
                self._grab(fp, (1, n), keep)
            except Exception:
                if self._cancel.is_set():       # aborted by cancel(): keep the lines taken before
                    break
                raise
        if not last:
            raise EmedgeError("measure() took no frame: no position given, or the batch was cancelled first")
        k = next((i for i, (r, c) in enumerate(pos.tolist()) if (r, c) not in got), len(pos))
        line = last[0]
        data = (np.stack([got[(r, c)] for r, c in pos[:k].tolist()]) if k
                else np.zeros((0,) + line.data.shape[1:], np.float32))
        return Frames(data, line.kind, energy_eV=line.energy_eV, mrad_per_px=line.mrad_per_px)

    def scan_rows(self, shape: tuple[int, int], on_row: typing.Callable[[int, Frames], None]) -> int:
        """A synchronized scan: the scan device steps the probe over an (H, W) grid of the survey's field
        of view while the camera takes one frame per pixel - nionswift-instrumentation's
        ``grab_synchronized``, the machinery of its own SI / 4D acquisition panels - one scan row per
        section. Each row, as soon as its frames are in, goes to ``on_row(row, Frames)`` (W frames; called
        on the acquisition thread). :meth:`cancel` aborts the scan. Returns the rows delivered."""
        from nion.utils import Geometry

        h, w = (int(v) for v in shape)
        fp = self.scan.get_current_frame_parameters()
        fp.size = Geometry.IntSize(h, w)
        fp.fov_nm = self.fov_nm
        self._cancel.clear()
        return self._grab(fp, (h, w), on_row)

    def _grab(self, fp: typing.Any, shape: tuple[int, int], on_row: typing.Callable[[int, Frames], None]) -> int:
        """``grab_synchronized`` with scan frame parameters ``fp`` over ``shape`` (H, W) scan pixels (the
        whole frame or a sub-scan), each row to ``on_row`` as soon as its frames are in. Returns the rows."""
        from nion.instrumentation import Acquisition

        w = int(shape[1])
        cfp = self.camera.get_frame_parameters_from_dict(self.camera.get_current_frame_parameters().as_dict())
        cfp.exposure_ms = self.exposure_ms
        if self.binning is not None:
            cfp.binning = int(self.binning)
        if self.signal_kind == "spectrum":
            cfp.processing = "sum_project"            # one spectrum per scan pixel
        camera_id, kind = self.camera.hardware_source_id, self.signal_kind
        delivered = [0]

        class Rows(Acquisition.DataAndMetadataDataChannel):
            def update_data(self, channel: typing.Any, source_data: typing.Any, source_slice: typing.Any,
                            dest_slice: slice, data_metadata: typing.Any) -> None:
                super().update_data(channel, source_data, source_slice, dest_slice, data_metadata)
                if channel.segments[0] != camera_id:
                    return
                xd = self.get_data(channel)
                sig = tuple(xd.data.shape[2:])
                done = int(dest_slice.stop) // (w * int(np.prod(sig)))
                cal = xd.dimensional_calibrations[-1]
                for r in range(delivered[0], done):
                    data = np.array(xd.data[r], np.float32)
                    if kind == "spectrum":
                        on_row(r, Frames(data, "spectrum", energy_eV=cal.offset + cal.scale * np.arange(sig[-1])))
                    else:
                        on_row(r, Frames(data, "diffraction",
                                         mrad_per_px=float(cal.scale) * 1e3 if cal.units == "rad" else None))
                delivered[0] = max(delivered[0], done)

        self._scanning = True
        try:
            self.scan.grab_synchronized(data_channel=Rows(), scan_frame_parameters=fp, camera=self.camera,
                                        camera_frame_parameters=cfp, section_height=1)
        finally:
            self._scanning = False
        return delivered[0]

    def state(self) -> dict[str, typing.Any]:
        """STEM controller values, probe, stage, scan and camera settings (JSON-able)."""
        values = {}
        for name in STATE_CONTROLS:
            ok, value = self.stem.TryGetVal(name)
            if ok and value is not None:
                values[name] = float(value)
        probe = self.stem.probe_position
        stage = getattr(self.stem, "stage_position_m", None)
        out: dict[str, typing.Any] = {
            "instrument": "swift",
            "stem_controller": str(getattr(self.stem, "instrument_id", type(self.stem).__name__)),
            "high_tension_V": values.get("EHT"),
            "defocus_m": values.get("C10"),
            "controls": values,
            "probe_position": [probe.y, probe.x] if probe is not None else None,
            "stage_position_m": [stage.y, stage.x] if stage is not None else None,
            "scan": {"device": self.scan.hardware_source_id, "size_px": [self.survey_px, self.survey_px],
                     "fov_nm": self.fov_nm},
            "camera": {"device": self.camera.hardware_source_id, "exposure_ms": self.exposure_ms,
                       "binning": self.binning},
        }
        if self._survey is not None:
            out["scan"] |= {"pixel_size_nm": self._survey.pixel_size_nm, "origin_nm": list(self._survey.origin_nm)}
        return out

    def available(self) -> typing.Optional[np.ndarray]:
        return None


def from_registry(signal_kind: str = "spectrum", **knobs: typing.Any) -> SwiftInstrument:
    """The microscope Swift is connected to (the registered ``stem_controller``), as an instrument."""
    from nion.utils import Registry

    stem = Registry.get_component("stem_controller")
    if stem is None:
        raise EmedgeError("no microscope: Swift has no STEM controller (install and enable nionswift-usim "
                          "or your instrument's plug-in)")
    return SwiftInstrument(stem, signal_kind, **knobs)


class UsimSession:
    """nionswift-usim without a GUI: the simulated STEM, scan device and both cameras.

    usim deletes and re-creates ``./test_data`` while it starts, so it starts in a fresh temporary
    directory (removed on :meth:`close`); the working directory is restored right after. Always
    close the session (or use ``with``): the simulator's threads keep the process alive otherwise.
    """

    def __init__(self, sample_index: int = 0) -> None:
        from nion.instrumentation.test import AcquisitionTestContext
        from nion.swift.test import TestContext
        from nion.usim_device import DeviceConfiguration

        cwd = os.getcwd()
        self._tmp = tempfile.TemporaryDirectory(prefix="emedge-usim-")
        os.chdir(self._tmp.name)
        try:
            self._setup = TestContext.TestSetup()
            self._ctx = AcquisitionTestContext.AcquisitionTestContext(
                DeviceConfiguration.AcquisitionContextConfiguration(sample_index=sample_index), is_both_cameras=True)
        except BaseException:
            self._tmp.cleanup()
            raise
        finally:
            os.chdir(cwd)
        self.stem = self._ctx.instrument
        self._closed = False

    def instrument(self, signal_kind: str = "spectrum", **knobs: typing.Any) -> SwiftInstrument:
        return SwiftInstrument(self.stem, signal_kind, **knobs)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._ctx.close()
        finally:
            self._tmp.cleanup()

    def __enter__(self) -> UsimSession:
        return self

    def __exit__(self, *exc: typing.Any) -> None:
        self.close()


def usim_instrument(options: InstrumentOptions) -> SwiftInstrument:
    """``emedge run --instrument usim``: the entry point of the ``emedge.instruments`` group.

    Uses ``options.size`` (survey px, capped at 256) and ``options.signal_kind``. The instrument owns
    its simulator session: ``emedge run`` closes it when done.
    """
    signal = options.signal_kind
    session = UsimSession()
    try:
        return SwiftInstrument(session.stem, signal, survey_px=min(int(options.size), 256),
                               binning=None if signal == "spectrum" else 4, owner=session)
    except BaseException:
        session.close()
        raise
