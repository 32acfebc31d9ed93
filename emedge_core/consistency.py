"""Metadata against the data: calibrations the instrument states that its own frames contradict.

The frames are a sensor too. An EELS energy axis whose zero-loss peak is not at 0 eV, or a
detector calibration whose bright-field disk does not span the stated convergence semi-angle,
means every number computed with that metadata is off. :func:`check` compares them once per
run (on the first good frames) and returns :class:`Finding` records, kept with the data as
provenance and shown to the user; it never changes the data.
"""
from __future__ import annotations

import dataclasses
import typing

import numpy as np

from emedge_core import EmedgeError
from emedge_core.instrument import Frames

#: the zero-loss peak may sit this far from 0 eV (or one channel, whichever is more) before it is reported
ZLP_TOLERANCE_EV = 0.5
#: a ZLP stands at least this many times the spectrum's median above it ...
ZLP_MIN_CONTRAST = 5.0
#: ... and this many times the channel-to-channel noise (sigma) above it ...
ZLP_MIN_SNR = 10.0
#: ... and is at most this wide at half maximum (eV; or five channels, whichever is more)
ZLP_MAX_WIDTH_EV = 10.0
#: relative disagreement between the bright-field disk and the stated convergence semi-angle that is reported
SEMIANGLE_TOLERANCE = 0.1


@dataclasses.dataclass(frozen=True)
class Finding:
    """One disagreement: ``key`` of the metadata, the value it ``stated``, the value the frames
    ``measured`` (same unit), and a sentence for the user."""

    key: str
    stated: float
    measured: float
    unit: str
    message: str

    def as_dict(self) -> dict[str, typing.Any]:
        return dataclasses.asdict(self)


def zlp_peak(total: np.ndarray, energy_eV: np.ndarray) -> typing.Optional[int]:
    """Channel of the zero-loss peak of a summed spectrum (E,), or None when there is no clear peak:
    the maximum must stand at least :data:`ZLP_MIN_CONTRAST` times the median above the median and
    :data:`ZLP_MIN_SNR` times the channel noise (a noise spike is no ZLP), away from both ends, and be
    narrow (its contiguous half-maximum width at most :data:`ZLP_MAX_WIDTH_EV`
    or five channels). A low-loss window without a ZLP, or a flat or edge-dominated spectrum, has none."""
    n = len(total)
    if n < 5 or not np.isfinite(total).all():
        return None
    i = int(np.argmax(total))
    base = float(np.median(total))
    height = float(total[i]) - base
    noise = 1.4826 * float(np.median(np.abs(np.diff(total)))) / np.sqrt(2.0)     # robust channel-to-channel sigma
    if not (2 <= i <= n - 3 and height > 0 and height >= ZLP_MIN_CONTRAST * abs(base)
            and height >= ZLP_MIN_SNR * noise):
        return None
    above = total > base + height / 2
    lo, hi = i, i
    while lo > 0 and above[lo - 1]:
        lo -= 1
    while hi < n - 1 and above[hi + 1]:
        hi += 1
    step = float(abs(energy_eV[1] - energy_eV[0]))
    return i if (hi - lo + 1) * step <= max(ZLP_MAX_WIDTH_EV, 5 * step) else None


def _zlp(frames: Frames) -> list[Finding]:
    """The zero-loss peak of the summed spectrum against 0 eV on the stated energy axis (only where
    the spectra hold a clear ZLP: :func:`zlp_peak`)."""
    e = typing.cast(np.ndarray, frames.energy_eV)
    if not (e[0] < 0 < e[-1]):
        return []                                   # a core-loss window: no ZLP to look at
    total = np.nansum(np.asarray(frames.data, np.float64), axis=0)
    i = zlp_peak(total, e)
    if i is None:
        return []                                   # no clear peak: nothing to compare with 0 eV
    lo, hi = max(i - 2, 0), min(i + 3, len(e))     # centroid of the peak's five channels
    w = total[lo:hi]
    measured = float((w * e[lo:hi]).sum() / w.sum())
    step = float(abs(e[1] - e[0])) if len(e) > 1 else 0.0
    if abs(measured) <= max(ZLP_TOLERANCE_EV, step):
        return []
    return [Finding("energy_offset_eV", 0.0, round(measured, 3), "eV",
                    f"the energy axis puts the zero-loss peak at {measured:+.2f} eV, not 0 eV: "
                    "energies measured with it are off by as much; recalibrate the spectrometer offset")]


def _semiangle(frames: Frames, state: dict[str, typing.Any]) -> list[Finding]:
    """The bright-field disk radius x the detector calibration against the stated semi-angle."""
    from emedge_core.scalarize.diffraction import bf_disk

    stated = state.get("convergence_semiangle_mrad")
    if stated is None or frames.mrad_per_px is None or not float(stated) > 0:
        return []
    data = np.asarray(frames.data, np.float64)
    good = np.isfinite(data).all(axis=(1, 2)) & (data.sum(axis=(1, 2)) > 0)
    if not good.any():
        return []
    try:
        _, _, radius_px = bf_disk(data[good].mean(axis=0))
    except EmedgeError:
        return []                                   # no disk to measure (a flat mean pattern)
    measured = radius_px * float(frames.mrad_per_px)
    if abs(measured - float(stated)) <= SEMIANGLE_TOLERANCE * float(stated):
        return []
    return [Finding("convergence_semiangle_mrad", float(stated), round(measured, 3), "mrad",
                    f"the bright-field disk spans {measured:.1f} mrad with the stated detector calibration "
                    f"({frames.mrad_per_px:.3g} mrad/px), but the state says a {float(stated):.1f} mrad "
                    "semi-angle: the calibration or the stated aperture is wrong")]


def check_energy_windows(scalarizer: typing.Any, energy_eV: typing.Optional[np.ndarray]) -> None:
    """Raise a one-line EmedgeError, before anything is measured, when one of the scalarizer's
    energy windows (eV) holds no channel of ``energy_eV`` (E,); the message names the parameter."""
    bands = dict(getattr(scalarizer, "_bands", dict)())
    if getattr(scalarizer, "zlp_eV", None) is not None:
        bands["zlp_eV"] = scalarizer.zlp_eV
    if energy_eV is None or not bands:
        return
    e = np.asarray(energy_eV, np.float64)
    lo, hi = float(np.nanmin(e)), float(np.nanmax(e))
    for name, (a, b) in bands.items():
        if not ((e >= a) & (e <= b)).any():
            raise EmedgeError(f"{scalarizer.name!r} window {name}={a:g}-{b:g} eV holds no channel of the spectra "
                              f"({lo:.1f}-{hi:.1f} eV); set {name} inside it in the scalarizer's parameters "
                              f"(--scalarizer '{{\"name\": \"{scalarizer.name}\", \"{name}\": [{lo:.0f}, {hi:.0f}]}}')")


def check(frames: Frames, state: dict[str, typing.Any]) -> list[Finding]:
    """Findings (possibly none) where ``state`` and the frames' calibration disagree with the frames."""
    if len(frames) == 0:
        return []
    if frames.kind == "spectrum":
        return _zlp(frames)
    return _semiangle(frames, state)
