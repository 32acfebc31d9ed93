"""Virtual detectors: summed counts of each pattern inside a disk or an annulus.

Radii are in ``units`` ("px" or "mrad", the latter through the signal's
``mrad_per_px``); "auto" radii come from the bright-field disk of the first chunk
(:func:`~emedge_core.scalarize.diffraction.bf_disk`). The mask is one weight row of
the shared pass, so a virtual image costs one read of the data.
"""
from __future__ import annotations

import typing

import numpy as np

from emedge_core.scalarize.base import Scalarizer, Signal, register
from emedge_core.scalarize.diffraction import Center, Geometry, _as_center, annulus

if typing.TYPE_CHECKING:
    from emedge_core.scalarize.backends import Backend, Chunk

Radius = typing.Union[None, str, float]


def _as_radius(value: Radius, what: str) -> Radius:
    if value is None or value == "auto":
        return value
    if isinstance(value, str) or not float(value) >= 0:
        raise ValueError(f'{what} must be >= 0 or "auto"')
    return float(value)


class _Annular(Geometry, Scalarizer):
    """Counts where inner <= |k - center| < outer. Subclasses set the defaults;
    "auto" means ``factor`` x the bright-field radius, None the detector's far corner."""

    signal_kind = "diffraction"
    unit = "counts"
    needs_frames = False
    #: multiples of the bright-field radius that "auto" inner / outer radii stand for
    auto_factor: typing.ClassVar[tuple[float, float]] = (1.0, 1.0)

    def __init__(self, inner: Radius = 0.0, outer: Radius = None, center: Center = None, units: str = "px",
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(saturation)
        if units not in ("px", "mrad"):
            raise ValueError('units must be "px" or "mrad"')
        self.inner = _as_radius(inner, "inner")
        self.outer = _as_radius(outer, "outer")
        self.center = _as_center(center)
        self.units = units

    def prepare(self, signal: Signal, sample: np.ndarray) -> np.ndarray:
        """One row: the annulus mask (1, ky*kx)."""
        super().prepare(signal, sample)
        need = "auto" in (self.inner, self.outer)
        cy, cx, r_bf = self._geometry(signal, sample, need_disk=need)
        far = float(np.hypot(max(cy, signal.shape[0] - 1 - cy), max(cx, signal.shape[1] - 1 - cx))) + 1.0
        radii = []
        for value, factor in zip((self.inner, self.outer), self.auto_factor, strict=True):
            if value == "auto":
                radii.append(factor * r_bf)
            elif value is None:
                radii.append(far)
            else:
                radii.append(typing.cast(float, self._px(typing.cast(float, value), signal)))
        if not radii[0] < radii[1]:
            raise ValueError(f"inner radius {radii[0]:.2f} px must be below outer {radii[1]:.2f} px")
        self._found |= {"center_px": [cy, cx], "inner_px": radii[0], "outer_px": radii[1]}
        return annulus(signal.shape, cy, cx, radii[0], radii[1]).reshape(1, -1)

    def process(self, chunk: "Chunk", signal: Signal, be: "Backend") -> typing.Any:
        return chunk.proj[0]


@register
class VirtualBF(_Annular):
    """Virtual bright field: counts inside ``outer`` (default "auto" = the bright-field disk)."""

    name = "virtual_bf"

    def __init__(self, outer: Radius = "auto", center: Center = None, units: str = "px",
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(0.0, outer, center, units, saturation)


@register
class VirtualADF(_Annular):
    """Virtual annular dark field: counts from ``inner`` (default "auto" = 1.2 x the bright-field
    radius) to ``outer`` (default: the whole detector)."""

    name = "virtual_adf"
    auto_factor = (1.2, 1.0)

    def __init__(self, inner: Radius = "auto", outer: Radius = None, center: Center = None, units: str = "px",
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(inner, outer, center, units, saturation)


@register
class VirtualAnnular(_Annular):
    """Counts in any annulus inner <= r < outer (px or mrad); "auto" = the bright-field radius."""

    name = "virtual_annular"
