"""4D-STEM reductions: one number (or vector) per diffraction pattern, in detector pixels."""
from __future__ import annotations

import typing


from emedge_core.instrument import Frames
from emedge_core.scalarize.base import Scalarizer, register


def centre_of_mass(data: typing.Any, xp: typing.Any,
                   center: typing.Optional[typing.Sequence[float]] = None) -> typing.Any:
    """(n, 2) centre of mass (row, col) of patterns ``data`` (n, ky, kx) relative to ``center``.

    ``center`` defaults to the geometric detector centre ((ky-1)/2, (kx-1)/2). One pass
    over the data: a GEMM against the row/col/one weights.
    """
    n, ky, kx = data.shape
    cy, cx = ((ky - 1) / 2, (kx - 1) / 2) if center is None else center
    rr = xp.arange(ky, dtype=xp.float32) - cy
    cc = xp.arange(kx, dtype=xp.float32) - cx
    w = xp.stack([xp.repeat(rr, kx), xp.tile(cc, ky), xp.ones(ky * kx, dtype=xp.float32)], axis=1)
    m = data.reshape(n, ky * kx) @ w
    total = m[:, 2]
    return m[:, :2] / total[:, None]


@register
class CoMMagnitude(Scalarizer):
    """Length (px) of the centre-of-mass shift of each pattern from ``center``."""

    name = "com_magnitude"
    signal_kind = "diffraction"
    unit = "px"

    def __init__(self, center: typing.Optional[typing.Sequence[float]] = None,
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(saturation)
        self.center = None if center is None else tuple(float(c) for c in center)

    def process(self, data: typing.Any, frames: Frames, xp: typing.Any) -> typing.Any:
        com = centre_of_mass(data, xp, self.center)
        return xp.sqrt((com ** 2).sum(axis=1))



