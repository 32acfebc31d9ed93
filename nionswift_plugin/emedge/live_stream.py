"""Streamed scans inside Swift: the scalar map as a live data item while the scan runs, and a
follow job's results as they grow on the cluster.

- :class:`LiveStream` runs :func:`emedge_core.stream.stream` (the acquisition chain of ``emedge
  stream``: the instrument's synchronized scan - nionswift-instrumentation's ``grab_synchronized`` on
  a Swift microscope - into FILE.h5 and the stage directory) on a worker thread. The chain calls back
  after each row (``on_row``, on its own thread); the map is copied there and left as the newest
  snapshot for the UI.
- :class:`FollowWatch` watches a ``follow`` job (:func:`emedge_core.jobs.follow_job`) submitted
  through ``hpc_client``: the follower replaces its RESULT.h5 atomically after every block, and the
  watcher reads it from the job directory while the job runs (:meth:`hpc_client.Client.read_output`).

Both hand snapshots to Swift's UI thread the way :class:`~nionswift_plugin.emedge.live.LiveExperiment`
does: only the newest one is kept, one chain of UI tasks runs at a time (:class:`LatestOnUI`), so a
slow UI skips intermediate rows instead of piling them up; the UI task only hands the finished array
to the data item (kept in a Swift transaction while the scan lasts).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Instrument
from nionswift_plugin.emedge.live import displayable

if typing.TYPE_CHECKING:
    from emedge_core.stream import StreamResult

LOG = logging.getLogger("emedge")
T = typing.TypeVar("T")
RESULT_NAME = "follow.h5"        # the follow job's RESULT.h5 in its job directory (follow_job's default)


@dataclasses.dataclass(frozen=True)
class MapSnapshot:
    """A scalar map as it stands: ``values`` (H, W) or (H, W, k) float64, NaN where no frame is in yet."""

    rows: int                    # scan rows in the map so far
    scan: tuple[int, int]        # (H, W)
    values: typing.Optional[np.ndarray]
    state: str                   # "running", "finished", "stopped", "failed" (or a job's state)
    message: str


class LatestOnUI(typing.Generic[T]):
    """Hands the newest value posted from any thread to ``apply`` on Swift's UI thread
    (``window.queue_task``): one queued UI task at a time; values posted while it waits replace
    each other, so a slow UI skips intermediate values and never piles tasks up."""

    def __init__(self, window: typing.Any, apply: typing.Callable[[T], None]) -> None:
        self.window, self._apply = window, apply
        self._lock = threading.Lock()
        self._value: typing.Optional[T] = None
        self._has = self._queued = False

    def post(self, value: T) -> None:
        with self._lock:
            self._value, self._has = value, True
            start, self._queued = not self._queued, True
        if start:
            self.window.queue_task(self._run)

    @property
    def idle(self) -> bool:
        """Nothing posted is waiting for the UI."""
        with self._lock:
            return not self._queued

    def _run(self) -> None:
        with self._lock:
            value, self._value, self._has = self._value, None, False
        try:
            self._apply(typing.cast(T, value))
        finally:
            with self._lock:
                again = self._queued = self._has
            if again:
                self.window.queue_task(self._run)


class MapItem:
    """One data item in Swift ``window`` showing a (H, W) map, or a (H, W, k) map as a 2-D collection
    of k-vectors; created on the first :meth:`show` (UI thread only) and kept in a transaction until
    :meth:`end` (Swift defers the storage writes, as for live acquisitions)."""

    def __init__(self, window: typing.Any, title: str) -> None:
        self.window, self.title = window, title
        self.data_item: typing.Any = None
        self._ref: typing.Any = None

    def show(self, values: np.ndarray) -> None:
        data = displayable(values)
        if self.data_item is not None:
            self._transaction().data = data
            return
        if data.ndim == 3:
            from nion.data import DataAndMetadata

            xd = DataAndMetadata.new_data_and_metadata(data, data_descriptor=DataAndMetadata.DataDescriptor(
                False, 2, 1))
            self.data_item = self.window.library.create_data_item_from_data_and_metadata(xd, self.title)
        else:
            self.data_item = self.window.library.create_data_item_from_data(data, self.title)
        self._transaction()
        self.window.display_data_item(self.data_item)

    def _transaction(self) -> typing.Any:
        """The item's data reference, in a transaction until :meth:`end`."""
        if self._ref is None:
            self._ref = self.window.library.data_ref_for_data_item(self.data_item)
            self._ref.__enter__()
        return self._ref

    def end(self) -> None:
        if self._ref is not None:
            self._ref.__exit__(None, None, None)
            self._ref = None


class LiveStream:
    """A streamed scan (:func:`emedge_core.stream.stream`) on a worker thread, with its scalar map
    as the live data item *emedge stream map* in Swift ``window`` (a Facade DocumentWindow).

    instrument, kind ("si" or "4d"), scan (H, W), out (FILE.h5), stage (the stage directory, or None),
    scalarizer (a spec; None = the kind's default), codec, dtype, block_rows: as for
    :func:`~emedge_core.stream.stream`. ``listeners`` get every :class:`MapSnapshot` shown, on the
    UI thread; ``shown_rows`` lists the rows the map held at each UI update.
    """

    TITLE = "emedge stream map"

    def __init__(self, window: typing.Any, instrument: Instrument, kind: str, scan: tuple[int, int], out: str,
                 stage: typing.Optional[str] = None, scalarizer: typing.Any = None, codec: str = "auto",
                 dtype: typing.Any = None, block_rows: typing.Optional[int] = None) -> None:
        self.window, self.instrument = window, instrument
        self.kind, self.scan, self.out, self.stage = kind, (int(scan[0]), int(scan[1])), out, stage
        self.scalarizer, self.codec, self.dtype, self.block_rows = scalarizer, codec, dtype, block_rows
        self.item = MapItem(window, self.TITLE)
        self.listeners: list[typing.Callable[[MapSnapshot], None]] = []
        self.shown_rows: list[int] = []
        self.result: typing.Optional[StreamResult] = None
        self.error: typing.Optional[str] = None
        self.latest: typing.Optional[MapSnapshot] = None
        self._newest: typing.Optional[MapSnapshot] = None
        self._rows = 0
        self._stop = threading.Event()
        self._ui: LatestOnUI[MapSnapshot] = LatestOnUI(window, self._apply)
        self._thread = threading.Thread(target=self._work, name="emedge-stream", daemon=True)

    # -- control (any thread) ------------------------------------------------------------
    def start(self) -> LiveStream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the scan after the row in progress; the partial file and map are kept."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def done(self) -> bool:
        """The scan has ended and the UI shows its last state."""
        return not self._thread.is_alive() and self._ui.idle

    def wait(self, timeout: typing.Optional[float] = None) -> typing.Optional[StreamResult]:
        """Block until the scan and its file are done (not from the UI thread of a GUI)."""
        self._thread.join(timeout)
        return self.result

    @property
    def status(self) -> str:
        s = self._newest
        return s.message if s is not None else "starting ..."

    @property
    def map(self) -> typing.Optional[np.ndarray]:
        """The newest map, (H, W) or (H, W, k), NaN where no value is in yet (None before the first row)."""
        s = self._newest
        return None if s is None else s.values

    # -- worker threads ------------------------------------------------------------------
    def _work(self) -> None:
        from emedge_core.stream import stream

        h, w = self.scan
        try:
            r = self.result = stream(self.instrument, self.kind, self.scan, self.out, stage=self.stage,
                                     scalarizer=self.scalarizer, codec=self.codec, dtype=self.dtype,
                                     stop=self._stop, block_rows=self.block_rows, on_row=self._on_row)
            state = "finished" if r.complete else "stopped"
            where = f", {r.chunks_published} blocks to {self.stage}" if self.stage else ""
            why = f" ({r.stopped})" if r.stopped else ""
            self._post(MapSnapshot(r.rows, self.scan, np.load(r.scalar_map), state, (
                f"{state}: {r.rows}/{h} rows, {r.frames} frames, {r.dropped} dropped{where}; "
                f"map {r.scalar_map}{why}")))
        except EmedgeError as e:
            self._fail(str(e))
        except Exception as e:   # a device or file error: one line in the panel, the traceback in the log
            LOG.exception("emedge stream failed")
            self._fail(f"{type(e).__name__}: {e}")
        finally:
            try:
                getattr(self.instrument, "restore", lambda: None)()
            except Exception:
                LOG.exception("emedge could not restore the microscope's state")

    def _on_row(self, row: int, values: np.ndarray) -> None:
        """The chain's hook (its thread): copy the (H, W, k) map with ``row`` in it."""
        self._rows += 1
        m = values[..., 0] if values.shape[2] == 1 else values
        self._post(MapSnapshot(self._rows, self.scan, m.copy(), "running",
                               f"scanning: {self._rows}/{self.scan[0]} rows"))

    def _fail(self, message: str) -> None:
        self.error = message
        last = self._newest
        self._post(MapSnapshot(last.rows if last else 0, self.scan, last.values if last else None, "failed",
                               f"error: {message}"))

    def _post(self, snap: MapSnapshot) -> None:
        self._newest = snap
        self._ui.post(snap)

    # -- UI thread -----------------------------------------------------------------------
    def _apply(self, snap: MapSnapshot) -> None:
        self.latest = snap
        if snap.values is not None:
            self.item.show(snap.values)
            self.shown_rows.append(snap.rows)
        if snap.state != "running":
            self.item.end()
        for listener in list(self.listeners):
            listener(snap)


class FollowWatch:
    """The RESULT.h5 of a running ``follow`` job (``job_id`` on hpc_client ``client``) as the live data
    item *emedge follow <job id>* in Swift ``window``, read from the job directory every ``poll_s`` s
    while the job runs and once more when it has ended. ``scratch``: a local directory for the copy
    read last. ``listeners`` get a :class:`MapSnapshot` (and the job) on the UI thread after each new
    RESULT.h5 and each change of the job's state."""

    def __init__(self, window: typing.Any, client: typing.Any, job_id: str, scratch: str, poll_s: float = 0.5,
                 name: str = RESULT_NAME) -> None:
        self.window, self.client, self.job_id, self.name = window, client, job_id, name
        self.scratch, self.poll_s = scratch, float(poll_s)
        self.item = MapItem(window, f"emedge follow {job_id}")
        self.listeners: list[typing.Callable[[MapSnapshot, typing.Any], None]] = []
        self.shown_rows: list[int] = []
        self.job: typing.Any = None
        self.error: typing.Optional[str] = None
        self.latest: typing.Optional[MapSnapshot] = None
        self._shown: typing.Optional[np.ndarray] = None
        self._stop = threading.Event()
        self._ui: LatestOnUI[tuple[MapSnapshot, typing.Any]] = LatestOnUI(window, self._apply)
        self._thread = threading.Thread(target=self._work, name="emedge-follow-watch", daemon=True)

    def start(self) -> FollowWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the job itself goes on)."""
        self._stop.set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive() and self._ui.idle

    def wait(self, timeout: typing.Optional[float] = None) -> None:
        self._thread.join(timeout)

    # -- worker thread -------------------------------------------------------------------
    def _work(self) -> None:
        from hpc_client.errors import HPCError

        last: typing.Optional[bytes] = None
        snap = MapSnapshot(0, (0, 0), None, "PENDING", f"{self.job_id}: no results yet")
        job, state = None, None
        try:
            while True:
                job = self.client.status(self.job_id)       # first the state, then the file: the final
                data = self.client.read_output(self.job_id, self.name)   # file is read after the end
                fresh = data is not None and data != last
                if fresh:
                    assert data is not None
                    last, snap = data, self._read(data)
                if fresh or job.state != state:
                    state = job.state
                    snap = dataclasses.replace(snap, state=job.state.value, message=self._message(snap, job))
                    self._ui.post((snap, job))
                if job.state.terminal or self._stop.wait(self.poll_s):
                    return
        except (EmedgeError, HPCError, OSError) as e:
            self._fail(snap, job, str(e))
        except Exception as e:   # one line in the panel, the traceback in the log
            LOG.exception("emedge follow watch failed")
            self._fail(snap, job, f"{type(e).__name__}: {e}")

    def _fail(self, snap: MapSnapshot, job: typing.Any, message: str) -> None:
        self.error = message
        self._ui.post((dataclasses.replace(snap, state="failed", message=f"error: {message}"), job))

    def _read(self, data: bytes) -> MapSnapshot:
        """The map in the RESULT.h5 bytes ``data``: ``map`` once the scan is complete, else ``values``."""
        from emedge_core import emd

        os.makedirs(self.scratch, exist_ok=True)
        path = os.path.join(self.scratch, self.name)
        with open(path + ".part", "wb") as fp:
            fp.write(data)
        os.replace(path + ".part", path)
        arrays = emd.read(path)
        follow = emd.metadata(path, "values")["follow"]
        h, w = (int(v) for v in follow["scan"])
        if "map" in arrays:
            m = np.asarray(arrays["map"], np.float64)
        else:
            v = np.asarray(arrays["values"], np.float64)
            m = v[..., 0] if v.shape[2] == 1 else v
        return MapSnapshot(int(follow["frames"]) // max(w, 1), (h, w), m, "", "")

    def _message(self, snap: MapSnapshot, job: typing.Any) -> str:
        done = "no results yet" if snap.values is None else f"{snap.rows}/{snap.scan[0]} rows reduced"
        why = (job.stderr_tail or "").strip().splitlines()[-1:] if job.state.value in ("FAILED", "TIMEOUT") else []
        return f"{self.job_id} {job.state.value}: {done}" + "".join(f" ({line})" for line in why)

    # -- UI thread -----------------------------------------------------------------------
    def _apply(self, got: tuple[MapSnapshot, typing.Any]) -> None:
        snap, job = got
        self.latest, self.job = snap, job
        if snap.values is not None and snap.values is not self._shown:   # a new RESULT.h5
            self._shown = snap.values
            self.item.show(snap.values)
            self.shown_rows.append(snap.rows)
        if snap.state == "failed" or (job is not None and job.state.terminal):
            self.item.end()
        for listener in list(self.listeners):
            listener(snap, job)
