"""Stream while acquiring: instrument -> scalarize + compress -> stage directory -> follower -> results.

- :mod:`.spill` - the bounded queue with raw spill (never blocks acquisition, never drops);
- :mod:`.stage` - closed block files and the manifest, published atomically (write, fsync, rename);
- :mod:`.acquire` - :func:`stream`, the acquisition chain behind ``emedge stream``;
- :mod:`.follow` - :func:`follow`, the consumer behind ``emedge follow`` (resumable, optionally on Dask).
"""
from __future__ import annotations

from emedge_core.stream.acquire import StreamResult, stream
from emedge_core.stream.follow import FollowResult, follow

__all__ = ["FollowResult", "StreamResult", "follow", "stream"]
