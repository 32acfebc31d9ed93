"""A seeded digital-twin specimen: a STEM instrument that needs no microscope.

The specimen is a hexagonal atomic lattice with two grains (a curved grain
boundary), a vacuum edge and planted point defects (heavy substitutions and
vacancies, each straining its neighbours and carrying a charge). The HAADF
survey shows atoms; the defects show in it only indirectly (a brighter or
missing column, a slightly displaced neighbourhood). What the loop measures
responds strongly to them:

- ``signal="spectrum"``: an EELS spectrum with a zero-loss peak, a plasmon whose
  energy rises near defects and the grain boundary (16 eV -> ~21 eV), a power-law
  background and an L-edge at 99 eV whose jump follows the local composition;
- ``signal="diffraction"``: a bright-field disk whose centre of mass follows the
  local projected field (gradient of the smoothed projected potential plus the
  long-range field of the charged defects).

Every frame carries Poisson noise at ``dose`` electrons. ``truth()`` gives the
noise-free frames and scalar maps for benchmarks and tests.
"""
from __future__ import annotations

import dataclasses
import typing

import numpy as np

from emedge_core.instrument import Frames, Survey, check_positions

if typing.TYPE_CHECKING:
    from emedge_core.scalarize import Scalarizer

ENERGY_OFFSET_EV = -10.0
ENERGY_STEP_EV = 0.5
EDGE_EV = 99.0
SURVEY_DOSE = 200.0     # electrons per survey pixel (HAADF)


@dataclasses.dataclass(frozen=True)
class TwinSpec:
    """Knobs of the twin.

    size: survey edge (px); spacing_px: atom spacing (px); defects: number of point
    defects; dose: electrons per measured frame; signal: "spectrum" or "diffraction";
    channels: EELS channels (0.5 eV each from -10 eV); detector: diffraction pattern edge (px);
    seed: everything random derives from it.
    drift_px_per_frame: (dy, dx) px the specimen moves under the scan per measured frame
    (a later ``survey()`` shows it moved; measurements land on the moved specimen).
    energy_offset_eV: error of the stated energy axis (it reads the true energies + this).
    stated_convergence_mrad: the semi-angle ``state()`` claims (None: the true 25 mrad).
    The last two make metadata that disagrees with the frames, for the consistency checks.
    """

    size: int = 128
    spacing_px: float = 6.0
    defects: int = 10
    dose: float = 2e4
    signal: str = "spectrum"
    channels: int = 512
    detector: int = 32
    seed: int = 0
    pixel_size_nm: float = 0.05
    drift_px_per_frame: tuple[float, float] = (0.0, 0.0)
    energy_offset_eV: float = 0.0
    stated_convergence_mrad: typing.Optional[float] = None

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError("twin size must be >= 16 px")
        if self.signal not in ("spectrum", "diffraction"):
            raise ValueError(f"twin signal must be 'spectrum' or 'diffraction', not {self.signal!r}")
        if self.dose <= 0:
            raise ValueError("dose must be > 0 electrons per frame")
        if self.defects < 0:
            raise ValueError("defects must be >= 0")
        if len(self.drift_px_per_frame) != 2 or not np.isfinite(self.drift_px_per_frame).all():
            raise ValueError("drift_px_per_frame must be two finite numbers (dy, dx)")


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur by FFT (sigma in px)."""
    h, w = img.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2))
    return np.fft.irfft2(np.fft.rfft2(img) * g, s=img.shape)


class DigitalTwin:
    """An :class:`~emedge_core.instrument.Instrument` over a synthetic specimen."""

    def __init__(self, spec: typing.Optional[TwinSpec] = None, **knobs: typing.Any) -> None:
        self.spec = spec if spec is not None else TwinSpec(**knobs)
        self.signal_kind = self.spec.signal
        self._rng = np.random.default_rng(self.spec.seed + 1)
        self._frames_measured = 0
        self._build()

    # -- specimen ----------------------------------------------------------------
    def _build(self) -> None:
        s = self.spec
        rng = np.random.default_rng(s.seed)
        n = s.size
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
        # grain boundary: a curved line x_b(y); vacuum beyond a curved edge near the bottom
        phase = rng.uniform(0, 2 * np.pi)
        xb = 0.6 * n + 0.06 * n * np.sin(2 * np.pi * yy[:, 0] / n + phase)
        ye = 0.86 * n + 0.05 * n * np.sin(2 * np.pi * xx[0] / n + phase / 2)
        thickness = np.clip((ye[None, :] - yy) / (0.3 * n), 0.0, 1.0) ** 0.5   # 0 in vacuum, 1 inside
        thickness = 0.6 + 0.4 * thickness
        thickness[yy > ye[None, :]] = 0.0

        atoms = []
        for grain, angle in ((0, 0.0), (1, np.deg2rad(rng.uniform(12, 20)))):
            a = s.spacing_px
            span = int(2 * n / a) + 4
            i, j = np.meshgrid(np.arange(-span, span), np.arange(-span, span), indexing="ij")
            ax = a * (i + 0.5 * j)
            ay = a * (np.sqrt(3) / 2 * j)
            c, sn = np.cos(angle), np.sin(angle)
            px = n / 2 + c * ax - sn * ay + (grain * a / 3)
            py = n / 2 + sn * ax + c * ay
            keep = (px > -3) & (px < n + 3) & (py > -3) & (py < n + 3)
            px, py = px[keep], py[keep]
            row = np.clip(py.round().astype(int), 0, n - 1)
            side = px > xb[row]
            keep = side if grain == 1 else ~side
            atoms.append(np.stack([py[keep], px[keep]], axis=1))
        pos = np.concatenate(atoms)
        # drop atoms crowding each other at the boundary
        z = np.ones(len(pos))
        row = np.clip(pos[:, 0].round().astype(int), 0, n - 1)
        col = np.clip(pos[:, 1].round().astype(int), 0, n - 1)
        inside = thickness[row, col] > 0
        pos, z = pos[inside], z[inside]
        dist_b = np.abs(pos[:, 1] - xb[np.clip(pos[:, 0].round().astype(int), 0, n - 1)])

        # point defects on interior atoms away from edges and boundary
        margin = 10
        ok = ((pos[:, 0] > margin) & (pos[:, 0] < n - margin) & (pos[:, 1] > margin) & (pos[:, 1] < n - margin)
              & (dist_b > 2 * s.spacing_px))
        choice = rng.choice(np.flatnonzero(ok), size=min(s.defects, int(ok.sum())), replace=False)
        kinds = rng.choice(["heavy", "vacancy"], size=len(choice))
        charges = rng.choice([-1.0, 1.0], size=len(choice))
        centres = pos[choice].copy()
        # radial strain around each defect: neighbours pushed out (heavy) or pulled in (vacancy)
        for (cy, cx), kind in zip(centres, kinds, strict=True):
            d = pos - [cy, cx]
            r = np.hypot(d[:, 0], d[:, 1])
            near = (r > 0.1) & (r < 2.5 * s.spacing_px)
            sign = 1.0 if kind == "heavy" else -1.0
            pos[near] += sign * 0.35 * d[near] / r[near, None] * np.exp(-r[near] / s.spacing_px)[:, None]
        z[choice[kinds == "heavy"]] = 1.8
        z[choice[kinds == "vacancy"]] = 0.0

        # projected potential and HAADF: Gaussian columns, HAADF ~ Z^1.7
        pot = np.zeros((n, n))
        haadf = np.zeros((n, n))
        sig = 1.1
        rad = int(4 * sig) + 1
        for (py, px), zi in zip(pos, z, strict=True):
            if zi == 0:
                continue
            r0, c0 = int(round(py)), int(round(px))
            r_lo, r_hi, c_lo, c_hi = max(r0 - rad, 0), min(r0 + rad + 1, n), max(c0 - rad, 0), min(c0 + rad + 1, n)
            if r_lo >= r_hi or c_lo >= c_hi:
                continue
            g = np.exp(-((yy[r_lo:r_hi, c_lo:c_hi] - py) ** 2 + (xx[r_lo:r_hi, c_lo:c_hi] - px) ** 2) / (2 * sig ** 2))
            pot[r_lo:r_hi, c_lo:c_hi] += zi * g
            haadf[r_lo:r_hi, c_lo:c_hi] += zi ** 1.7 * g
        haadf = haadf * thickness + 0.05 * thickness

        # local structure descriptor in [0, 1]: near a defect or the grain boundary
        d2 = np.full((n, n), np.inf)
        for cy, cx in centres:
            d2 = np.minimum(d2, (yy - cy) ** 2 + (xx - cx) ** 2)
        rho = 0.8 * s.spacing_px
        desc = np.exp(-d2 / (2 * rho ** 2)) if len(centres) else np.zeros((n, n))
        gb = np.exp(-((xx - xb[:, None]) ** 2) / (2 * (0.5 * s.spacing_px) ** 2))
        desc = np.maximum(desc, 0.45 * gb) * (thickness > 0)

        # projected field for the CoM: probe-smoothed potential gradient + charged-defect field
        smooth = _gaussian_blur(pot, 1.5)
        gy, gx = np.gradient(smooth)
        fy, fx = -0.8 * gy, -0.8 * gx
        for (cy, cx), q in zip(centres, charges, strict=True):
            dy, dx = yy - cy, xx - cx
            r2 = dy ** 2 + dx ** 2 + (0.5 * s.spacing_px) ** 2
            fy += q * 3.0 * dy / r2 * np.exp(-np.sqrt(r2) / (2 * s.spacing_px))
            fx += q * 3.0 * dx / r2 * np.exp(-np.sqrt(r2) / (2 * s.spacing_px))
        fy *= thickness > 0
        fx *= thickness > 0

        self.atoms = pos
        self.defect_sites = np.round(centres).astype(int)
        self.defect_kinds = list(kinds)
        self.thickness = thickness.astype(np.float32)
        self.descriptor = desc.astype(np.float32)
        self.field = np.stack([fy, fx], axis=-1).astype(np.float32)   # (H, W, 2) CoM shift in detector px
        self._haadf_clean = haadf.astype(np.float32)
        noisy = np.random.default_rng(s.seed + 2).poisson(haadf * SURVEY_DOSE) / SURVEY_DOSE
        self._survey = Survey(noisy.astype(np.float32), pixel_size_nm=s.pixel_size_nm, origin_nm=(0.0, 0.0))
        self._true_energy_eV = (ENERGY_OFFSET_EV + ENERGY_STEP_EV * np.arange(s.channels)).astype(np.float64)
        self.energy_eV = self._true_energy_eV + s.energy_offset_eV      # the axis the frames are labelled with

    # -- frames ------------------------------------------------------------------
    def _clean_frames(self, pos: np.ndarray) -> np.ndarray:
        """Noise-free frames (n, E) or (n, det, det), normalised to ``dose`` electrons each."""
        s = self.spec
        r, c = pos[:, 0], pos[:, 1]
        t = self.thickness[r, c].astype(np.float64)[:, None]
        if s.signal == "spectrum":
            e = self._true_energy_eV[None, :]
            ep = 16.0 + 5.0 * self.descriptor[r, c].astype(np.float64)[:, None]
            width = 3.0
            zlp = np.exp(-0.5 * (e / 0.5) ** 2)
            plasmon = t * 0.25 * (width / 2) ** 2 / ((e - ep) ** 2 + (width / 2) ** 2) * (e > 1.0)
            ep_pos = np.clip(e, 3.0, None)
            background = t * 0.01 * (ep_pos / 20.0) ** -1.5 * (e > 3.0)
            jump = t * (0.0015 + 0.004 * self.descriptor[r, c].astype(np.float64)[:, None])
            edge = jump * (e >= EDGE_EV) * (np.clip(e, EDGE_EV, None) / EDGE_EV) ** -2.5
            spec = zlp + plasmon + background + edge
            return spec / spec.sum(axis=1, keepdims=True) * s.dose
        k = s.detector
        radius = k / 5.0
        kk = np.arange(k) - (k - 1) / 2
        shift = self.field[r, c].astype(np.float64)
        dy = kk[None, :, None] - shift[:, 0, None, None]
        dx = kk[None, None, :] - shift[:, 1, None, None]
        disk = np.clip(radius + 0.5 - np.sqrt(dy ** 2 + dx ** 2), 0.0, 1.0)
        vac = (t[:, 0] == 0)[:, None, None]
        pattern = disk + 0.002 * ~vac
        return pattern / pattern.sum(axis=(1, 2), keepdims=True) * s.dose

    def _wrap(self, data: np.ndarray) -> Frames:
        if self.spec.signal == "spectrum":
            return Frames(data, "spectrum", energy_eV=self.energy_eV)
        return Frames(data, "diffraction", mrad_per_px=25.0 / (self.spec.detector / 5.0))

    # -- drift ---------------------------------------------------------------------
    @property
    def drift_px(self) -> tuple[float, float]:
        """(dy, dx) px the specimen has moved under the scan so far."""
        dy, dx = self.spec.drift_px_per_frame
        return dy * self._frames_measured, dx * self._frames_measured

    def _on_specimen(self, pos: np.ndarray) -> np.ndarray:
        """The specimen pixels (n, 2) under scan positions ``pos`` now (the specimen moved by +drift)."""
        moved = np.rint(pos - np.asarray(self.drift_px)).astype(np.int64)
        return np.clip(moved, 0, np.asarray(self._survey.shape) - 1)

    # -- the Instrument interface -------------------------------------------------
    def survey(self) -> Survey:
        """The HAADF survey; once the specimen has drifted, a new noisy scan of the moved specimen."""
        if self.drift_px == (0.0, 0.0):
            return self._survey
        from scipy import ndimage

        clean = ndimage.shift(self._haadf_clean.astype(np.float64), self.drift_px, order=1, mode="nearest")
        image = self._rng.poisson(np.clip(clean, 0, None) * SURVEY_DOSE) / SURVEY_DOSE
        return dataclasses.replace(self._survey, image=image.astype(np.float32))

    def measure(self, positions: np.ndarray) -> Frames:
        pos = check_positions(positions, self._survey.shape)
        clean = self._clean_frames(self._on_specimen(pos))
        self._frames_measured += len(pos)
        return self._wrap(self._rng.poisson(clean).astype(np.float32))

    def state(self) -> dict[str, typing.Any]:
        s = self.spec
        return {
            "instrument": "digital twin",
            "twin": dataclasses.asdict(s),
            "high_tension_V": 200e3,
            "convergence_semiangle_mrad": 25.0 if s.stated_convergence_mrad is None else s.stated_convergence_mrad,
            "probe_current_pA": 50.0,
            "defocus_nm": 0.0,
            "survey_pixel_size_nm": s.pixel_size_nm,
            "specimen_drift_px": list(self.drift_px),     # where the specimen has moved under the scan so far
        }

    def available(self) -> typing.Optional[np.ndarray]:
        return None

    # -- ground truth ----------------------------------------------------------------
    def truth_frames(self, positions: np.ndarray) -> Frames:
        """Noise-free frames at ``positions`` (n, 2)."""
        return self._wrap(self._clean_frames(check_positions(positions, self._survey.shape)).astype(np.float32))

    def truth(self, scalarizer: typing.Union[str, dict[str, typing.Any], "Scalarizer"],
              chunk: int = 2048) -> np.ndarray:
        """(H, W) noise-free map of ``scalarizer`` (an object or a spec) over every survey pixel,
        prepared once (on the first chunk) like any run."""
        from emedge_core.scalarize import reduce

        h, w = self._survey.shape
        rr, cc = np.mgrid[0:h, 0:w]
        pos = np.stack([rr.ravel(), cc.ravel()], axis=1)
        out = reduce(scalarizer, (self.truth_frames(pos[i:i + chunk]) for i in range(0, len(pos), chunk)),
                     scan_shape=(h, w)).values
        return out.reshape(h, w)
