"""Drive an instrument from another computer: an authenticated HTTP server and its Python client.

``emedge serve`` (or the Swift *Remote control* panel) starts :class:`~emedge_core.remote.server.RemoteServer`;
:func:`connect` gives a :class:`~emedge_core.remote.client.Client` whose runs mirror Swift's console
API (``start``, ``status``, ``maps``, ``wait``). See docs/remote.md for the security model.
"""
from emedge_core.remote.client import Client, RemoteError, RemoteRun, SteerSession, connect

__all__ = ["Client", "RemoteError", "RemoteRun", "SteerSession", "connect"]
