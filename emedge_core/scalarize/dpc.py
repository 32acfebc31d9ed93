"""DPC and iCoM: the centre-of-mass field turned into scan coordinates and integrated.

The detector is rotated by ``rotation_deg`` (and maybe transposed) against the scan.
With the CoM c = (c_row, c_col) on the detector, the field in the scan frame is
F = R(theta) c, R(theta) = [[cos, -sin], [sin, cos]] acting on (row, col) vectors.
When the rotation is not given it is found as py4DSTEM does, by making F as
curl-free as possible - here in closed form: curl F = cos(theta) curl c + sin(theta) div c,
(fourth-order differences), so the theta minimising sum (curl F)^2 is the eigenvector of the 2x2 matrix of sums
of (curl c, div c) products with the smaller eigenvalue. The curl cannot tell theta
from theta + 180 deg; the found rotation lies in (-90, 90] deg. A transposed detector
(c_row and c_col swapped) is detected the same way, by the smaller residual curl.

iCoM integrates F over the scan in Fourier space, phi = F^-1[(k_r F_r + k_c F_c) / (i |k|^2)],
giving the potential up to a constant (set to mean zero), in px x scan px.
"""
from __future__ import annotations

import math
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.scalarize.base import Reason, register
from emedge_core.scalarize.diffraction import Center, _CoMBase

if typing.TYPE_CHECKING:
    from emedge_core.scalarize.backends import Backend, Chunk
    from emedge_core.scalarize.base import Signal


def derivative(f: np.ndarray, axis: int) -> np.ndarray:
    """Fourth-order central difference of ``f`` along ``axis`` (per scan px); NaN within 2 px of the edge.

    (8 (f[i+1] - f[i-1]) - (f[i+2] - f[i-2])) / 12: its error is O(k^4), so a field sampled
    at a few px per period still gives a near-zero curl when it is a gradient.
    """
    f = np.moveaxis(f, axis, 0)
    out = np.full(f.shape, np.nan)
    out[2:-2] = (8 * (f[3:-1] - f[1:-3]) - (f[4:] - f[:-4])) / 12
    return np.moveaxis(out, 0, axis)


def curl_div(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Curl (d F_col/d row - d F_row/d col) and divergence of an (H, W, 2) field (per scan px)."""
    d_row, d_col = derivative(field, 0), derivative(field, 1)
    return d_row[..., 1] - d_col[..., 0], d_row[..., 0] + d_col[..., 1]


def rotate(field: np.ndarray, rotation_deg: float, transpose: bool = False) -> np.ndarray:
    """(…, 2) detector (row, col) vectors -> scan frame: F = R(theta) c (c swapped first if ``transpose``)."""
    c = field[..., ::-1] if transpose else field
    t = math.radians(rotation_deg)
    cos, sin = math.cos(t), math.sin(t)
    return np.stack([cos * c[..., 0] - sin * c[..., 1], sin * c[..., 0] + cos * c[..., 1]], axis=-1)


def _best_rotation(field: np.ndarray) -> tuple[float, float]:
    """(theta deg in (-90, 90], residual = min mean curl^2 / mean(curl^2 + div^2)) for one orientation."""
    curl, div = curl_div(field)
    ok = np.isfinite(curl) & np.isfinite(div)
    a, b = curl[ok], div[ok]
    if a.size == 0:
        raise EmedgeError("no finite neighbourhood in the CoM map to find the scan rotation from")
    m = np.array([[a @ a, a @ b], [a @ b, b @ b]])
    w, v = np.linalg.eigh(m)
    theta = math.degrees(math.atan2(v[1, 0], v[0, 0]))
    theta = theta - 180.0 if theta > 90.0 else theta + 180.0 if theta <= -90.0 else theta
    return theta, float(w[0] / max(np.trace(m), 1e-300))


def find_rotation(com: np.ndarray, transpose: typing.Optional[bool] = None) -> tuple[float, bool]:
    """Scan-detector rotation (deg, in (-90, 90]) and transpose flag of a (H, W, 2) CoM map
    (NaN where unknown) that make the scan-frame field curl-free; ``transpose`` None = find it."""
    options = (False, True) if transpose is None else (bool(transpose),)
    fits = {t: _best_rotation(com[..., ::-1] if t else com) for t in options}
    best = min(fits, key=lambda t: fits[t][1])
    return fits[best][0], best


def integrate(field: np.ndarray) -> np.ndarray:
    """(H, W) potential whose gradient (d/d row, d/d col) is the (H, W, 2) ``field`` (periodic), mean zero."""
    h, w = field.shape[:2]
    kr = 2 * np.pi * np.fft.fftfreq(h)[:, None]
    kc = 2 * np.pi * np.fft.fftfreq(w)[None, :]
    k2 = kr ** 2 + kc ** 2
    k2[0, 0] = 1.0
    num = kr * np.fft.fft2(field[..., 0]) + kc * np.fft.fft2(field[..., 1])
    phi_hat = num / (1j * k2)
    phi_hat[0, 0] = 0.0
    return np.fft.ifft2(phi_hat).real


class _Field(_CoMBase):
    """CoM per frame, turned into the scan frame on the whole map."""

    frame_components = ("row", "col")

    def __init__(self, rotation_deg: typing.Optional[float] = None, transpose: typing.Optional[bool] = None,
                 center: Center = None, radius: typing.Optional[float] = None, units: str = "px",
                 saturation: typing.Optional[float] = None) -> None:
        super().__init__(center, radius, units, saturation)
        self.rotation_deg = None if rotation_deg is None else float(rotation_deg)
        self.transpose = None if transpose is None else bool(transpose)

    def process(self, chunk: "Chunk", signal: "Signal", be: "Backend") -> typing.Any:
        return self._com(chunk, be)

    def _scan_field(self, com: np.ndarray) -> np.ndarray:
        """(…, 2) scan-frame field, finding the rotation (and transpose) when not given."""
        rotation, transpose = self.rotation_deg, self.transpose
        if rotation is None:
            rotation, transpose = find_rotation(com, transpose)
        self._found |= {"rotation_deg": rotation, "transpose": bool(transpose)}
        return rotate(com, rotation, bool(transpose))


@register
class DPC(_Field):
    """CoM field in scan coordinates (row, col) px; the rotation is found from the map when not given."""

    name = "dpc"
    components = ("row", "col")

    @property
    def map_level(self) -> bool:  # type: ignore[override]
        return self.rotation_deg is None

    def finalize(self, values: np.ndarray, reason: np.ndarray) -> np.ndarray:
        return self._scan_field(values)


@register
class ICoM(_Field):
    """Integrated CoM: the projected potential (up to a constant) from the scan-frame CoM field."""

    name = "icom"
    unit = "px*scan_px"
    map_level = True

    def finalize(self, values: np.ndarray, reason: np.ndarray) -> np.ndarray:
        field = self._scan_field(values)
        ok = reason == Reason.OK
        if not ok.any():
            return np.full(reason.shape, np.nan)
        field = np.where(ok[..., None], field, 0.0)
        phi = integrate(field)
        phi -= phi[ok].mean()
        return np.where(ok, phi, np.nan)
