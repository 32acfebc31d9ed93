"""The staging directory (the facility's NAS): closed block files and a manifest, both atomic.

Each block of scan rows becomes one small HDF5 file ``block_RRRRRR.h5`` (rows ``RRRRRR`` on), written
under a temporary name, fsync'ed, then renamed, so a reader never sees half a block. Its data set
``data`` (rows, W, *sig) holds the very chunk bytes FILE.h5 got (same chunks, same plain HDF5 filter:
compressed once, readable by h5py + hdf5plugin); a block that cannot be made so (an opt-in codec
that needs emedge's inverse, or the short last block of a stopped scan) is an EMD file written with
Blosc2 instead. :func:`read_block` reads both. The manifest
``manifest.json`` lists the published blocks and the scan's layout; it is rewritten the same way
after each block that is durable, or after several when they were written back to back
(``commit=False`` then :meth:`Publisher.commit`: one manifest rewrite for them), so a reader that
starts late or restarts resumes from it and never finds a listed block missing::

    {"version": 1, "kind": "si"|"4d", "scan": [H, W], "frame_shape": [...], "dtype": "uint16",
     "energy_eV": [...] | null, "mrad_per_px": float | null, "block_rows": r,
     "blocks": [{"file": "block_000000.h5", "row_start": 0, "row_stop": r, "frames": r*W, "bytes": n}],
     "frames": published frames, "ended": bool, "complete": bool, "stopped": null | "why"}
"""
from __future__ import annotations

import json
import os
import typing

import h5py
import numpy as np

from emedge_core import EmedgeError, emd

MANIFEST = "manifest.json"
VERSION = 1


def fsync_dir(path: str) -> None:
    """Make a rename in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def replace_atomically(tmp: str, final: str) -> None:
    """fsync ``tmp``, rename it to ``final``, fsync the directory."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))


def write_json(path: str, obj: typing.Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (write, fsync, rename)."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, default=emd.jsonable)
        replace_atomically(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class Publisher:
    """Publishes blocks of rows of one scan to ``directory`` (created if missing).

    layout: the manifest's fixed fields (kind, scan, frame_shape, dtype, energy_eV, mrad_per_px,
    block_rows); codec: how block files are compressed (a spec any plain reader undoes).
    """

    def __init__(self, directory: str, layout: dict[str, typing.Any], codec: str = "blosc2") -> None:
        self.directory, self.codec = directory, codec
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(os.path.join(directory, MANIFEST)):
            raise EmedgeError(f"--stage {directory} already holds a scan (manifest.json); give an empty directory")
        self.manifest: dict[str, typing.Any] = {"version": VERSION, **layout, "blocks": [], "frames": 0,
                                                "ended": False, "complete": False, "stopped": None}
        self._dirty = False
        write_json(os.path.join(directory, MANIFEST), self.manifest)

    def publish(self, row_start: int, frames: np.ndarray, commit: bool = True) -> None:
        """Publish rows ``row_start``.. as one block, compressed here; ``frames``: (rows, W, *sig).
        OSError (a full disk) leaves no partial file behind and the manifest as it was. ``commit``:
        rewrite the manifest now (else at the next :meth:`commit`)."""
        self._publish(row_start, len(frames), lambda tmp: emd.write(tmp, {"data": frames}, codec=self.codec), commit)

    def publish_chunks(self, row_start: int, rows: int, chunks: typing.Sequence[tuple[bytes, int, int]],
                       h5: dict[str, typing.Any], commit: bool = True) -> None:
        """Publish rows ``row_start``..``row_start + rows`` as one block made of already encoded chunks:
        ``chunks``: (payload, first flat frame, frames) as FILE.h5's writer wrote them; ``h5``: the data
        set's ``dtype``, ``chunks`` (chunk shape), ``filter`` (h5py filter arguments) and ``frame_shape``;
        ``commit`` as for :meth:`publish`."""
        w = int(self.manifest["scan"][1])
        sig = tuple(h5["frame_shape"])

        def write(tmp: str) -> None:
            with h5py.File(tmp, "w") as f:
                d = f.create_dataset("data", shape=(rows, w, *sig), dtype=h5["dtype"], chunks=tuple(h5["chunks"]),
                                     **h5["filter"])
                for payload, first, _ in chunks:
                    r, c = divmod(first, w)
                    d.id.write_direct_chunk((r - row_start, c) + (0,) * len(sig), payload)
                d.attrs["row_start"] = row_start

        self._publish(row_start, rows, write, commit)

    def _publish(self, row_start: int, rows: int, write: typing.Callable[[str], typing.Any], commit: bool) -> None:
        name = f"block_{row_start:06d}.h5"
        final = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        try:
            write(tmp)
            replace_atomically(tmp, final)
        except (OSError, EmedgeError):
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        frames = rows * int(self.manifest["scan"][1])
        self.manifest["blocks"].append({"file": name, "row_start": row_start, "row_stop": row_start + rows,
                                        "frames": frames, "bytes": os.path.getsize(final)})
        self.manifest["frames"] += frames
        self._dirty = True
        if commit:
            self.commit()

    def commit(self) -> None:
        """Rewrite the manifest (atomically) if blocks were published since it was last written."""
        if self._dirty:
            write_json(os.path.join(self.directory, MANIFEST), self.manifest)
            self._dirty = False

    def end(self, complete: bool, stopped: typing.Optional[str]) -> None:
        """Say in the manifest that the scan ended (``complete`` or ``stopped`` and why)."""
        self.manifest.update(ended=True, complete=bool(complete), stopped=stopped)
        write_json(os.path.join(self.directory, MANIFEST), self.manifest)
        self._dirty = False


def read_manifest(directory: str) -> typing.Optional[dict[str, typing.Any]]:
    """The manifest of ``directory``, or None when no scan has started there yet."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as f:
            m = typing.cast(dict[str, typing.Any], json.load(f))
    except FileNotFoundError:
        return None
    if m.get("version") != VERSION:
        raise EmedgeError(f"{path}: manifest version {m.get('version')!r}, this emedge reads {VERSION}")
    return m


def read_block(directory: str, block: dict[str, typing.Any]) -> np.ndarray:
    """The (rows, W, *sig) frames of one published block."""
    path = os.path.join(directory, block["file"])
    with h5py.File(path, "r") as f:
        if isinstance(f.get("data"), h5py.Dataset):        # the writer's own chunk bytes
            return np.asarray(f["data"][()])
    return np.asarray(emd.read(path, "data"))
