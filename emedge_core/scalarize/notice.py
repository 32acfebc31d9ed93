"""One warning per distinct message and process, for the backends and their kernels alike.

It lives apart from :mod:`emedge_core.scalarize.backends` so that the CUDA kernels module can
warn without importing the backends that import it.
"""
from __future__ import annotations

import warnings

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """One ``RuntimeWarning`` per distinct message and process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
