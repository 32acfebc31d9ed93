"""The acquisition chain: instrument -> bounded queue (raw spill) -> scalarize -> EMD file + stage.

One thread acquires the scan row by row - through the instrument's synchronized scan when it has
one (``scan_rows(shape, on_row)``, e.g. Swift's ``grab_synchronized``), else ``instrument.measure``
on the W positions of each row - and hands each row to a
:class:`~emedge_core.stream.spill.SpillQueue`; it is never blocked. The calling
thread takes the rows in order, reduces them with one :class:`~emedge_core.scalarize.Reducer`
(prepared once, on the first row with good frames) into the scalar map - the latency of a frame is
the time from its arrival to its value in the map - then appends them to an
:class:`emd.StreamWriter <emedge_core.emd.StreamWriter>` and, with a stage directory, publishes each
block of rows matching the file's chunks (:class:`~emedge_core.stream.stage.Publisher`).

Faults stop cleanly: the stage full or unwritable stops acquisition, the rows already received still
go to the file; the instrument stopping (an error, ``stop`` set, SIGINT) leaves a valid partial file
that says how far it got (``scalar_map`` metadata ``rows_acquired``, ``complete``, ``stopped``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
import typing
from queue import Queue

import numpy as np

from emedge_core import EmedgeError, compress, emd
from emedge_core.compress import AnyCodec, SparseCodec
from emedge_core.compress.codec import Codec
from emedge_core.compress.stages import Blosc2
from emedge_core.emd.layout import os_error
from emedge_core.instrument import Frames, Instrument
from emedge_core.scalarize import Reducer, Signal, from_spec
from emedge_core.stream.spill import Row, SpillQueue
from emedge_core.stream.stage import Publisher

KINDS = {"si": "spectrum", "4d": "diffraction"}
DEFAULT_SCALARIZER = {"si": "eels_peak_energy", "4d": "virtual_bf"}
QUEUE_BYTES = 256 << 20          # rows held in memory before they spill raw to disk
BATCH_BYTES = 32 << 20           # rows the writing thread takes at once when they have queued up
LATENCY_TARGET_S = 0.1           # issue 15's latency goal: a backlog the chain needs longer than this for is "behind"
BEHIND_WRITES = 1                # writes in a row that find the chain behind: one step lighter (a write takes
                                 # every row queued, up to BATCH_BYTES: one write can be 64 rows late)
CAUGHT_UP_WRITES = 8             # writes in a row with at most one row waiting: one step back


def lighter_codecs(codec: AnyCodec) -> list[AnyCodec]:
    """``codec`` then the lighter plain Blosc2 settings a stream steps down to when it falls behind:
    the same blocks and shuffle with LZ4 (1.5x Zstd-1's speed on 128 x 128 counting frames, stored
    0.081 vs 0.055 of raw), then LZ4 with byte shuffle on slabs (2.2x, 0.114). Any Blosc2 chunk
    decodes in the stock HDF5 filter whatever the data set's filter options say (each chunk carries
    its own codec and filters), so chunks of one data set may differ. Only ``codec`` itself for
    anything that is not plain Blosc2 (raw, transforms, sparse events)."""
    if isinstance(codec, SparseCodec) or codec.transform is not None or codec.stage.name != "blosc2":
        return [codec]
    params = dict(codec.stage.params)
    steps = [{**params, "cname": "lz4", "clevel": 1,
              "shuffle": "byte" if params.get("shuffle") == "bytedelta" else params.get("shuffle", "bit")},
             {**{k: v for k, v in params.items() if k == "threads"}, "cname": "lz4", "clevel": 1, "shuffle": "byte"}]
    out: list[AnyCodec] = [codec]
    for step in steps:
        light = Codec(Blosc2(step), None)
        if all(light.spec != c.spec for c in out):
            out.append(light)
    return out


class _Pace:
    """``auto``'s codec made speed-aware: after each write of rows, the writer's MB/s and the chain's
    backlog (rows acquired but not yet written) say whether it falls behind - the backlog would take
    the chain, at the pace of its last write, longer than ``LATENCY_TARGET_S`` to clear - for
    ``BEHIND_WRITES`` writes in a row; then the following chunks take the next lighter setting
    (:func:`lighter_codecs`), and after ``CAUGHT_UP_WRITES`` writes in a row with at most one row
    waiting, the previous one again. The write in which ``auto`` chose (its trial on the first chunk
    and the first encodings cost ~0.1 s once) is not judged. Every switch is recorded (``switches``:
    its first row, the codec spec, the last write's MB/s in the writer and through the chain, the backlog in rows)."""

    def __init__(self, sink: emd.ArraySink) -> None:
        self.sink = sink
        self.ladder: typing.Optional[list[AnyCodec]] = None
        self.step = self.behind = self.caught_up = 0
        self.switches: list[dict[str, typing.Any]] = []

    def after_write(self, nbytes: int, seconds: float, interval: float, backlog_rows: int, row_bytes: int,
                    next_row: int) -> None:
        """Judge one write of ``nbytes`` raw: ``seconds`` in the writer, ``interval`` since the previous
        write ended (the chain's pace: reduction and waiting included), ``backlog_rows`` acquired and not
        yet written. Behind: the backlog would take the chain longer than ``LATENCY_TARGET_S`` at that pace."""
        if self.sink.codec is None:          # auto has not chosen yet (no whole chunk so far)
            return
        if self.ladder is None:              # the write in which auto chose pays one-off costs (its trial,
            self.ladder = lighter_codecs(self.sink.chosen)   # learning Blosc2's frame layout): not judged
            return
        if len(self.ladder) == 1 or seconds <= 0 or interval <= 0:
            return
        mbps, chain = nbytes / seconds, nbytes / interval
        behind = backlog_rows * row_bytes / chain > LATENCY_TARGET_S
        self.behind = self.behind + 1 if behind else 0
        self.caught_up = self.caught_up + 1 if backlog_rows <= 1 else 0
        if self.behind >= BEHIND_WRITES and self.step + 1 < len(self.ladder):
            self._switch(self.step + 1, mbps, chain, backlog_rows, next_row)
        elif self.caught_up >= CAUGHT_UP_WRITES and self.step > 0:
            self._switch(self.step - 1, mbps, chain, backlog_rows, next_row)

    def _switch(self, step: int, mbps: float, chain: float, backlog_rows: int, next_row: int) -> None:
        assert self.ladder is not None
        self.step, self.behind, self.caught_up = step, 0, 0
        self.sink.switch_codec(self.ladder[step])
        self.switches.append({"row": next_row, "codec": self.ladder[step].spec, "write_MBps": round(mbps / 1e6, 1),
                              "chain_MBps": round(chain / 1e6, 1), "backlog_rows": backlog_rows})


@dataclasses.dataclass
class StreamResult:
    """What one streamed scan did (the CLI's JSON line holds these fields)."""

    frames: int                   # frames written to the file
    dropped: int                  # frames acquired but not written (only after a write fault)
    chunks_published: int         # block files published to the stage
    seconds: float                # first row's arrival to the file closed
    sustained_MBps: float         # raw frame MB (1e6 B) through the whole chain per second
    latency_ms_p50: float         # frame arrival -> its value in the map
    latency_ms_p95: float
    scalar_map: str               # the (H, W[, k]) .npy map
    complete: bool
    stopped: typing.Optional[str]   # why the scan ended early, else None
    rows: int                     # rows acquired
    spilled_frames: int           # frames that waited on disk (raw) because the queue was full
    peak_queue_MB: float
    resolved: dict[str, typing.Any]
    codec_switches: list[dict[str, typing.Any]]   # auto's steps to a lighter codec and back: row, codec, ...

    def summary(self) -> dict[str, typing.Any]:
        return dataclasses.asdict(self)


def map_path(out: str) -> str:
    """Where the scalar map of ``out`` (FILE.h5) goes: FILE.map.npy."""
    return os.path.splitext(out)[0] + ".map.npy"


def _block_rows(sink: emd.ArraySink, width: int) -> int:
    """Rows per published block: the rows of one EMD chunk (1 when a chunk is part of a row)."""
    return max(1, int(sink.r)) if int(sink.c) >= width else 1


def _arm(spec: typing.Any, kind: str, dtype: typing.Optional[np.dtype]) -> Reducer:
    """A reducer on a tiny signal that has chosen its backend and run its kernels once (the first
    device look-up and JIT compile take seconds; a scan's first rows should not wait for them): for
    ``dtype``, or, not knowing the frames' dtype yet, for float32 and uint16 (counting detectors;
    a first uint16 row cost ~0.5 s of compiling inside the scan)."""
    shape = (8,) if KINDS[kind] == "spectrum" else (4, 4)
    energy = np.arange(8.0) if KINDS[kind] == "spectrum" else None
    armed = Reducer(spec, signal=Signal(KINDS[kind], shape, energy), dtype=dtype)
    kernel_dtypes: list[np.dtype[typing.Any]] = [np.dtype(np.float32), np.dtype(np.uint16)] if dtype is None \
        else [np.dtype(dtype)]
    for kernel_dtype in kernel_dtypes:
        armed.reduce_chunk(np.ones((2,) + shape, kernel_dtype))
    return armed


class _Store:
    """The writing half of the chain, on its own threads: rows (already in the map) go to FILE.h5 on
    one, and a block at a time to the stage on another (``emedge-publish``: block files and manifest
    are fsync'ed there, so the disk's flush latency overlaps the next rows' compression; blocks that
    queue up while it waits are listed by one manifest rewrite). A full or failing stage stops
    acquisition (``stop``); a failing FILE.h5 too, and the rows it could not take are counted in
    ``dropped``."""

    def __init__(self, out: str, scan: tuple[int, int], first: np.ndarray, energy: typing.Any,
                 mrad: typing.Optional[float], kind: str, codec: str, block_rows: typing.Optional[int],
                 stage: typing.Optional[str], state: dict[str, typing.Any], queue: SpillQueue,
                 stop: threading.Event, acquired: typing.Callable[[], int], adapt: bool) -> None:
        h, w = scan
        sig = tuple(int(s) for s in first.shape[1:])
        dims: list[typing.Any] = [("y", "pixels", 0.0, 1.0), ("x", "pixels", 0.0, 1.0)]
        if energy is not None:
            dims.append(emd.Axis("energy", "eV", np.asarray(energy, np.float64)))
        self.writer = emd.StreamWriter(out, "data", sig, first.dtype, (h, w), codec,
                                       chunk_frames=None if block_rows is None else w, dims=dims,
                                       metadata={"instrument": state})
        self.block_rows = int(block_rows) if block_rows else _block_rows(self.writer.sink, w)
        self.pace = _Pace(self.writer.sink) if adapt and compress.is_auto(codec) else None
        self.acquired = acquired
        self.publisher: typing.Optional[Publisher] = None
        self.stage, self.h, self.w, self.queue, self.stop = stage, h, w, queue, stop
        if stage:
            try:
                self.publisher = Publisher(stage, {"kind": kind, "scan": [h, w], "frame_shape": list(sig),
                                                   "dtype": str(first.dtype), "energy_eV": energy,
                                                   "mrad_per_px": mrad, "block_rows": self.block_rows})
            except BaseException:
                self.abort()
                raise
        self.pending: list[np.ndarray] = []
        self.chunks: list[tuple[bytes, int, int]] = []      # FILE.h5's encoded chunks of the pending rows
        if self.publisher is not None:
            self.writer.sink.on_chunk = lambda payload, first, k: self.chunks.append((payload, first, k))
        self.block_start = self.published = self.done = self.raw_bytes = self.dropped = 0
        self.stopped: typing.Optional[str] = None
        self.blocks: Queue[typing.Optional[tuple[int, int, typing.Any, typing.Any]]] = Queue()
        self.publishing = threading.Thread(target=self._publish_loop, name="emedge-publish", daemon=True)
        self.publishing.start()
        self.thread = threading.Thread(target=self._run, name="emedge-store", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        failed = False
        last: typing.Optional[float] = None          # when the previous write ended
        while rows := self.queue.get_many(BATCH_BYTES):
            loaded = [row.load() for row in rows]
            if failed:                     # FILE.h5 failed: what still comes is dropped, and counted
                self.dropped += sum(len(f) for f in loaded)
                continue
            try:                           # rows that queued up go in at once: their chunks encode side by side
                t0 = time.perf_counter()
                self.writer.append(loaded[0] if len(loaded) == 1 else np.concatenate(loaded))
                ended = time.perf_counter()
                seconds, interval, last = ended - t0, ended - (last or t0), ended
            except EmedgeError as e:       # the file itself failed (its disk full): keep what it holds
                self.stopped, failed = str(e), True
                self.stop.set()
                self.dropped += sum(len(f) for f in loaded)
                continue
            for row, frames in zip(rows, loaded, strict=True):
                self.done, self.raw_bytes = row.index + 1, self.raw_bytes + frames.nbytes
                if self.publisher is not None:
                    self.pending.append(frames)
                    if len(self.pending) == self.block_rows or self.done == self.h:
                        self._publish()
            if self.pace is not None:
                self.pace.after_write(sum(f.nbytes for f in loaded), seconds, interval, self.acquired() - self.done,
                                      loaded[0].nbytes, self.done)

    def _publish(self) -> None:
        """Hand the pending rows to the publishing thread as one block: the chunks FILE.h5 got for
        them, or (when they are not exactly its chunks) the frames themselves."""
        end = (self.block_start + len(self.pending)) * self.w
        mine, self.chunks = [c for c in self.chunks if c[1] < end], [c for c in self.chunks if c[1] >= end]
        h5 = self._plain_chunks(mine)
        what = mine if h5 is not None else np.stack(self.pending)
        self.blocks.put((self.block_start, len(self.pending), what, h5))
        self.block_start, self.pending = self.done, []

    def _publish_loop(self) -> None:
        """Publish the queued blocks in order; the manifest is rewritten once the queue is empty (one
        rewrite lists every block published back to back). The first failure stops acquisition."""
        while (job := self.blocks.get()) is not None:
            if self.publisher is None:          # the stage failed: what still comes is not published
                continue
            start, rows, what, h5 = job
            last = self.blocks.empty()
            try:
                if h5 is not None:                 # the bytes FILE.h5 got: compressed once
                    self.publisher.publish_chunks(start, rows, what, h5, commit=last)
                else:
                    self.publisher.publish(start, what, commit=last)
                self.published += 1
            except (OSError, EmedgeError) as e:
                err = os_error(e) if isinstance(e, OSError) else str(e)
                self.stopped = f"stage {self.stage}: {err}; acquisition stopped after {start} of {self.h} rows"
                self.stop.set()
                self.publisher = None
        if self.publisher is not None:
            try:
                self.publisher.commit()
            except OSError as e:
                self.stopped = f"stage {self.stage}: {os_error(e)}"
                self.publisher = None

    def _plain_chunks(self, chunks: list[tuple[bytes, int, int]]) -> typing.Optional[dict[str, typing.Any]]:
        """The block's data set layout when the pending rows are exactly the whole ``chunks`` FILE.h5
        wrote with a codec its HDF5 filter alone decodes, else None (then the block is compressed on
        its own)."""
        sink, w = self.writer.sink, self.w
        codec = sink.codec
        if codec is None or isinstance(codec, SparseCodec) or codec.transform is not None or not chunks:
            return None
        if chunks[0][1] != self.block_start * w or sum(k for _, _, k in chunks) != len(self.pending) * w:
            return None
        if len(self.pending) < sink.r:           # a short last block: its data set would be smaller than a chunk
            return None
        return {"dtype": codec.stored_dtype(sink.dtype), "chunks": (sink.r, sink.c) + sink.frame_shape,
                "filter": codec.h5_filter(), "frame_shape": sink.frame_shape}

    def finish(self) -> None:
        """Wait for the rows queued so far; publish a stopped scan's last, short block; wait until
        every block is published and listed."""
        self.queue.close()
        self.thread.join()
        if self.publisher is not None and self.pending:
            self._publish()
        self.blocks.put(None)
        self.publishing.join()

    def abort(self) -> None:
        """Close FILE.h5 keeping what was flushed (after an error elsewhere)."""
        self.queue.close()
        if getattr(self, "thread", None) is not None:
            self.thread.join()
        self.publisher, self.pending = None, []
        if getattr(self, "publishing", None) is not None:
            self.blocks.put(None)
            self.publishing.join()
        self.writer.__exit__(EmedgeError, None, None)


def stream(instrument: Instrument, kind: str, scan: tuple[int, int], out: str, stage: typing.Optional[str] = None,
           scalarizer: typing.Any = None, codec: str = "auto", dtype: typing.Any = None,
           queue_bytes: int = QUEUE_BYTES, stop: typing.Optional[threading.Event] = None,
           block_rows: typing.Optional[int] = None, adapt_codec: bool = True,
           on_row: typing.Optional[typing.Callable[[int, np.ndarray], None]] = None) -> StreamResult:
    """Acquire the (H, W) ``scan`` from ``instrument`` row by row into ``out`` (EMD) and ``stage``.

    kind: "si" (spectra) or "4d" (diffraction patterns); scalarizer: a spec (default per kind);
    codec: of ``out`` (block files use Blosc2 LZ4); dtype: store frames as this dtype (e.g. uint16
    counts; values must fit), default theirs; queue_bytes: memory for waiting rows before raw spill;
    stop: set it to end the scan after the current row; block_rows: scan rows per published block,
    the file then chunked by whole rows (default: the rows of one of the writer's ~4 MiB / ~1 MiB chunks);
    adapt_codec: with ``codec`` auto, step to a lighter Blosc2 setting while the chain falls behind and
    back when it catches up (:class:`_Pace`; recorded in ``codec_switches``); False keeps auto's first choice;
    on_row: called as ``on_row(row, values)`` with the (H, W, k) map each time a row's values are in it
    (on the chain's thread, never the instrument's or a UI thread: e.g. to refresh a live map in Swift).
    """
    if block_rows is not None and int(block_rows) < 1:
        raise EmedgeError("--block-rows must be >= 1")
    if kind not in KINDS:
        raise EmedgeError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    h, w = (int(v) for v in scan)
    if h < 1 or w < 1:
        raise EmedgeError(f"--scan must be HxW with H, W >= 1, not {h}x{w}")
    synchronized = getattr(instrument, "scan_rows", None)
    instrument_cancel = getattr(instrument, "cancel", lambda: None)
    survey = instrument.survey().shape
    if synchronized is None and (h > survey[0] or w > survey[1]):
        raise EmedgeError(f"--scan {h}x{w} is larger than the instrument's {survey[0]}x{survey[1]} scan area")
    if getattr(instrument, "signal_kind", KINDS[kind]) != KINDS[kind]:
        raise EmedgeError(f"the instrument gives {instrument.signal_kind} frames; use --kind "
                          f"{'si' if instrument.signal_kind == 'spectrum' else '4d'}")
    spec = from_spec(scalarizer or DEFAULT_SCALARIZER[kind])
    if spec.signal_kind != KINDS[kind]:
        raise EmedgeError(f"--scalarizer {spec.name} reduces {spec.signal_kind} frames; --kind {kind} gives "
                          f"{KINDS[kind]} frames")
    as_dtype = None if dtype is None else np.dtype(dtype)
    stop = stop or threading.Event()
    spill_dir = out + ".spill"
    q = SpillQueue(queue_bytes, spill_dir)
    calib: dict[str, typing.Any] = {}
    failure: list[BaseException] = []
    acquired = [0]

    def deliver(r: int, got: Frames) -> None:
        arrived = time.perf_counter()
        data = np.asarray(got.data)
        if as_dtype is not None and data.dtype != as_dtype:
            if as_dtype.kind in "ui" and len(data) and data.max() > np.iinfo(as_dtype).max:
                raise EmedgeError(f"frame values up to {data.max():g} do not fit --dtype {as_dtype}")
            data = data.astype(as_dtype)
        if not calib:
            calib.update(energy_eV=got.energy_eV, mrad_per_px=got.mrad_per_px)
        q.put(Row(r, data, arrived))
        acquired[0] = r + 1

    def acquire() -> None:
        try:
            if synchronized is not None:        # the instrument scans itself (Swift: grab_synchronized)
                watch = threading.Thread(target=lambda: stop.wait() or instrument_cancel(), daemon=True)
                watch.start()

                def on_row(r: int, got: Frames) -> None:
                    if not stop.is_set():
                        deliver(r, got)
                synchronized((h, w), on_row)
            else:
                for r in range(h):
                    if stop.is_set():
                        break
                    deliver(r, instrument.measure(np.stack([np.full(w, r), np.arange(w)], axis=1)))
        except BaseException as e:         # the instrument stopped: the consumer closes a partial file
            failure.append(e)
        finally:
            q.close()

    armed = _arm(spec, kind, as_dtype)      # backend chosen and kernels compiled before the first frame
    producer = threading.Thread(target=acquire, name="emedge-acquire", daemon=True)
    store: typing.Optional[_Store] = None
    reducer: typing.Optional[Reducer] = None
    values = reason = None
    latency: list[float] = []
    t0 = time.perf_counter()
    first_arrival: typing.Optional[float] = None
    producer.start()
    try:
        # one row at a time until the reducer is prepared (on the first row with good frames, as the
        # follower does); then the rows that queued up meanwhile are reduced in one call (fewer, larger
        # calls: +30 % for eels_peak_energy on NumPy at 4 rows) and each goes on to the store
        while rows := q.get_many(BATCH_BYTES if reducer is not None and reducer.prepared else 0):
            loaded = [row.load() for row in rows]
            if first_arrival is None:
                first_arrival = rows[0].arrived
            if store is None:
                first = loaded[0]
                sig = tuple(int(s) for s in first.shape[1:])
                energy = calib.get("energy_eV")
                signal = Signal(KINDS[kind], sig, None if energy is None else np.asarray(energy, np.float64),
                                calib.get("mrad_per_px"))
                reducer = Reducer(spec, signal=signal, backend=armed.backend, dtype=first.dtype)
                values = np.full((h, w, reducer.components), np.nan)
                reason = np.zeros((h, w), np.uint8)
                store = _Store(out, (h, w), first, energy, calib.get("mrad_per_px"), kind, codec, block_rows, stage,
                               instrument.state(), SpillQueue(queue_bytes, spill_dir + "2"), stop,
                               lambda: acquired[0], adapt_codec)
            assert reducer is not None and values is not None and reason is not None
            v, why = reducer.feed(loaded[0] if len(loaded) == 1 else np.concatenate(loaded))
            at, done = 0, time.perf_counter()
            for row, frames in zip(rows, loaded, strict=True):      # the map fills row by row, as on_row sees it
                values[row.index], reason[row.index] = v[at:at + len(frames)], why[at:at + len(frames)]
                at += len(frames)
                latency.append(done - row.arrived)
                if on_row is not None:
                    on_row(row.index, values)
                store.queue.put(Row(row.index, frames, row.arrived))
    except BaseException:                  # a bad scalarizer setting, a bug: no half-closed file left open
        if store is not None:
            store.abort()
        raise
    finally:
        stop.set()
        producer.join()
        dropped = q.discard()              # rows that came after a write fault (none otherwise)
        if store is not None:
            store.finish()
            dropped += store.dropped
        for d in (spill_dir, spill_dir + "2"):
            if os.path.isdir(d):
                shutil.rmtree(d, ignore_errors=True)
    if store is None or reducer is None or values is None or reason is None:
        why_none = f"instrument stopped ({type(failure[0]).__name__}: {failure[0]})" if failure else "no row"
        raise EmedgeError(f"no frame arrived: {why_none}")
    writer, publisher, done, stopped = store.writer, store.publisher, store.done, store.stopped
    published, raw_bytes = store.published, store.raw_bytes
    if failure and stopped is None:
        cause = failure[0]
        stopped = f"instrument stopped after {acquired[0]} of {h} rows ({type(cause).__name__}: {cause})"
    if done < h and stopped is None:
        stopped = f"stopped after {done} of {h} rows"
    complete = done == h and stopped is None
    k = values.shape[2]
    smap: np.ndarray = values[..., 0] if k == 1 else values
    if complete and reducer.scalarizer.map_level:
        smap = reducer.finish(smap, reason)
    resolved = reducer.resolved
    switches = store.pace.switches if store.pace is not None else []
    how_far = {"rows_acquired": done, "frames_acquired": done * w, "complete": complete, "stopped": stopped,
               "scalarizer": reducer.scalarizer.params(),
               "resolved": resolved, "codec_switches": switches}
    try:
        if switches:                   # the data set's own record: its emedge_codec is the first chunks' codec
            writer.sink.group.attrs["emedge_codec_switches"] = json.dumps(switches)
        writer.write_array("scalar_map", smap, metadata={"stream": how_far})
        writer.write_array("scalar_reason", reason)
    except EmedgeError as e:
        stopped = stopped or str(e)
    except OSError as e:
        stopped = stopped or f"{out}: {os_error(e)}"
    frames_written = writer.sink.frames_written
    try:
        writer.close()
    except EmedgeError:
        if complete:
            raise
    frames_written = max(frames_written, writer.sink.frames_written)
    if publisher is not None:
        try:
            publisher.end(complete, stopped)
        except OSError as e:
            stopped = f"{stopped}; stage {stage}: {os_error(e)}"
    path = map_path(out)
    np.save(path, smap)
    seconds = time.perf_counter() - (first_arrival or t0)
    lat = np.asarray(latency or [np.nan]) * 1e3
    return StreamResult(frames=int(frames_written), dropped=int(dropped + done * w - frames_written),
                        chunks_published=published, seconds=seconds,
                        sustained_MBps=raw_bytes / 1e6 / seconds if seconds > 0 else 0.0,
                        latency_ms_p50=float(np.percentile(lat, 50)), latency_ms_p95=float(np.percentile(lat, 95)),
                        scalar_map=path, complete=complete, stopped=stopped, rows=done,
                        spilled_frames=q.spilled_frames, peak_queue_MB=q.peak_bytes / 1e6, resolved=resolved,
                        codec_switches=switches)
