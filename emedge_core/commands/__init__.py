"""Sub-commands of the ``emedge`` CLI; each module has ``register(subparsers)``."""

from __future__ import annotations

import typing

import numpy as np


def saturated_hint(saturation: typing.Optional[float], dtype: typing.Any, bits: typing.Optional[int] = None) -> str:
    """The stderr hint for frames failed as saturated: the level the reduction used (the scalarizer's
    ``saturation``, else the integer ``dtype``'s maximum), where it came from (a ``bits``-bit detector's
    full count, the dtype, or the scalarizer), and the option that keeps them. "" for float frames."""
    from emedge_core.scalarize import saturation_level

    level = saturation_level(saturation, dtype)
    if level is None:
        return ""
    if saturation is None:
        why = f"the {np.dtype(dtype)} maximum"
    elif bits and float(saturation) == 2 ** bits - 1:
        why = f"{bits}-bit detector"
    else:
        why = "the scalarizer's saturation"
    return (f"; frames reaching {level:g} counts ({why}) count as saturated: set \"saturation\" above it in "
            "--scalarizer to keep them")
