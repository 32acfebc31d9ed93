"""The consumer: reduces the blocks of a stage directory as they appear (``emedge follow``).

It reads the manifest (:mod:`~emedge_core.stream.stage`), reduces every block it has not done yet
with one scalarizer, and commits the results after each block by replacing RESULT.h5 atomically
(write, fsync, rename). RESULT.h5 is its own progress record: the arrays ``values`` (H, W, k) and
``reason`` (H, W) and, in the metadata of ``values``, ``follow.blocks_done`` - so a consumer killed
at any moment (kill -9) and restarted resumes from the last commit, and no block is counted twice or
lost. When the manifest says the scan ended and every block is done, it adds ``map`` (H, W[, k]),
after the scalarizer's map-level step.

The scalarizer is prepared the way the acquisition prepares it: on the good frames of the first
scan row that has any (rows in order from row 0), so the follower's numbers match the live map.
With ``scheduler`` (a Dask distributed address, or a ``distributed.Client``) the blocks - blocks of
scan rows matching the EMD chunks - are reduced on the cluster's workers, each worker preparing the
same reducer from the same sample; results are committed in row order, identical to one process.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
import typing

import numpy as np

from emedge_core import EmedgeError, emd
from emedge_core.scalarize import Reducer, Signal, from_spec
from emedge_core.scalarize.reducer import good_frames
from emedge_core.stream.stage import read_block, read_manifest, replace_atomically

KIND_SIGNAL = {"si": "spectrum", "4d": "diffraction"}


@dataclasses.dataclass
class FollowResult:
    """What one run of the follower did."""

    out: str
    blocks_processed: int        # blocks reduced and committed by this run
    blocks_done: int             # blocks in RESULT.h5 (this and earlier runs)
    frames: int                  # frames in RESULT.h5
    complete: bool               # the scan ended and every block is in RESULT.h5
    seconds: float
    scheduler: typing.Optional[str]
    resolved: dict[str, typing.Any]

    def summary(self) -> dict[str, typing.Any]:
        return dataclasses.asdict(self)


def _spec_dict(scalarizer: typing.Any) -> dict[str, typing.Any]:
    """The spec as a dict ``{"name": ..., **params}`` (what from_spec builds the same scalarizer from)."""
    if isinstance(scalarizer, dict):
        return dict(scalarizer)
    if isinstance(scalarizer, str):
        text = scalarizer.strip()
        return typing.cast(dict[str, typing.Any], json.loads(text)) if text.startswith("{") else {"name": text}
    raise EmedgeError("--scalarizer must be a name or a JSON object (not a Scalarizer object) to follow a stage")


def _signal(manifest: dict[str, typing.Any]) -> Signal:
    energy = manifest.get("energy_eV")
    return Signal(KIND_SIGNAL[manifest["kind"]], tuple(manifest["frame_shape"]),
                  None if energy is None else np.asarray(energy, np.float64), manifest.get("mrad_per_px"))


@functools.lru_cache(maxsize=4)
def _prepared(spec_json: str, signal_json: str, sample_bytes: bytes, sample_shape: tuple[int, ...],
              backend: str) -> Reducer:
    """A reducer prepared on ``sample`` (cached per process: every Dask task of one scan reuses it)."""
    s = json.loads(signal_json)
    signal = Signal(s["kind"], tuple(s["shape"]), None if s["energy_eV"] is None else np.asarray(s["energy_eV"]),
                    s["mrad_per_px"])
    reducer = Reducer(json.loads(spec_json), signal=signal, backend=backend)
    if sample_shape[0]:
        reducer.prepare(np.frombuffer(sample_bytes, np.float64).reshape(sample_shape))
    return reducer


def reduce_block(directory: str, block: dict[str, typing.Any], spec_json: str, signal_json: str,
                 sample: np.ndarray, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """Reduce one published block: ((rows, W, k) float64 values, (rows, W) uint8 reasons). A task on Dask."""
    reducer = _prepared(spec_json, signal_json, np.ascontiguousarray(sample, np.float64).tobytes(), sample.shape,
                        backend)
    frames = read_block(directory, block)
    rows, w = frames.shape[:2]
    values, reason = reducer.reduce_chunk(frames.reshape((rows * w,) + frames.shape[2:]))
    return values.reshape(rows, w, -1), reason.reshape(rows, w)


def _sample(directory: str, blocks: list[dict[str, typing.Any]], signal: Signal) -> typing.Optional[np.ndarray]:
    """The good frames of the first row (from row 0, in order) that has any - what the live reducer
    prepared on - or None when the blocks published so far have none."""
    for block in sorted(blocks, key=lambda b: b["row_start"]):
        frames = read_block(directory, block)
        for row in frames:
            good = good_frames(row, signal)
            if len(good):
                return good
    return None


def _load(out: str) -> typing.Optional[tuple[np.ndarray, np.ndarray, dict[str, typing.Any]]]:
    if not os.path.exists(out):
        return None
    arrays = emd.read(out)
    return np.asarray(arrays["values"]), np.asarray(arrays["reason"]), emd.metadata(out, "values")["follow"]


def _commit(out: str, arrays: dict[str, np.ndarray], state: dict[str, typing.Any]) -> None:
    tmp = out + ".tmp"
    emd.write(tmp, arrays, codec="blosc2", metadata={"values": {"follow": state}})
    replace_atomically(tmp, out)


def follow(directory: str, scalarizer: typing.Any, out: str, until_complete: bool = False,
           scheduler: typing.Any = None, backend: str = "numpy", poll_s: float = 0.2,
           timeout_s: typing.Optional[float] = None) -> FollowResult:
    """Reduce the blocks of ``directory`` into ``out`` (RESULT.h5), resuming from ``out``.

    until_complete: wait for new blocks until the manifest says the scan ended (else one pass over
    the blocks there now); scheduler: a Dask distributed address or Client to reduce on; backend:
    the scalarizer backend (numpy: the same numbers everywhere); poll_s: seconds between looks at the
    manifest; timeout_s: give up waiting after this long (None: wait as long as the scan runs).
    """
    spec = from_spec(scalarizer)
    spec_json = json.dumps(_spec_dict(scalarizer), sort_keys=True)
    t0 = time.perf_counter()
    client, address, owned = _client(scheduler)
    state: dict[str, typing.Any] = {}
    values = reason = None
    sample: typing.Optional[np.ndarray] = None
    processed = 0
    try:
        previous = _load(out)
        if previous is not None:
            values, reason, state = previous
            if state.get("scalarizer") != json.loads(spec_json):
                raise EmedgeError(f"{out} holds results of another scalarizer ({state.get('scalarizer')}); "
                                  "give a new --out or the same --scalarizer")
        while True:
            manifest = read_manifest(directory)
            if manifest is None:
                if not until_complete:
                    raise EmedgeError(f"{directory} holds no manifest.json (no scan published there yet)")
            else:
                signal = _signal(manifest)
                if spec.signal_kind != signal.kind:
                    raise EmedgeError(f"--scalarizer {spec.name} reduces {spec.signal_kind} frames; the scan in "
                                      f"{directory} has {signal.kind} frames")
                h, w = manifest["scan"]
                if values is None or reason is None:
                    k = len(spec.frame_components or spec.components)
                    values, reason = np.full((h, w, k), np.nan), np.zeros((h, w), np.uint8)
                    state = {"scalarizer": json.loads(spec_json), "blocks_done": [], "frames": 0,
                             "scan": [h, w], "complete": False}
                done = set(state["blocks_done"])
                new = [b for b in manifest["blocks"] if b["file"] not in done]
                if new and sample is None:
                    sample = _sample(directory, manifest["blocks"], signal)
                    if sample is None:
                        sample = np.zeros((0,) + signal.shape)
                if new:
                    assert sample is not None
                    signal_json = json.dumps({"kind": signal.kind, "shape": list(signal.shape),
                                              "energy_eV": manifest.get("energy_eV"),
                                              "mrad_per_px": manifest.get("mrad_per_px")})
                    for block, (v, r) in zip(new, _reduce(client, directory, new, spec_json, signal_json, sample,
                                                          backend), strict=True):
                        values[block["row_start"]:block["row_stop"]] = v
                        reason[block["row_start"]:block["row_stop"]] = r
                        state["blocks_done"].append(block["file"])
                        state["frames"] += int(block["frames"])
                        _commit(out, {"values": values, "reason": reason}, state)
                        processed += 1
                    _resolve(state, sample, spec_json, signal_json, backend)
                    continue
                if manifest["ended"]:
                    if len(state["blocks_done"]) == len(manifest["blocks"]) and not state["complete"]:
                        state["complete"] = True
                        arrays = {"values": values, "reason": reason,
                                  "map": _finish(spec_json, signal, sample, values, reason, backend)}
                        _commit(out, arrays, state)
                    break
            if not until_complete:
                break
            if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                raise EmedgeError(f"no end of the scan in {directory} after {timeout_s:g} s (--timeout)")
            time.sleep(poll_s)
    finally:
        if owned:
            client.close()
    return FollowResult(out=out, blocks_processed=processed, blocks_done=len(state.get("blocks_done", [])),
                        frames=int(state.get("frames", 0)), complete=bool(state.get("complete")),
                        seconds=time.perf_counter() - t0, scheduler=address, resolved=state.get("resolved", {}))


def _resolve(state: dict[str, typing.Any], sample: np.ndarray, spec_json: str, signal_json: str,
             backend: str) -> None:
    if len(sample) and "resolved" not in state:
        state["resolved"] = json.loads(json.dumps(_prepared(spec_json, signal_json, sample.tobytes(), sample.shape,
                                                            backend).resolved, default=emd.jsonable))


def _finish(spec_json: str, signal: Signal, sample: typing.Optional[np.ndarray], values: np.ndarray,
            reason: np.ndarray, backend: str) -> np.ndarray:
    """The whole map after the scalarizer's map-level step (DPC rotation, iCoM), (H, W) or (H, W, k)."""
    reducer = Reducer(json.loads(spec_json), signal=signal, backend=backend)
    if sample is not None and len(sample):
        reducer.prepare(sample)
    m = values[..., 0] if values.shape[2] == 1 else values
    return reducer.finish(m, reason) if reducer.scalarizer.map_level else m


def _client(scheduler: typing.Any) -> tuple[typing.Any, typing.Optional[str], bool]:
    """(the Dask client or None, its address, whether this function opened it)."""
    if scheduler is None:
        return None, None, False
    try:
        from distributed import Client
    except ImportError:
        raise EmedgeError("--scheduler needs dask distributed (pip install 'dask[distributed]')") from None
    if isinstance(scheduler, Client):
        return scheduler, str(getattr(scheduler.scheduler, "address", "")), False
    try:
        return Client(scheduler, timeout=30), str(scheduler), True
    except (OSError, TimeoutError) as e:
        raise EmedgeError(f"--scheduler {scheduler}: cannot connect ({e})") from None


def _reduce(client: typing.Any, directory: str, blocks: list[dict[str, typing.Any]], spec_json: str,
            signal_json: str, sample: np.ndarray,
            backend: str) -> typing.Iterator[tuple[np.ndarray, np.ndarray]]:
    """The results of ``blocks`` in order: here, or as Dask tasks (one per block) on ``client``."""
    if client is None:
        for block in blocks:
            yield reduce_block(directory, block, spec_json, signal_json, sample, backend)
        return
    shared = client.scatter(sample, broadcast=True)
    def key(b: dict[str, typing.Any]) -> str:
        return "emedge-follow-" + hashlib.sha1((directory + b["file"] + spec_json).encode()).hexdigest()

    futures = [client.submit(reduce_block, directory, b, spec_json, signal_json, shared, backend, key=key(b))
               for b in blocks]
    try:
        for f in futures:
            yield f.result()
    finally:
        client.cancel(futures)
