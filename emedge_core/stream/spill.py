"""A bounded queue between acquisition and the writer that never blocks and never drops.

Rows of frames wait in memory up to ``max_bytes``; a row that does not fit is written raw to a
spill directory (``.npy``) and read back when its turn comes, so order is kept, the producer
(the instrument) is never blocked and no frame is lost. The counts say how much spilled.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import threading
import typing

import numpy as np


@dataclasses.dataclass
class Row:
    """One scan row as it arrived: index, (W, *sig) frames (or the .npy they spilled to), and
    ``arrived``, the ``time.perf_counter()`` when the instrument handed them over (s)."""

    index: int
    frames: typing.Optional[np.ndarray]
    arrived: float
    spilled: typing.Optional[str] = None

    def load(self) -> np.ndarray:
        """The frames, read back (and the spill file removed) when they spilled."""
        if self.frames is not None:
            return self.frames
        assert self.spilled is not None
        a = np.load(self.spilled)
        os.remove(self.spilled)
        return a


class SpillQueue:
    """FIFO of :class:`Row` holding at most ``max_bytes`` of frames in memory; the rest spills raw
    to ``spill_dir`` (created when first needed). ``put`` never blocks; ``get`` waits for a row and
    gives None once the queue is closed and empty."""

    def __init__(self, max_bytes: int, spill_dir: str) -> None:
        self.max_bytes, self.spill_dir = int(max_bytes), spill_dir
        self._items: collections.deque[Row] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.mem_bytes = self.peak_bytes = 0
        self.spilled_frames = self.spilled_bytes = 0

    def put(self, row: Row) -> None:
        assert row.frames is not None
        nbytes = row.frames.nbytes
        with self._cond:
            fits = self.mem_bytes + nbytes <= self.max_bytes or not self._items
        if not fits:                                  # raw spill, outside the lock (disk time)
            os.makedirs(self.spill_dir, exist_ok=True)
            path = os.path.join(self.spill_dir, f"row{row.index:07d}.npy")
            np.save(path, row.frames)
            self.spilled_frames += len(row.frames)
            self.spilled_bytes += nbytes
            row = dataclasses.replace(row, frames=None, spilled=path)
        with self._cond:
            if row.frames is not None:
                self.mem_bytes += nbytes
                self.peak_bytes = max(self.peak_bytes, self.mem_bytes)
            self._items.append(row)
            self._cond.notify()

    def get(self) -> typing.Optional[Row]:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None
            row = self._items.popleft()
            if row.frames is not None:
                self.mem_bytes -= row.frames.nbytes
            return row

    def get_many(self, max_bytes: int) -> list[Row]:
        """Wait for a row, then take with it the rows already queued behind it, in order, while their
        frames in memory add up to at most ``max_bytes`` (a spilled row ends the batch, read alone).
        Empty once the queue is closed and drained. A consumer that fell behind so gets its backlog
        in one piece (the writer then encodes its chunks side by side)."""
        first = self.get()
        if first is None:
            return []
        out, total = [first], 0 if first.frames is None else first.frames.nbytes
        with self._cond:
            while self._items and first.frames is not None:
                row = self._items[0]
                if row.frames is None or total + row.frames.nbytes > max_bytes:
                    break
                self._items.popleft()
                self.mem_bytes -= row.frames.nbytes
                total += row.frames.nbytes
                out.append(row)
        return out

    def close(self) -> None:
        """No more rows will come; ``get`` drains what is left, then gives None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self) -> int:
        """Drop what is still queued (after a fault), removing spill files; returns the frames dropped."""
        with self._cond:
            items, self._items = list(self._items), collections.deque()
            self.mem_bytes = 0
        n = 0
        for row in items:
            if row.spilled:
                n += int(np.load(row.spilled, mmap_mode="r").shape[0])
                os.remove(row.spilled)
            elif row.frames is not None:
                n += len(row.frames)
        return n
