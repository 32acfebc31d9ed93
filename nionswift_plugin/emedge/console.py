"""The scripting API for Swift's console (and what the Autonomous Experiment panel calls).

In Swift's console (*Window > Python Console*) ``emedge`` is already imported::

    run = emedge.start("microscope", "eels_band_integral", budget=40, seeds=5, window_px=8)
    run.pause(); run.resume()
    run.status                    # 'step 12: 16/40 measured (0.21 s)'
    m = run.maps                  # {'measured', 'prediction', 'uncertainty'}: (H, W) arrays
    run.stop(); run.files         # {'h5': .../experiment.h5, 'summary': ..., 'maps': ...}

    scan = emedge.stream("microscope", "si", (16, 16), "eels_band_integral")   # a synchronized scan
    scan.status; scan.map         # the scalar map so far, (H, W), NaN where no row is in yet
    scan.stop(); scan.wait()      # the StreamResult: frames, dropped, chunks_published, scalar_map, ...

``source`` is ``"microscope"`` (the STEM controller Swift is connected to, e.g. nionswift-usim),
``"twin"`` (the digital twin) or the path of a replay file; or any object that implements
:class:`emedge_core.instrument.Instrument`.
"""
from __future__ import annotations

import datetime
import os
import typing

from emedge_core import EmedgeError
from emedge_core.instrument import Instrument, InstrumentOptions, open_instrument
from emedge_core.scalarize import from_spec
from emedge_core.settings import load_settings

if typing.TYPE_CHECKING:   # the loop (and torch with it) loads when a run starts, not when Swift does
    from nionswift_plugin.emedge.live import LiveExperiment
    from nionswift_plugin.emedge.live_stream import LiveStream


def make_instrument(source: typing.Union[str, Instrument], signal_kind: str, *, survey_px: int = 64,
                    exposure_ms: float = 10.0, seed: int = 0, batch_scan: bool = False) -> Instrument:
    """The instrument named by ``source`` for frames of ``signal_kind`` (see the module doc): the Swift
    session's own microscope (``batch_scan``: batches measured by synchronized line sub-scans), or
    ``twin``/``replay`` through :func:`emedge_core.instrument.open_instrument`."""
    if not isinstance(source, str):
        return source
    if source == "microscope":
        from nionswift_plugin.emedge.swift_instrument import from_registry

        return from_registry(signal_kind, survey_px=survey_px, exposure_ms=exposure_ms,
                             binning=None if signal_kind == "spectrum" else 4, batch_scan=batch_scan)
    if batch_scan:
        raise EmedgeError("batch_scan (Batches: synchronized sub-scans) needs the microscope as the source")
    if source == "twin":
        return open_instrument("twin", InstrumentOptions(signal_kind=signal_kind, size=survey_px, seed=seed))
    if not source.strip():
        raise EmedgeError("no replay file given")
    return open_instrument("replay", InstrumentOptions(signal_kind=signal_kind, seed=seed,
                                                       data=os.path.expanduser(source.strip())))


def default_out_dir() -> str:
    """``<staging dir>/experiments/<UTC time>`` (the staging directory comes from the facility settings)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join(load_settings().staging_dir, "experiments", stamp)


def start(source: typing.Union[str, Instrument] = "microscope", scalarizer: typing.Any = "eels_band_integral", *,
          budget: int = 40, seeds: int = 5, window_px: int = 8, batch: int = 1, acquisition: str = "ucb",
          stop_uncertainty: typing.Optional[float] = None, survey_px: int = 64, exposure_ms: float = 10.0,
          seed: int = 0, drift_every: typing.Optional[int] = None, out_dir: typing.Optional[str] = None,
          document_window: typing.Any = None, patch_mode: str = "restrict",
          components: typing.Optional[int] = 16, batch_scan: bool = False) -> LiveExperiment:
    """Start an autonomous experiment in Swift and return it while it runs.

    scalarizer: a name or ``{"name": ..., <params>}``; budget, seeds, batch, acquisition,
    stop_uncertainty, seed, drift_every: see :class:`~emedge_core.experiment.ExperimentConfig`; window_px: patch
    edge; patch_mode: "restrict" or "reflect" (every survey pixel a candidate); components: PCA scores per
    patch; survey_px, exposure_ms: survey size and camera exposure on the microscope (survey_px is
    the twin's size too); out_dir: where the result is written (default :func:`default_out_dir`);
    document_window: the Swift window for the live data items (default: the first one); batch_scan: on
    the microscope, measure each batch of positions through nionswift-instrumentation's synchronized
    scan (one line sub-scan per survey row the batch touches) instead of parking the probe point by point.
    Frames are scalarized in Swift's process as they arrive, on the GPU when one is present and the
    facility settings allow it (``[compute] gpu``). Bad arguments raise :class:`~emedge_core.EmedgeError`
    before anything starts.
    """
    from emedge_core.experiment import ExperimentConfig
    from nionswift_plugin.emedge.live import LiveExperiment

    scal = from_spec(scalarizer).use(load_settings().scalarize_backend)   # frames reduced on the GPU when allowed
    config = ExperimentConfig(budget=int(budget), seeds=int(seeds), batch=int(batch), acquisition=acquisition,
                              window=int(window_px), patch_mode=patch_mode,
                              components=None if components is None else int(components),
                              seed=int(seed), stop_uncertainty=stop_uncertainty,
                              drift_every=None if drift_every is None else int(drift_every))
    instrument = make_instrument(source, scal.signal_kind, survey_px=int(survey_px), exposure_ms=float(exposure_ms),
                                 seed=int(seed), batch_scan=bool(batch_scan))
    if scal.signal_kind == "spectrum":       # an energy window outside the axis stops here, before the survey
        from emedge_core.consistency import check_energy_windows

        try:
            check_energy_windows(scal, getattr(instrument, "energy_eV", None))
        except EmedgeError:
            getattr(instrument, "close", lambda: None)()
            raise
    if document_window is None:
        from nion.swift import Facade

        document_window = Facade.get_api("~1.0", "~1.0").application.document_windows[0]
    live = LiveExperiment(document_window, instrument, scal, config, out_dir or default_out_dir())
    return live.start()


def default_stream_dir() -> str:
    """``<staging dir>/streams/<UTC time>``: where a streamed scan's file, map and stage go by default."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join(load_settings().staging_dir, "streams", stamp)


def parse_scan(scan: typing.Union[str, typing.Sequence[int]]) -> tuple[int, int]:
    """(H, W) from ``"HxW"`` or a pair of whole numbers."""
    try:
        h, w = (int(v) for v in (scan.lower().split("x") if isinstance(scan, str) else scan))
    except (TypeError, ValueError):
        raise EmedgeError(f"scan must be HxW (e.g. 16x16), not {scan!r}") from None
    if h < 1 or w < 1:
        raise EmedgeError(f"scan must be HxW with H, W >= 1, not {h}x{w}")
    return h, w


def stream(source: typing.Union[str, Instrument] = "microscope", kind: str = "si",
           scan: typing.Union[str, typing.Sequence[int]] = (16, 16), scalarizer: typing.Any = None, *,
           out_dir: typing.Optional[str] = None, publish: bool = True, exposure_ms: float = 10.0,
           survey_px: int = 64, codec: str = "auto", dtype: typing.Any = None,
           block_rows: typing.Optional[int] = None, seed: int = 0, document_window: typing.Any = None) -> LiveStream:
    """Stream a whole scan (``emedge stream``) in Swift and return it while it runs.

    On the microscope the scan is nionswift-instrumentation's synchronized scan (the machinery of its
    SI and 4D acquisition panels), one scan row at a time; every frame goes through ``scalarizer``
    (None: the kind's default) as it arrives, and the map is the live data item *emedge stream map*.
    kind: "si" (EELS spectra) or "4d" (Ronchigram frames); scan: (H, W) or "HxW" probe positions over
    the survey's field of view; out_dir: where ``scan.h5``, ``scan.map.npy`` and (``publish``) the
    stage directory ``stage/`` go (default :func:`default_stream_dir`); exposure_ms, survey_px: camera
    exposure and survey size (the twin's size too); codec, dtype, block_rows: as for ``emedge stream``.
    Bad arguments raise :class:`~emedge_core.EmedgeError` before anything starts.
    """
    from emedge_core.stream.acquire import DEFAULT_SCALARIZER, KINDS
    from nionswift_plugin.emedge.live_stream import LiveStream

    if kind not in KINDS:
        raise EmedgeError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    shape = parse_scan(scan)
    if block_rows is not None and int(block_rows) < 1:
        raise EmedgeError(f"block rows must be >= 1 (empty: one EMD chunk's rows), not {block_rows}")
    spec = scalarizer or DEFAULT_SCALARIZER[kind]
    scal = from_spec(spec)
    if scal.signal_kind != KINDS[kind]:
        raise EmedgeError(f"scalarizer {scal.name} reduces {scal.signal_kind} frames; kind {kind!r} gives "
                          f"{KINDS[kind]} frames")
    instrument = make_instrument(source, KINDS[kind], survey_px=int(survey_px), exposure_ms=float(exposure_ms),
                                 seed=int(seed))
    out_dir = out_dir or default_stream_dir()
    os.makedirs(out_dir, exist_ok=True)
    if document_window is None:
        from nion.swift import Facade

        document_window = Facade.get_api("~1.0", "~1.0").application.document_windows[0]
    live = LiveStream(document_window, instrument, kind, shape, os.path.join(out_dir, "scan.h5"),
                      stage=os.path.join(out_dir, "stage") if publish else None, scalarizer=spec, codec=codec,
                      dtype=dtype, block_rows=block_rows)
    return live.start()


class ConsoleStartup:
    """Adds ``emedge`` (this module) to every new Swift console (a ``console-startup`` component)."""

    def get_console_startup_info(self, logger: typing.Any) -> typing.Any:
        from nion.swift import ConsoleDialog

        return ConsoleDialog.ConsoleStartupInfo(
            "emedge", ["from nionswift_plugin.emedge import console as emedge"],
            ["emedge.start(source, scalarizer, budget=...) runs an autonomous experiment; "
             "emedge.stream(source, kind, (H, W), scalarizer) streams a scan; help(emedge) for more"])
