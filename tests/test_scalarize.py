"""Scalarizers on analytic patterns with known answers, bad frames, streams, backends and the CLI."""
from __future__ import annotations

import json
import math
import typing
import warnings

import numpy as np
import pytest

from emedge_core import EmedgeError
from emedge_core.cli import main
from emedge_core.instrument import Frames
from emedge_core.scalarize import REGISTRY, Reason, Reducer, Scalarizer, get_backend, reduce
from emedge_core.scalarize import backends as backends_mod
from emedge_core.scalarize import notice as notice_mod
from emedge_core.scalarize.diffraction import bf_disk
from emedge_core.scalarize.dpc import find_rotation, integrate, rotate

torch = pytest.importorskip("torch")

DET = 32          # detector edge (px)
DISK_AT = 16      # integer centre of the unshifted disk (px)


def disk(radius: float = 6.0, size: int = DET, at: float = DISK_AT) -> np.ndarray:
    rows, cols = np.indices((size, size))
    return (np.hypot(rows - at, cols - at) <= radius).astype(np.float64)


def shifted_disks(shifts: np.ndarray, radius: float = 6.0, scale: float = 1.0) -> np.ndarray:
    """(n, DET, DET) patterns whose exact centre of mass is DISK_AT + shift (row, col).

    Each is the bilinear splat of a disk symmetric about an integer pixel: a weighted sum of
    four integer shifts of it, so the discrete CoM is the weighted mean of their centres.
    """
    base = disk(radius) * scale
    out = np.zeros((len(shifts), DET, DET))
    for k, (dy, dx) in enumerate(shifts):
        iy, ix = math.floor(dy), math.floor(dx)
        fy, fx = dy - iy, dx - ix
        for oy, wy in ((iy, 1 - fy), (iy + 1, fy)):
            for ox, wx in ((ix, 1 - fx), (ix + 1, fx)):
                out[k] += wy * wx * np.roll(base, (oy, ox), axis=(0, 1))
    return out


def patterns_for(field: np.ndarray) -> np.ndarray:
    """(H, W, DET, DET) float32 patterns whose CoM relative to (DISK_AT, DISK_AT) is ``field`` (H, W, 2)."""
    h, w, _ = field.shape
    return shifted_disks(field.reshape(-1, 2)).reshape(h, w, DET, DET).astype(np.float32)


def energy_axis(n: int = 400, start: float = -10.0, step: float = 0.25) -> np.ndarray:
    return start + step * np.arange(n)


def gaussians(centres_eV: np.ndarray, e: np.ndarray, sigma_eV: float = 1.0, height: float = 1000.0) -> np.ndarray:
    return height * np.exp(-0.5 * ((e[None, :] - centres_eV[:, None]) / sigma_eV) ** 2)


# -- 4D-STEM: centre of mass ---------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "torch:cpu"])
def test_com_of_shifted_disks_is_exact(backend: str) -> None:
    rng = np.random.default_rng(1)
    shifts = rng.uniform(-3, 3, (64, 2))
    frames = Frames(shifted_disks(shifts, scale=50.0).astype(np.float32), "diffraction")
    com = reduce({"name": "com", "center": [DISK_AT, DISK_AT]}, frames, backend=backend)
    assert (com.reason == Reason.OK).all()
    np.testing.assert_allclose(com.values, shifts, atol=1e-4, rtol=0)


def test_com_uint16_and_geometric_centre() -> None:
    shifts = np.array([[0.25, -0.5], [1.75, 2.0], [-2.5, 0.125]])
    data = shifted_disks(shifts, scale=1600.0)            # quarter/eighth shifts: integer counts
    assert np.allclose(data, np.round(data))
    frames = Frames(data.astype(np.uint16), "diffraction")
    com = reduce("com", frames)                        # relative to ((32-1)/2, (32-1)/2)
    np.testing.assert_allclose(com.values, shifts + (DISK_AT - (DET - 1) / 2), atol=1e-4, rtol=0)
    mag = reduce("com_magnitude", frames).values
    ang = reduce("com_angle", frames).values
    np.testing.assert_allclose(mag, np.hypot(*com.values.T), rtol=1e-12)
    np.testing.assert_allclose(ang, np.arctan2(com.values[:, 0], com.values[:, 1]), rtol=1e-12)


def test_com_radius_ignores_pixels_outside_the_disk() -> None:
    data = shifted_disks(np.array([[0.5, -1.0]]), scale=10.0)
    data[0, 0, 0] = 500.0                                  # a hot pixel far outside
    frames = Frames(data.astype(np.float32), "diffraction")
    masked = reduce({"name": "com", "center": [DISK_AT, DISK_AT], "radius": 10}, frames, backend="numpy")
    np.testing.assert_allclose(masked.values, [[0.5, -1.0]], atol=1e-4)
    unmasked = reduce({"name": "com", "center": [DISK_AT, DISK_AT]}, frames)
    assert abs(unmasked.values[0, 0] - 0.5) > 1.0


def test_bf_disk_and_auto_centre() -> None:
    pattern = disk(radius=7.0, at=DISK_AT) * 100 + 1.0
    cy, cx, r = bf_disk(np.roll(pattern, (2, -3), axis=(0, 1)))
    assert abs(cy - 18) < 1e-9 and abs(cx - 13) < 1e-9
    assert abs(r - 7.0) < 0.3
    shifts = np.array([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]])   # mean pattern centred on the disk
    out = reduce({"name": "com", "center": "auto"}, shifted_disks(shifts).astype(np.float32), backend="numpy")
    np.testing.assert_allclose(out.values, shifts, atol=1e-4)
    assert out.resolved["center_px"] == pytest.approx([DISK_AT, DISK_AT], abs=1e-9)


# -- 4D-STEM: virtual detectors --------------------------------------------------------------
def test_virtual_detectors_sum_their_masks() -> None:
    rng = np.random.default_rng(2)
    data = (rng.poisson(3.0, (20, DET, DET)) + 40 * disk(6.0)[None]).astype(np.float32)
    rows, cols = np.indices((DET, DET))
    d = np.hypot(rows - DISK_AT, cols - DISK_AT)
    frames = Frames(data, "diffraction", mrad_per_px=0.5)
    c = [DISK_AT, DISK_AT]
    cases = {
        json.dumps({"name": "virtual_bf", "outer": 6.5, "center": c}): d < 6.5,
        json.dumps({"name": "virtual_adf", "inner": 8, "center": c}): d >= 8,
        json.dumps({"name": "virtual_annular", "inner": 2, "outer": 5, "units": "mrad", "center": c}):
            (d >= 4) & (d < 10),
    }
    for spec, mask in cases.items():
        want = (data.astype(np.float64) * mask).sum(axis=(1, 2))
        for backend in ("numpy", "torch:cpu"):
            np.testing.assert_allclose(reduce(spec, frames, backend=backend).values, want, rtol=1e-6, err_msg=spec)


def test_virtual_auto_radii_follow_the_bright_field_disk() -> None:
    data = np.broadcast_to(disk(6.0) * 100 + 1, (4, DET, DET)).astype(np.float32)
    bf = reduce({"name": "virtual_bf", "center": "auto"}, data, backend="numpy")
    adf = reduce("virtual_adf", data, backend="numpy")
    assert bf.resolved["outer_px"] == pytest.approx(6.0, abs=0.3)
    assert adf.resolved["inner_px"] == pytest.approx(1.2 * bf.resolved["bf_radius_px"])
    rows, cols = np.indices((DET, DET))
    inside = np.hypot(rows - DISK_AT, cols - DISK_AT) < bf.resolved["outer_px"]
    np.testing.assert_allclose(bf.values, ((disk(6.0) * 100 + 1) * inside).sum(), rtol=1e-6)
    assert inside.sum() > 0.9 * disk(6.0).sum()


def test_mrad_radii_need_a_calibration() -> None:
    with pytest.raises(EmedgeError, match="mrad_per_px"):
        reduce({"name": "virtual_bf", "outer": 3, "units": "mrad"},
               Frames(np.ones((2, 8, 8), np.float32), "diffraction"))


# -- DPC and iCoM ------------------------------------------------------------------------------
def phase(h: int = 24, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A periodic potential (H, W) and its exact gradient (H, W, 2) (d/d row, d/d col)."""
    r, c = np.indices((h, w), dtype=np.float64)
    a, b = 2 * np.pi * r / h, 2 * np.pi * c / w
    phi = 0.8 * np.sin(a) * np.cos(2 * b) + 0.5 * np.cos(3 * a + b)
    grad_r = (0.8 * np.cos(a) * np.cos(2 * b) - 1.5 * np.sin(3 * a + b)) * 2 * np.pi / h
    grad_c = (-1.6 * np.sin(a) * np.sin(2 * b) - 0.5 * np.sin(3 * a + b)) * 2 * np.pi / w
    return phi, np.stack([grad_r, grad_c], axis=-1)


def detector_field(scan_field: np.ndarray, rotation_deg: float, transpose: bool = False) -> np.ndarray:
    """The CoM a detector rotated by ``rotation_deg`` (then maybe transposed) records for a scan-frame field."""
    c = rotate(scan_field, -rotation_deg)
    return c[..., ::-1] if transpose else c


@pytest.mark.parametrize("angle,transpose", [(30.0, False), (-72.5, False), (12.0, True)])
def test_dpc_finds_a_known_rotation(angle: float, transpose: bool) -> None:
    _, grad = phase()
    com = detector_field(grad, angle, transpose)
    found, flip = find_rotation(com)
    assert flip == transpose
    assert abs((found - angle + 90) % 180 - 90) < 1.0


def test_dpc_end_to_end_and_icom_recovers_the_phase() -> None:
    phi, grad = phase()
    data = patterns_for(detector_field(grad, 40.0))
    dpc = reduce({"name": "dpc", "center": [DISK_AT, DISK_AT]}, data, backend="numpy")
    assert abs(dpc.resolved["rotation_deg"] - 40.0) < 1.0 and dpc.resolved["transpose"] is False
    np.testing.assert_allclose(dpc.values, grad, atol=0.02 * np.abs(grad).max())   # 1 deg ~ 1.7 %
    icom = reduce({"name": "icom", "center": [DISK_AT, DISK_AT], "rotation_deg": 40.0}, data, backend="torch:cpu")
    want = phi - phi.mean()
    np.testing.assert_allclose(icom.values, want, atol=1e-3 * np.abs(want).max())


def test_integrate_is_exact_for_a_periodic_gradient() -> None:
    phi, grad = phase(32, 20)
    np.testing.assert_allclose(integrate(grad), phi - phi.mean(), atol=1e-10)


def test_map_level_reductions_refuse_single_frames() -> None:
    frames = Frames(np.ones((3, 8, 8), np.float32), "diffraction")
    with pytest.raises(EmedgeError, match="whole scan map"):
        Reducer("icom").frames(frames)
    with pytest.raises(EmedgeError, match="whole scan map"):
        Reducer("dpc").frames(frames)
    with pytest.raises(EmedgeError, match=r"needs an \(H, W\) scan shape"):
        reduce("icom", frames)
    rotated = reduce({"name": "dpc", "rotation_deg": 90, "center": [DISK_AT, DISK_AT]},
                     Frames(shifted_disks(np.array([[1.0, 0.0]])).astype(np.float32), "diffraction"))
    np.testing.assert_allclose(rotated.values, [[0.0, 1.0]], atol=1e-6)


# -- EELS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "torch:cpu"])
def test_peak_energy_of_gaussians_to_a_fraction_of_a_channel(backend: str) -> None:
    e = energy_axis()
    centres = np.random.default_rng(3).uniform(10, 40, 50)
    frames = Frames(gaussians(centres, e).astype(np.float32), "spectrum", energy_eV=e)
    exact = reduce({"name": "eels_peak_energy", "smooth": 1}, frames, backend=backend).values
    np.testing.assert_allclose(exact, centres, atol=1e-3 * 0.25)          # 1/1000 channel
    smoothed = reduce({"name": "eels_peak_energy", "smooth": 5}, frames, backend=backend).values
    np.testing.assert_allclose(smoothed, centres, atol=0.05 * 0.25)       # 1/20 channel


def test_zlp_alignment() -> None:
    e = energy_axis()
    drift = np.array([-1.3, 0.0, 0.8, 2.1])
    spectra = gaussians(drift, e, 0.6, 5000) + gaussians(18.0 + drift, e, 1.5, 800)
    frames = Frames(spectra.astype(np.float32), "spectrum", energy_eV=e)
    raw = reduce({"name": "eels_peak_energy", "smooth": 1}, frames).values
    aligned = reduce({"name": "eels_peak_energy", "smooth": 1, "zlp_eV": [-4, 4]}, frames).values
    np.testing.assert_allclose(raw, 18.0 + drift, atol=1e-3)
    np.testing.assert_allclose(aligned, 18.0, atol=1e-3)
    band = reduce({"name": "eels_band_integral", "band_eV": [14, 22], "zlp_eV": [-4, 4]}, frames).values
    assert np.ptp(band) / band.mean() < 0.02          # the window follows the plasmon
    peak = reduce({"name": "eels_peak_max", "range_eV": [10, 30], "zlp_eV": [-4, 4]}, frames).values
    assert np.all(np.abs(peak - 800) < 10)


def test_band_integral_ratio_and_peak_max() -> None:
    e = energy_axis()
    rng = np.random.default_rng(4)
    data = rng.poisson(50, (30, e.size)).astype(np.float32)
    frames = Frames(data, "spectrum", energy_eV=e)
    data = data.astype(np.float64)
    lo, hi = (e >= 5) & (e <= 10), (e >= 15) & (e <= 20)
    for backend in ("numpy", "torch:cpu"):
        def s(spec: typing.Any) -> np.ndarray:
            return reduce(spec, frames, backend=backend).values  # noqa: B023  (called in this iteration)

        np.testing.assert_allclose(s({"name": "eels_band_integral", "band_eV": [5, 10]}), data[:, lo].sum(1))
        np.testing.assert_allclose(s("eels_band_ratio"), data[:, lo].sum(1) / data[:, hi].sum(1), rtol=1e-12)
        np.testing.assert_allclose(s({"name": "eels_peak_max", "range_eV": [15, 20]}), data[:, hi].max(1))


def test_eels_on_integer_spectra_read_the_raw_windows_and_equal_float32(monkeypatch) -> None:
    # uint16 counts near the top of the range: a 5-channel box sum would overflow uint16; NumPy reads
    # the raw spectra (no float32 copy of the frames), torch converts them; every result is float32's
    e = energy_axis()
    rng = np.random.default_rng(5)
    centres = rng.uniform(12, 38, 40)
    counts = rng.poisson(gaussians(centres, e, 1.5, 30000) + gaussians(rng.uniform(-1, 1, 40), e, 0.5, 60000) + 200)
    counts = np.minimum(counts, 65534).astype(np.uint16)
    loads: list[bool] = []
    real = backends_mod.Backend.load

    def spy(self, raw, weights, want_max, keep_frames=True):      # what the shared pass was asked to keep
        loads.append(keep_frames)
        return real(self, raw, weights, want_max, keep_frames)

    monkeypatch.setattr(backends_mod.Backend, "load", spy)
    specs = [{"name": "eels_peak_energy", "range_eV": [10, 40], "smooth": 5},
             {"name": "eels_peak_energy", "range_eV": [10, 40], "smooth": 3, "zlp_eV": [-3, 3]},
             {"name": "eels_peak_max", "range_eV": [10, 40]}, {"name": "eels_band_integral", "band_eV": [10, 40]},
             {"name": "eels_band_ratio", "low_eV": [5, 10], "high_eV": [15, 30]},
             {"name": "eels_edge_intensity", "pre_eV": [20, 29], "post_eV": [30, 40]}]
    for spec in specs:
        got = reduce(spec, Frames(counts, "spectrum", energy_eV=e)).values
        want = reduce(spec, Frames(counts.astype(np.float32), "spectrum", energy_eV=e)).values
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(spec))
        assert np.isfinite(got).all()
        torch_got = reduce(spec, Frames(counts, "spectrum", energy_eV=e), backend="torch:cpu").values
        np.testing.assert_allclose(torch_got, want, rtol=1e-5, err_msg=str(spec))
    assert loads and not any(loads)          # NumPy: never a float32 copy of whole spectra


def test_edge_intensity_above_a_power_law() -> None:
    e = energy_axis(800, -10.0, 0.25)
    rng = np.random.default_rng(5)
    amplitude = rng.uniform(0.5e7, 2e7, 6)
    r = rng.uniform(2.5, 3.5, 6)
    jump = rng.uniform(20, 80, 6)
    pos = np.clip(e, 1, None)
    spectra = amplitude[:, None] * pos[None] ** -r[:, None] + jump[:, None] * (e >= 99) * np.exp(-(e - 99) / 40)
    frames = Frames(spectra.astype(np.float32), "spectrum", energy_eV=e)
    got = reduce("eels_edge_intensity", frames).values
    post = (e >= 100) & (e <= 130)
    want = (jump[:, None] * np.exp(-(e[post] - 99) / 40)).sum(1)
    np.testing.assert_allclose(got, want, rtol=5e-3)


def test_windows_outside_the_spectrum_are_an_error() -> None:
    e = energy_axis(40)
    with pytest.raises(EmedgeError, match="outside the spectrum"):
        reduce({"name": "eels_band_integral", "band_eV": [200, 300]},
               Frames(np.ones((2, 40), np.float32), "spectrum", energy_eV=e))


# -- bad frames ------------------------------------------------------------------------------
def test_every_bad_frame_kind_gets_nan_and_its_reason() -> None:
    rng = np.random.default_rng(6)
    clean = (rng.poisson(5, (8, 16, 16)) + 100).astype(np.float32)
    data = clean.copy()
    data[1, 3, 3] = np.nan
    data[2, 0, 5] = np.inf
    data[3] = 0
    data[4, 7, 7] = 1e6                      # saturated at the configured level
    base = reduce({"name": "com", "saturation": 1e6}, clean, backend="numpy").values
    out = reduce({"name": "com", "saturation": 1e6}, data, backend="numpy")
    assert out.reason.tolist() == [Reason.OK, Reason.NONFINITE, Reason.NONFINITE, Reason.EMPTY,
                                   Reason.SATURATED, Reason.OK, Reason.OK, Reason.OK]
    bad = out.reason != Reason.OK
    assert np.isnan(out.values[bad]).all()
    np.testing.assert_allclose(out.values[~bad], base[~bad], rtol=1e-6)


def test_a_nan_outside_the_detector_mask_still_counts() -> None:
    data = np.ones((3, 16, 16), np.float32)
    data[1, 0, 0] = np.nan                   # outside the bright-field disk
    data[2, 0, 15] = -np.inf
    out = reduce({"name": "virtual_bf", "outer": 3}, Frames(data, "diffraction"))
    assert out.reason.tolist() == [Reason.OK, Reason.NONFINITE, Reason.NONFINITE]
    zero_inside = np.zeros((1, 16, 16), np.float32)
    zero_inside[0, 0, 0] = 5                 # counts only outside the CoM disk: no value, but not empty
    out = reduce({"name": "com", "radius": 3}, Frames(zero_inside, "diffraction"))
    assert out.reason.tolist() == [Reason.FAILED]


def test_uint16_saturation_defaults_to_the_dtype_max() -> None:
    data = np.full((3, 8, 8), 7, np.uint16)
    data[1, 2, 2] = 65535
    out = reduce("com_magnitude", Frames(data, "diffraction"))
    assert out.reason.tolist() == [Reason.OK, Reason.SATURATED, Reason.OK]


def test_wrong_shape_and_dtype_chunks_do_not_stop_the_stream() -> None:
    rng = np.random.default_rng(7)
    good = [rng.poisson(4, (3, 16, 16)).astype(np.float32) + 1 for _ in range(3)]
    chunks: list[np.ndarray] = [good[0], np.ones((2, 16, 15), np.float32), good[1],
                                np.ones((2, 16, 16), np.complex64), good[2]]
    out = reduce("com_magnitude", iter(chunks), backend="numpy")
    assert out.reason.tolist() == [0, 0, 0, 4, 4, 0, 0, 0, 4, 4, 0, 0, 0]
    want = reduce("com_magnitude", np.concatenate(good), backend="numpy").values
    np.testing.assert_allclose(out.values[out.reason == 0], want)


def test_auto_parameters_wait_for_the_first_good_frame() -> None:
    blank = [np.zeros((4, DET, DET), np.float32), np.full((4, DET, DET), np.nan, np.float32)]
    good = shifted_disks(np.array([[0.5, 0.0], [-0.5, 0.0]]), scale=10).astype(np.float32)
    out = reduce({"name": "com", "center": "auto"}, iter(blank + [good]), backend="numpy")
    assert out.reason.tolist() == [Reason.EMPTY] * 4 + [Reason.NONFINITE] * 4 + [Reason.OK] * 2
    np.testing.assert_allclose(out.values[-2:], [[0.5, 0.0], [-0.5, 0.0]], atol=1e-4)
    nothing = reduce({"name": "icom", "center": "auto"}, np.zeros((3, 4, DET, DET), np.float32), backend="numpy")
    assert nothing.values.shape == (3, 4) and np.isnan(nothing.values).all()
    assert (nothing.reason == Reason.EMPTY).all()


def test_a_failed_reduction_is_flagged() -> None:
    e = energy_axis(200)
    data = np.ones((3, 200), np.float32)
    data[1, (e >= 15) & (e <= 20)] = 0       # nothing in the high band: the ratio has no value
    out = reduce("eels_band_ratio", Frames(data, "spectrum", energy_eV=e))
    assert out.reason.tolist() == [Reason.OK, Reason.FAILED, Reason.OK]
    assert np.isnan(out.values[1]) and np.isfinite(out.values[[0, 2]]).all()


# -- streams, files, backends ----------------------------------------------------------------
class CountingDataset:
    """A dataset stand-in that records how many frames each read asks for."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []  # type: ignore[var-annotated]

    def __getitem__(self, key: slice) -> np.ndarray:
        part = self.data[key]
        self.reads.append(int(np.prod(part.shape[:2])))
        return part


def test_array_stream_and_h5_agree_in_bounded_chunks(tmp_path: typing.Any) -> None:
    import h5py

    rng = np.random.default_rng(8)
    cube = rng.poisson(3, (12, 10, 16, 16)).astype(np.uint16)
    whole = reduce("com", cube, backend="numpy")
    assert whole.values.shape == (12, 10, 2) and whole.reason.shape == (12, 10)
    counted = CountingDataset(cube)
    small = reduce("com", counted, backend="numpy", chunk_bytes=3 * 10 * 16 * 16 * 4)
    assert max(counted.reads) == 30 and len(counted.reads) == 4
    np.testing.assert_array_equal(small.values, whole.values)
    stream = reduce("com", (cube.reshape(-1, 16, 16)[i:i + 7] for i in range(0, 120, 7)),
                    backend="numpy", scan_shape=(12, 10))
    np.testing.assert_allclose(stream.values, whole.values, rtol=1e-6)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("data", data=cube, chunks=(1, 10, 16, 16))
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_allclose(reduce("com", f["data"], backend="numpy").values, whole.values, rtol=1e-6)


def test_stream_of_frames_carries_the_calibration() -> None:
    e = energy_axis()
    chunks = [Frames(gaussians(np.array([c, c + 1]), e).astype(np.float32), "spectrum", energy_eV=e) for c in (12, 20)]
    out = reduce({"name": "eels_peak_energy", "smooth": 1}, iter(chunks), backend="numpy")
    np.testing.assert_allclose(out.values, [12, 13, 20, 21], atol=1e-3)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_torch_and_numpy_agree_on_every_reduction(name: str) -> None:
    if REGISTRY[name].signal_kind == "spectrum":
        e = energy_axis(600)
        rng = np.random.default_rng(9)
        data = (rng.poisson(30, (6, 5, 600)) + gaussians(np.full(30, 16.0), e).reshape(6, 5, 600)).astype(np.float32)
        kw: dict[str, typing.Any] = {"energy_eV": e}
    else:
        _, grad = phase(6, 5)
        data = patterns_for(detector_field(grad, 25.0) * 2)
        kw = {}
    a = reduce(name, data, backend="numpy", **kw)
    b = reduce(name, data, backend="torch:cpu", **kw)
    assert b.backend == "torch:cpu"
    np.testing.assert_array_equal(a.reason, b.reason)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6 * np.nanmax(np.abs(a.values)))


def test_backend_names_and_fallback_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_backend("numpy").name == "numpy"
    assert repr(get_backend("torch:cpu")) == "torch:cpu"
    with pytest.raises(EmedgeError, match="unknown backend"):
        get_backend("opencl")
    monkeypatch.setenv("EMEDGE_BACKEND", "torch:cpu")
    assert repr(get_backend("auto")) == "torch:cpu"
    monkeypatch.setattr(notice_mod, "_warned", set())
    with pytest.warns(RuntimeWarning, match="unavailable"):
        be = get_backend("cupy:cuda:7" if torch.cuda.is_available() else "torch:cuda")
    assert be.name == "numpy"


def test_a_device_error_mid_stream_falls_back_to_numpy_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class FlakyGPU(backends_mod.TorchBackend):
        calls = 0

        def load(self, raw: typing.Any, weights: typing.Any, want_max: bool,
                 keep_frames: bool = True) -> backends_mod.Chunk:
            FlakyGPU.calls += 1
            if FlakyGPU.calls == 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().load(raw, weights, want_max, keep_frames)

        def is_device_error(self, exc: BaseException) -> bool:
            return isinstance(exc, torch.OutOfMemoryError)

    monkeypatch.setattr(notice_mod, "_warned", set())
    rng = np.random.default_rng(10)
    cube = rng.poisson(3, (8, 6, 16, 16)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = reduce("com", cube, backend=FlakyGPU("cpu"), chunk_bytes=2 * 6 * 16 * 16 * 4)
    assert [str(w.message).startswith("torch:cpu failed") for w in caught] == [True]
    assert out.backend == "numpy"
    np.testing.assert_allclose(out.values, reduce("com", cube, backend="numpy").values, rtol=1e-6)


GPU_REASON = "needs a CUDA device (torch.cuda.is_available() is False on this machine)"


def check_matches_numpy(backend: str) -> None:
    """``backend`` gives NumPy's values and reason codes, streamed in several chunks, from pageable
    and page-locked host memory, for integer and float frames, projections-only and whole-frame reductions."""
    rng = np.random.default_rng(11)
    cube = rng.poisson(3, (16, 12, 32, 32)).astype(np.uint16)
    cube[3, 4] = 0                               # an empty frame: screened through the raw uint16 rows
    cube[5, 6, 0, 0] = np.iinfo(np.uint16).max   # a saturated one: the shared pass's maxima
    e = energy_axis(200)
    spectra = (gaussians(rng.uniform(5, 30, 16 * 12), e) + rng.poisson(2, (16 * 12, 200))).reshape(16, 12, 200)
    spectra[2, 2] = 0
    be = get_backend(backend)
    cases = [("com", cube, {}), ({"name": "virtual_bf", "outer": 6.0}, cube, {}), ("com", cube.astype(np.float32), {}),
             ("eels_band_ratio", spectra.astype(np.float32), {"energy_eV": e}),
             ("eels_peak_energy", spectra.astype(np.uint16), {"energy_eV": e})]
    for spec, data, kwargs in cases:
        want = reduce(spec, data, backend="numpy", **kwargs)
        pinned = be.host_buffer(data.shape, data.dtype)
        pinned[...] = data
        for source in (data, pinned):
            got = reduce(spec, source, backend=be, chunk_bytes=4 * 12 * int(np.prod(data.shape[2:])) * 4, **kwargs)
            assert got.backend.startswith(backend.split(":")[0])
            np.testing.assert_array_equal(got.reason, want.reason)
            np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_torch_cpu_matches_numpy_streamed() -> None:
    check_matches_numpy("torch:cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=GPU_REASON)
@pytest.mark.parametrize("backend", ["torch:cuda", "cupy"])
def test_gpu_backends_match_numpy_resident_and_streamed(backend: str) -> None:
    if backend == "cupy":
        pytest.importorskip("cupy", reason="cupy is not installed (pip install .[gpu])")
    check_matches_numpy(backend)


# -- experiment loop and CLI -----------------------------------------------------------------
def test_twin_frames_still_drive_the_loop_interface() -> None:
    from emedge_core.twin import DigitalTwin

    for signal, spec in (("spectrum", "eels_peak_energy"), ("diffraction", "com_magnitude")):
        twin = DigitalTwin(size=32, signal=signal, seed=1)
        result = reduce(spec, twin.measure(np.array([[3, 4], [10, 12]])))
        assert result.values.shape == (2,) and (result.reason == Reason.OK).all()


def test_cli_scalarize_h5_and_emd(tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> None:
    import h5py

    rng = np.random.default_rng(12)
    cube = rng.poisson(2, (6, 5, 16, 16)).astype(np.uint16)
    cube[2, 1] = 0
    import hdf5plugin

    with h5py.File(tmp_path / "scan.h5", "w") as f:      # compressed, as `emedge compress` writes
        f.create_dataset("experiment/raw/frames", data=cube, chunks=(1, 5, 16, 16), **hdf5plugin.Blosc2())
    out = tmp_path / "com.npy"
    assert main(["scalarize", str(tmp_path / "scan.h5"), "--scalarizer", "com", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.load(out).shape == (6, 5, 2) and summary["gbps"] > 0 and summary["bad"]["empty"] == 1
    assert np.load(tmp_path / "com.reason.npy")[2, 1] == Reason.EMPTY
    e = energy_axis(200)
    with h5py.File(tmp_path / "si.emd", "w") as f:
        g = f.create_group("data/si")
        g["data"] = gaussians(np.full(12, 20.0), e).reshape(3, 4, 200).astype(np.float32)
        g["dim3"] = e
        g["dim3"].attrs["units"] = "eV"
    assert main(["scalarize", str(tmp_path / "si.emd"), "--scalarizer", '{"name": "eels_peak_energy", "smooth": 1}',
                 "--out", str(tmp_path / "pe.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "pe.npy"), 20.0, atol=1e-3)
    replay = gaussians(np.full(12, 15.0), e).reshape(3, 4, 200).astype(np.float32)
    np.savez(tmp_path / "replay.npz", survey=np.zeros((3, 4)), data=replay, energy_eV=e)
    assert main(["scalarize", str(tmp_path / "replay.npz"), "--scalarizer", '{"name": "eels_peak_energy", "smooth": 1}',
                 "--out", str(tmp_path / "npz.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "npz.npy"), 15.0, atol=1e-3)
    np.save(tmp_path / "cube.npy", cube)
    assert main(["scalarize", str(tmp_path / "cube.npy"), "--scalarizer", "com", "--out", str(tmp_path / "c2")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "c2.npy"), np.load(out), equal_nan=True)
    emdfile = pytest.importorskip("emdfile", reason="emdfile (test extra) is not installed")
    spectra = gaussians(np.full(6, 7.0), energy_axis(100)).reshape(2, 3, 100).astype(np.float32)
    emdfile.save(str(tmp_path / "py4dstem.h5"), emdfile.Array(
        data=spectra, name="si", dims=[np.arange(2), np.arange(3), energy_axis(100)], dim_units=["px", "px", "eV"]))
    assert main(["scalarize", str(tmp_path / "py4dstem.h5"), "--scalarizer",
                 '{"name": "eels_peak_energy", "smooth": 1, "range_eV": [0, 10]}', "--out", str(tmp_path / "p4")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "p4.npy"), 7.0, atol=1e-3)
    assert main(["scalarize", str(tmp_path / "si.emd"), "--scalarizer", "com", "--out", str(tmp_path / "x")]) == 2
    assert "no 4-D dataset" in capsys.readouterr().err
    assert main(["scalarize", str(tmp_path / "nope.h5"), "--scalarizer", "com", "--out", str(tmp_path / "x")]) == 2


def test_stage_copy_splits_large_copies_exactly() -> None:
    from emedge_core.scalarize.backends import PARALLEL_COPY_BYTES, stage_copy

    src = np.arange(PARALLEL_COPY_BYTES // 2 + 7 * 1024, dtype=np.uint16).reshape(-1, 1024)   # > threshold, odd rows
    dst = np.zeros_like(src)
    stage_copy(dst, src)
    assert np.array_equal(dst, src)
    small = np.ones((3, 4), np.float32)
    out = np.zeros_like(small)
    stage_copy(out, small)
    assert np.array_equal(out, small)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine auto picks the GPU")
def test_auto_backend_without_a_gpu_is_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMEDGE_BACKEND", raising=False)
    assert repr(get_backend("auto", np.float32)) == "numpy"
    monkeypatch.setenv("EMEDGE_BACKEND", "torch:cpu")
    assert reduce("com", np.ones((4, 8, 8), np.float32)).backend == "torch:cpu"


@pytest.mark.parametrize("dtype", ["uint8", "uint16", ">u2", "int32", "float16", "float32", "float64"])
def test_cpu_pass_matches_float64_projections_for_every_dtype(dtype: str) -> None:
    from emedge_core.scalarize import cpu_kernels

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 200, (7, 12, 10)).astype(dtype)          # odd count: the last frame has no pair
    flat = frames.reshape(7, -1)
    rows, cols = np.indices((12, 10))
    com_rows = np.stack([np.ones(120), (rows - 5.5).ravel(), (cols - 4.0).ravel()]).astype(np.float32)
    masked = com_rows * (np.hypot(rows - 6, cols - 5) < 4).ravel()
    axes = cpu_kernels.coordinate_axes(com_rows, (12, 10))
    assert axes is not None and cpu_kernels.coordinate_axes(masked, (12, 10)) is None
    truth_max = flat.astype(np.float64).max(axis=1)
    for weights, ax in ((com_rows, axes), (com_rows, None), (masked, None), (masked[:1], None), (None, None)):
        proj, maxv = cpu_kernels.project_max(flat, weights, True, ax)
        w = np.ones((1, 120)) if weights is None else weights.astype(np.float64)
        np.testing.assert_allclose(proj, w @ flat.astype(np.float64).T, rtol=1e-6, atol=1e-3)
        assert np.array_equal(maxv, truth_max)


def test_cpu_pass_lets_nan_and_inf_through_for_screening() -> None:
    from emedge_core.scalarize import cpu_kernels

    frames = np.ones((4, 8, 8), np.float32)
    frames[1, 2, 3] = np.nan
    frames[2, 7, 7] = np.inf
    rows, cols = np.indices((8, 8))
    weights = np.stack([np.ones(64), rows.ravel(), cols.ravel()]).astype(np.float32)
    for ax in (cpu_kernels.coordinate_axes(weights, (8, 8)), None):
        proj, _ = cpu_kernels.project_max(frames.reshape(4, -1), weights, False, ax)
        assert np.isfinite(proj[0]).tolist() == [True, False, False, True]


def test_a_run_resolves_the_bf_disk_once_and_records_what_every_step_used(tmp_path: typing.Any) -> None:
    """The automatic disk is found on the first good frames and then fixed: every step's values equal
    a reduction with the recorded geometry given explicitly, and experiment.h5 holds that geometry."""
    import h5py

    from emedge_core.experiment import Experiment, ExperimentConfig
    from emedge_core.experiment_file import write_experiment
    from emedge_core.twin import DigitalTwin

    twin = DigitalTwin(size=32, seed=3, signal="diffraction")
    batches: list[Frames] = []

    class Recording:        # the twin, keeping every batch of frames it hands out
        signal_kind = twin.signal_kind

        def __getattr__(self, name: str) -> typing.Any:
            return getattr(twin, name)

        def measure(self, positions: np.ndarray) -> Frames:
            batches.append(twin.measure(positions))
            return batches[-1]

    spec = {"name": "virtual_bf", "center": "auto"}
    cfg = ExperimentConfig(budget=12, seeds=4, batch=4, acquisition="random", window=8)
    result = Experiment(typing.cast(typing.Any, Recording()), spec, cfg).run()
    geo = result.resolved
    assert {"bf_center_px", "bf_radius_px", "center_px", "outer_px"} <= set(geo)
    assert len(batches) == 3 and np.isfinite(result.values).all()
    fixed = {"name": "virtual_bf", "center": geo["center_px"], "outer": geo["outer_px"]}
    for i, frames in enumerate(batches):
        np.testing.assert_allclose(result.values[4 * i:4 * i + 4], reduce(fixed, frames).values, rtol=1e-6)
    # what the bug did: preparing on every step's frames finds a different disk each time
    per_step = [reduce(spec, frames).resolved for frames in batches[1:]]
    assert any(abs(g["bf_radius_px"] - geo["bf_radius_px"]) > 1e-3
               or np.abs(np.subtract(g["bf_center_px"], geo["bf_center_px"])).max() > 1e-3 for g in per_step), \
        (per_step, geo)
    paths = write_experiment(result, str(tmp_path))
    with h5py.File(paths["h5"], "r") as f:
        written = json.loads(f["experiment"].attrs["resolved"])
    assert written.keys() == geo.keys()
    for key, value in geo.items():
        np.testing.assert_allclose(written[key], value)
    with open(paths["summary"]) as fp:
        assert json.load(fp)["resolved"].keys() == geo.keys()


class PeakCounts(Scalarizer):
    """A third-party reduction, as another package would ship it (highest count per pattern)."""

    name = "peak_counts_plugin"
    signal_kind = "diffraction"
    unit = "counts"

    def process(self, chunk: typing.Any, signal: typing.Any, be: typing.Any) -> typing.Any:
        return be.xp.max(be.xp.reshape(chunk.data, (chunk.data.shape[0], -1)), axis=1)


def test_third_party_scalarizers_register_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from emedge_core.scalarize import SCALARIZER_GROUP, from_spec

    real = importlib.metadata.entry_points

    def entry_points(**kw: typing.Any) -> typing.Any:
        if kw.get("group") != SCALARIZER_GROUP:
            return real(**kw)
        return [importlib.metadata.EntryPoint("peak_counts_plugin", f"{__name__}:PeakCounts", SCALARIZER_GROUP),
                importlib.metadata.EntryPoint("broken_plugin", "no_such_module_xyz:Nothing", SCALARIZER_GROUP)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr("emedge_core.scalarize.base.REGISTRY", dict(REGISTRY))
    with pytest.raises(EmedgeError, match="scalarizer plug-in 'broken_plugin'.*failed to load"):
        from_spec("broken_plugin")
    cube = np.random.default_rng(3).poisson(4, (3, 4, 8, 8)).astype(np.uint16)
    out = reduce("peak_counts_plugin", cube)
    np.testing.assert_array_equal(out.values, cube.reshape(3, 4, -1).max(axis=-1))
