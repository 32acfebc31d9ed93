"""A running experiment inside Swift: the loop on a worker thread, live data items on the UI thread.

:class:`LiveExperiment` runs :class:`emedge_core.experiment.Experiment` on its own thread. After
every step the worker turns the model's posterior into (H, W) maps (NumPy, off the UI thread)
and leaves the newest :class:`Snapshot` for the UI; one chain of UI tasks runs at a time
(``window.queue_task``), so a slow UI skips intermediate steps instead of piling them up. The
UI tasks only hand arrays to three data items, one per tick - the survey with one point graphic per
measured position, the prediction and the uncertainty - and call the listeners.

When the loop ends the result goes to ``out_dir`` through :func:`emedge_core.experiment_file.write_experiment`
(experiment.h5 by the EMD writer, summary.json, maps.png). Errors end the run with a one-line
message in :attr:`LiveExperiment.error`; the traceback goes to the log only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import threading
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames, Instrument, Survey

if typing.TYPE_CHECKING:   # the loop (and torch with it) loads when a run starts, not when Swift does
    from emedge_core.experiment import ExperimentConfig, ExperimentResult, Step

LOG = logging.getLogger("emedge")
ENDED = ("finished", "stopped", "failed")
TITLES = {"survey": "emedge survey + measured", "prediction": "emedge prediction", "uncertainty": "emedge uncertainty"}


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the UI shows after a step. Maps are (H, W) with NaN off the candidates (None while seeding)."""

    n_measured: int
    budget: int
    positions: np.ndarray            # (n, 2) every measured survey pixel so far
    values: np.ndarray               # (n,)
    prediction: typing.Optional[np.ndarray]
    uncertainty: typing.Optional[np.ndarray]
    state: str                       # "running", "paused", "finished", "stopped", "failed"
    message: str


def snapshot(step: Step, state: str = "running") -> Snapshot:
    """Maps and positions of ``step`` (runs on the worker thread)."""
    steerer = step.steerer
    patches = steerer.patches
    order = np.asarray(steerer.order, np.int64)
    post = step.posterior
    pred = patches.to_map(post.mean) if post is not None else None
    unc = patches.to_map(post.std) if post is not None else None
    return Snapshot(step.n_measured, step.budget, patches.coords[order], np.asarray(steerer.values),
                    pred, unc, state, f"step {step.index + 1}: {step.n_measured}/{step.budget} measured "
                                      f"({step.seconds:.2f} s)")


@contextlib.contextmanager
def share_with_ui() -> typing.Iterator[None]:
    """While the loop runs: one core and the GIL stay available to Swift's UI thread.

    torch fits on one core fewer than the machine has (it would otherwise take all of them).
    Swift's heap with torch loaded is large and a full garbage collection walks it holding the GIL
    (0.1-0.3 s measured): the UI thread's longest stalls. The objects alive at the start (Swift,
    torch, modules) are frozen out of the collector (``gc.freeze``; once more after the first model
    fit, which imports and builds the rest), and while the loop runs a full collection waits for
    100 collections of the middle generation instead of 10; the young generations are collected
    as usual. Thresholds and threads come back afterwards.
    """
    import torch

    thresholds, threads = gc.get_threshold(), torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    gc.freeze()
    gc.set_threshold(thresholds[0], thresholds[1], 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        torch.set_num_threads(threads)


def displayable(m: np.ndarray) -> np.ndarray:
    """``m`` with NaN (no candidate, a row not in yet, a frame without a value) shown as the map's minimum."""
    finite = np.isfinite(m)
    return np.where(finite, m, m[finite].min() if finite.any() else 0.0)


class _KeepSurvey:
    """The instrument, unchanged, except that it keeps the survey it returns for the live display."""

    def __init__(self, inner: Instrument) -> None:
        self.inner = inner
        self.signal_kind = inner.signal_kind
        self.image: typing.Optional[np.ndarray] = None

    def survey(self) -> Survey:
        s = self.inner.survey()
        self.image = s.image
        return s

    def measure(self, positions: np.ndarray) -> Frames:
        return self.inner.measure(positions)

    def state(self) -> dict[str, typing.Any]:
        return self.inner.state()

    def available(self) -> typing.Optional[np.ndarray]:
        return self.inner.available()

    def cancel(self) -> None:
        """End the batch in progress between two frames, when the instrument can."""
        cancel = getattr(self.inner, "cancel", None)
        if cancel is not None:
            cancel()

    def restore(self) -> None:
        """Put the microscope back as the run found it, when the instrument knows how."""
        restore = getattr(self.inner, "restore", None)
        if restore is not None:
            restore()


class LiveExperiment:
    """An experiment on a worker thread with live data items in Swift ``window`` (a Facade DocumentWindow).

    window: where the data items go (its ``library``) and the UI tasks run; instrument, scalarizer,
    config: as for :class:`~emedge_core.experiment.Experiment` (bad combinations raise
    :class:`~emedge_core.EmedgeError` here); out_dir: where the result is written (None = not
    written); listeners get every :class:`Snapshot` on the UI thread.
    """

    def __init__(self, window: typing.Any, instrument: Instrument, scalarizer: typing.Any,
                 config: ExperimentConfig, out_dir: typing.Optional[str] = None) -> None:
        from emedge_core.experiment import Experiment

        self._instrument = _KeepSurvey(instrument)
        self.experiment = Experiment(self._instrument, scalarizer, config)
        self.window, self.out_dir = window, out_dir
        self.listeners: list[typing.Callable[[Snapshot], None]] = []
        self.data_items: dict[str, typing.Any] = {}
        self.result: typing.Optional[ExperimentResult] = None
        self.files: dict[str, str] = {}
        self.error: typing.Optional[str] = None
        self.latest: typing.Optional[Snapshot] = None
        self._pending: typing.Optional[Snapshot] = None
        self._lock = threading.Lock()
        self._n_graphics = 0
        self._refs: dict[str, typing.Any] = {}
        self._busy = False
        self._model_seen = False
        self._thread = threading.Thread(target=self._work, name="emedge-experiment", daemon=True)

    # -- control (any thread) ------------------------------------------------------------
    def start(self) -> LiveExperiment:
        self._thread.start()
        return self

    def pause(self) -> None:
        self.experiment.pause()

    def resume(self) -> None:
        self.experiment.resume()

    def stop(self) -> None:
        """Stop after the frame in progress (the batch is cancelled); the result is still written."""
        self.experiment.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def done(self) -> bool:
        """The loop has ended and the UI shows its last state."""
        return not self._thread.is_alive() and self._pending is None and not self._busy

    def wait(self, timeout: typing.Optional[float] = None) -> typing.Optional[ExperimentResult]:
        """Block until the loop and the file writing are done (not from the UI thread of a GUI:
        the live maps need it)."""
        self._thread.join(timeout)
        return self.result

    @property
    def status(self) -> str:
        """One line: the newest step, or how the run ended."""
        s = self._pending or self.latest
        return s.message if s is not None else "starting: survey ..."

    @property
    def maps(self) -> dict[str, np.ndarray]:
        """The newest maps: prediction, uncertainty (H, W; NaN off candidates), measured (NaN where not)."""
        s = self.latest or self._pending
        if s is None or self._instrument.image is None:
            return {}
        measured = np.full(self._instrument.image.shape, np.nan)
        measured[s.positions[:, 0], s.positions[:, 1]] = s.values
        out = {"measured": measured}
        if s.prediction is not None and s.uncertainty is not None:
            out |= {"prediction": s.prediction, "uncertainty": s.uncertainty}
        return out

    # -- worker thread -------------------------------------------------------------------
    def _work(self) -> None:
        try:
            with share_with_ui():
                self.result = self.experiment.run(callback=self._on_step)
            if self.out_dir is not None:
                from emedge_core.experiment_file import write_experiment

                self.files = write_experiment(self.result, self.out_dir)
            r = self.result
            state = "stopped" if r.stopped_by == "stopped" else "finished"
            where = f"; saved {self.files['h5']}" if self.files else ""
            drift = f"; drift ({r.drift[-1, 1]:+.1f}, {r.drift[-1, 2]:+.1f}) px" if len(r.drift) else ""
            check = "".join(f"; check: {f['message']}" for f in r.findings)
            self._post(dataclasses.replace(self._last_or_empty(), state=state, message=(
                f"{state}: {len(r.values)} measured, stopped by {r.stopped_by}{drift}{where}{check}")))
        except EmedgeError as e:
            self._fail(str(e))
        except Exception as e:   # a device or file error: one line in the panel, the traceback in the log
            LOG.exception("emedge experiment failed")
            self._fail(f"{type(e).__name__}: {e}")
        finally:                 # ended, failed or stopped: the probe goes back where it was
            try:
                self._instrument.restore()
            except Exception:
                LOG.exception("emedge could not restore the microscope's state")

    def _last_or_empty(self) -> Snapshot:
        with self._lock:
            s = self._pending or self.latest
        return s or Snapshot(0, self.experiment.config.budget, np.zeros((0, 2), np.int64), np.zeros(0),
                             None, None, "running", "")

    def _fail(self, message: str) -> None:
        self.error = message
        self._post(dataclasses.replace(self._last_or_empty(), state="failed", message=f"error: {message}"))

    def _on_step(self, step: Step) -> None:
        if step.posterior is not None and not self._model_seen:
            self._model_seen = True
            gc.freeze()     # again: the first fit imported and built what every later step reuses
        self._post(snapshot(step, "paused" if self.experiment.paused else "running"))

    def _post(self, snap: Snapshot) -> None:
        """Leave ``snap`` for the UI; queue a UI task only when the UI is not already on it."""
        with self._lock:
            idle = self._pending is None and not self._busy
            self._pending = snap
        if idle:
            self.window.queue_task(self._apply)

    # -- UI thread -----------------------------------------------------------------------
    def _apply(self) -> None:
        """Show the newest snapshot, one data item per UI task (Swift's model updates are not free)."""
        with self._lock:
            snap, self._pending = self._pending, None
            self._busy = snap is not None
        if snap is not None:
            self._next(self._updates(snap))

    def _next(self, jobs: typing.Iterator[None]) -> None:
        if next(jobs, StopIteration) is not StopIteration:
            self.window.queue_task(lambda: self._next(jobs))
            return
        with self._lock:
            self._busy = False
            again = self._pending is not None
        if again:
            self.window.queue_task(self._apply)

    def _updates(self, snap: Snapshot) -> typing.Iterator[None]:
        self.latest = snap
        if "survey" not in self.data_items and self._instrument.image is not None:
            self._show("survey", self._instrument.image)
            yield
        if snap.prediction is not None and snap.uncertainty is not None:
            self._show("prediction", displayable(snap.prediction).astype(np.float32))
            yield
            self._show("uncertainty", displayable(snap.uncertainty).astype(np.float32))
            yield
        survey_item = self.data_items.get("survey")
        if survey_item is not None and len(snap.positions) > self._n_graphics:
            h, w = survey_item.data.shape
            for r, c in snap.positions[self._n_graphics:].tolist():
                survey_item.add_point_region((r + 0.5) / h, (c + 0.5) / w)
            self._n_graphics = len(snap.positions)
            yield
        if snap.state in ENDED:
            self._end_transactions()
        for listener in list(self.listeners):
            listener(snap)

    def _show(self, key: str, data: np.ndarray) -> None:
        """Create the data item ``key`` on first use, else replace its data. Each item stays in a
        transaction while the run lasts (as live acquisitions do): Swift defers storage writes."""
        ref = self._refs.get(key)
        if ref is None:
            item = self.data_items[key] = self.window.library.create_data_item_from_data(data, TITLES[key])
            ref = self._refs[key] = self.window.library.data_ref_for_data_item(item)
            ref.__enter__()
            self._display(item)
        else:
            ref.data = data

    def _display(self, item: typing.Any) -> None:
        """Show a new data item in the window's next free display panel, if it has one (Swift's public API)."""
        self.window.display_data_item(item)

    def _end_transactions(self) -> None:
        for ref in self._refs.values():
            ref.__exit__(None, None, None)
        self._refs.clear()
