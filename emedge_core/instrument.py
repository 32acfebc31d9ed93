"""The instrument interface every source of frames implements.

An instrument offers three things, as small as nionswift-instrumentation's
STEM controller needs them:

- ``survey()`` -> :class:`Survey`, the HAADF image the steering works on;
- ``measure(positions)`` -> :class:`Frames`, one spectrum or diffraction pattern
  per survey pixel asked for;
- ``state()`` -> a JSON-able ``dict`` recorded as provenance.

Implementations: :mod:`emedge_core.twin` (digital twin), :mod:`emedge_core.replay`
(recorded files) and, in Swift, ``nionswift_plugin.emedge.swift_instrument``.
"""
from __future__ import annotations

import dataclasses
import typing

import numpy as np

SIGNAL_KINDS = ("spectrum", "diffraction")


@dataclasses.dataclass(frozen=True)
class Survey:
    """A survey image and its calibration.

    image: (H, W) float32, detector counts (HAADF).
    pixel_size_nm: edge length of one survey pixel in nm.
    origin_nm: (y, x) position of pixel (0, 0) in nm.
    """

    image: np.ndarray
    pixel_size_nm: float = 1.0
    origin_nm: tuple[float, float] = (0.0, 0.0)
    channel: str = "HAADF"

    @property
    def shape(self) -> tuple[int, int]:
        return typing.cast(tuple[int, int], tuple(self.image.shape))


@dataclasses.dataclass(frozen=True)
class Frames:
    """Frames measured at a list of positions.

    data: (n, E) spectra or (n, ky, kx) diffraction patterns, any real dtype.
    kind: ``"spectrum"`` or ``"diffraction"``.
    energy_eV: (E,) energy of each spectrum channel (spectra only).
    mrad_per_px: detector calibration (diffraction only; None when unknown).
    """

    data: np.ndarray
    kind: str
    energy_eV: typing.Optional[np.ndarray] = None
    mrad_per_px: typing.Optional[float] = None

    def __post_init__(self) -> None:
        if self.kind not in SIGNAL_KINDS:
            raise ValueError(f"frame kind must be one of {SIGNAL_KINDS}, not {self.kind!r}")
        want = 2 if self.kind == "spectrum" else 3
        if self.data.ndim != want:
            raise ValueError(f"{self.kind} frames must be {want}-D (n, ...), got shape {self.data.shape}")
        if self.kind == "spectrum":
            if self.energy_eV is None or self.energy_eV.shape != (self.data.shape[1],):
                raise ValueError("spectra need energy_eV with one value per channel")

    def __len__(self) -> int:
        return int(self.data.shape[0])


class Instrument(typing.Protocol):
    """What the experiment loop needs from a microscope, real or virtual."""

    #: "spectrum" (EELS) or "diffraction" (4D-STEM)
    signal_kind: str

    def survey(self) -> Survey:
        """Acquire (or load) the survey image."""
        ...

    def measure(self, positions: np.ndarray) -> Frames:
        """Measure at ``positions``: (n, 2) int survey-pixel (row, col)."""
        ...

    def state(self) -> dict[str, typing.Any]:
        """Instrument state for provenance (JSON-able)."""
        ...

    def available(self) -> typing.Optional[np.ndarray]:
        """(H, W) bool mask of positions that can be measured, or None for all."""
        ...


def check_positions(positions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return positions as an (n, 2) int array, raising ValueError when outside ``shape``."""
    pos = np.asarray(positions)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (n, 2) (row, col), got shape {pos.shape}")
    pos = pos.astype(np.int64)
    if len(pos) and (pos.min() < 0 or (pos[:, 0] >= shape[0]).any() or (pos[:, 1] >= shape[1]).any()):
        raise ValueError(f"positions outside the {shape[0]}x{shape[1]} survey")
    return pos
