"""Real microscope files in through :func:`emedge_core.io.open_data`, and out through ``compress``.

The files in tests/data are rosettasciio's own test files from real instruments (see
tests/data/README.md); the Swift items are written here by nionswift's own storage handlers.
Every expectation is checked against what rosettasciio (or NumPy on its array) says, not against
numbers this project made.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess
import sys
import typing
import warnings

import numpy as np
import pytest

from emedge_core import EmedgeError
from emedge_core.cli import main
from emedge_core.io import open_data

DATA = pathlib.Path(__file__).parent / "data"
SI = DATA / "dm" / "EELS_SI.dm4"
HAADF = DATA / "dm" / "test_STEM_image.dm3"
SPECTRUM = DATA / "dm" / "test-EELS_spectrum.dm3"
MERLIN6 = DATA / "merlin" / "001_4x2_6bit.mib"
MERLIN12 = DATA / "merlin" / "Single_1_Frame_CounterDepth_12_Rows_256.mib"
ARINA = DATA / "arina" / "test_00_master.h5"
TOPSPIN = DATA / "topspin" / "topspin_test_A.app5"
MRC = DATA / "mrc" / "20241021_00405_movie.mrc"
PY4DSTEM = DATA / "emd" / "py4DSTEM_size2x3x4x5.h5"
HSPY = DATA / "hspy" / "example2_v3.1.hspy"
VELOX_ZIP = DATA / "velox" / "velox_emd_version11.zip"     # Thermo Fisher Velox EMD v11 (zipped as upstream)
TIA_SI = DATA / "tia" / "16x16-spectrum_image-5x5x1024.emi"     # + its _1.ser
BLOCKFILE = DATA / "blockfile" / "test2.blo"
TVIPS = DATA / "tvips" / "test_tvips_2345_000.tvips"
MSA = DATA / "msa" / "example1.msa"
NEXUS = DATA / "nexus" / "nexus_test_datakey.nxs"
PRZ_LEGACY = DATA / "pantarhei" / "panta_rhei_sample_legacy.prz"
PRISMATIC = DATA / "emd" / "Si100_4D.emd"


def rsciio(path: pathlib.Path, reader: str, index: int = -1) -> dict[str, typing.Any]:
    """The signal rosettasciio itself reads (eagerly), the reference for values and axes."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"rsciio.{reader}").file_reader(str(path))[index]


def _json_tail(text: str) -> dict[str, typing.Any]:
    return json.loads(text.strip().splitlines()[-1])


# -- opening: axis order, calibrations, bit depth -------------------------------------------------------
def test_dm4_spectrum_image_is_presented_navigation_first_with_its_energy_axis() -> None:
    ref = rsciio(SI, "digitalmicrograph")
    assert ref["data"].shape == (2048, 2, 2) and ref["axes"][0]["units"] == "eV"      # DM stores (E, y, x)
    with open_data(str(SI)) as src:
        assert src.kind == "spectrum" and src.shape == (2, 2, 2048)
        assert src.nav_shape == (2, 2) and src.sig_shape == (2048,)
        np.testing.assert_array_equal(np.asarray(src.data), np.transpose(ref["data"], (1, 2, 0)))
        e = ref["axes"][0]
        np.testing.assert_allclose(src.energy_eV, e["offset"] + e["scale"] * np.arange(2048))
        assert src.energy_eV[0] == 300.0 and src.scan_step == pytest.approx((ref["axes"][2]["scale"], "µm"))
        assert src.dtype == np.float32 and src.bits is None and src.saturation is None


@pytest.mark.parametrize("path,bits,dtype", [(MERLIN6, 6, np.uint8), (MERLIN12, 12, np.uint16)])
def test_merlin_bit_depth_gives_the_saturation_and_values_stay_rosettasciios(path, bits, dtype) -> None:
    ref = rsciio(path, "quantumdetector")
    with open_data(str(path)) as src:
        assert src.bits == bits and src.saturation == 2 ** bits - 1
        assert src.dtype == np.dtype(dtype) and src.dtype.isnative          # 12-bit frames are big-endian on disk
        np.testing.assert_array_equal(np.asarray(src.data), ref["data"])
    if bits == 6:
        assert src.shape == (2, 4, 256, 256) and src.kind == "diffraction"
        assert ref["data"].max() == 63                                       # really saturated


def test_arina_topspin_mrc_py4dstem_hspy_open_with_rosettasciios_axes() -> None:
    with open_data(str(ARINA)) as src:
        assert src.shape == (4, 4, 192, 192) and src.kind == "diffraction"
        assert src.saturation == 2 ** 16 - 1          # the master file says 32 bit; the frames are uint16
    with open_data(str(TOPSPIN)) as src:           # a PED scan and its 8 x 56 survey image
        assert src.kind == "diffraction" and src.nav_shape == (2, 5) and src.sig_shape == (14, 12)
        assert [s.kind for s in src.signals] == ["image", "diffraction"]
        np.testing.assert_array_equal(np.asarray(src.data), rsciio(TOPSPIN, "topspin")["data"])
    with open_data(str(MRC)) as src:
        assert src.shape == (4, 8, 4, 8) and src.nav_shape == (4, 8)
    ref = rsciio(PY4DSTEM, "emd")
    with open_data(str(PY4DSTEM)) as src:
        assert src.shape == (2, 3, 4, 5) and [a.units for a in src.axes] == [a["units"] for a in ref["axes"]]
        assert [a.step for a in src.axes] == pytest.approx([a["scale"] for a in ref["axes"]])
        np.testing.assert_array_equal(np.asarray(src.data), ref["data"])
    with open_data(str(HSPY)) as src:
        assert src.kind == "image" and src.shape == (16, 16) and src.axes[0].units == "1/nm"


@pytest.mark.parametrize("path,reader,kind,nav,sig,pixel_nm", [
    (TIA_SI, "tia", "spectrum", (5, 5), (1024,), 0.12053969116531095),      # TIA stores the y step < 0
    (TIA_SI.with_name(TIA_SI.stem + "_1.ser"), "tia", "spectrum", (5, 5), (1024,), 0.12053969116531095),
    (BLOCKFILE, "blockfile", "diffraction", (2, 3), (5, 5), 64.0),
    (TVIPS, "tvips", "diffraction", (6,), (4, 5), None),                    # a movie: time, not a scan
    (MSA, "msa", "spectrum", (), (21,), None),                              # one spectrum (no lazy reader)
])
def test_tia_blockfile_tvips_msa_open_with_rosettasciios_values_and_axes(path, reader, kind, nav, sig,
                                                                          pixel_nm) -> None:
    ref = rsciio(path, reader)
    with open_data(str(path)) as src:
        assert (src.kind, src.nav_shape, src.sig_shape) == (kind, nav, sig)
        np.testing.assert_array_equal(np.asarray(src.data), ref["data"])
        assert src.scan_pixel_nm == (pytest.approx(pixel_nm) if pixel_nm else None)
        if kind == "spectrum":
            e = ref["axes"][-1]
            np.testing.assert_allclose(src.energy_eV, e["offset"] + e["scale"] * np.arange(sig[0]))


SPEC_RATIO = '{"name": "eels_band_ratio", "low_eV": [0, 40], "high_eV": [40, 150]}'


def test_nexus_data_without_axes_legacy_prz_and_prismatic_emd_open_as_their_readers_say() -> None:
    # NeXus NXdata without axes: plain axes, rosettasciio's values, every signal listed
    with open_data(str(NEXUS), dataset=1) as src:
        ref = rsciio(NEXUS, "nexus", 1)
        assert ref["axes"] == [] and src.shape == ref["data"].shape == (4, 5, 6)
        np.testing.assert_array_equal(np.asarray(src.data), ref["data"])
        assert len(src.signals) == 6
    # a legacy Panta Rhei file: the values of rosettasciio's whole read (its lazy read differs)
    with open_data(str(PRZ_LEGACY)) as src:
        np.testing.assert_array_equal(np.asarray(src.data), rsciio(PRZ_LEGACY, "pantarhei")["data"])
    # a Prismatic EMD 1.0 file: its two depth slices, calibrated by the dim vectors (not listed as signals)
    import h5py

    with open_data(str(PRISMATIC)) as src, h5py.File(PRISMATIC, "r") as f:
        g = f["4DSTEM_simulation/data/datacubes/CBED_array_depth0000"]
        assert [s.shape for s in src.signals] == [(11, 11, 8, 8)] * 2 and src.kind == "diffraction"
        np.testing.assert_array_equal(np.asarray(src.data), g["datacube"][()])
        assert [(a.name, a.units) for a in src.axes] == [("R_x", "nm"), ("R_y", "nm"), ("Q_x", "nm^-1"),
                                                         ("Q_y", "nm^-1")]
        assert src.axes[0].step == pytest.approx(g["dim1"][1] - g["dim1"][0]) and src.scan_pixel_nm == 0.5


def test_a_replayed_tia_si_keeps_its_scan_calibration_in_the_experiment_file(tmp_path) -> None:
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "emedge_core", "run", "--instrument", "replay", "--data", str(TIA_SI),
                        "--scalarizer", SPEC_RATIO,
                        "--budget", "6", "--seeds", "3", "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=300, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    assert p.returncode == 0, p.stderr
    summary = _json_tail(p.stdout)
    import h5py
    import hdf5plugin  # noqa: F401

    ref = rsciio(TIA_SI, "tia")
    with h5py.File(out / "experiment.h5", "r") as f:
        g = f["experiment"]
        assert g.attrs["survey_pixel_size_nm"] == pytest.approx(abs(ref["axes"][0]["scale"]))
        np.testing.assert_allclose(g["survey"]["dim1"][:2], [0.0, abs(ref["axes"][0]["scale"])])
    # the values are the scalarizer on rosettasciio's spectra at the measured positions
    from emedge_core.instrument import Frames
    from emedge_core.scalarize import reduce

    e = ref["axes"][-1]["offset"] + ref["axes"][-1]["scale"] * np.arange(1024)
    pos = np.asarray(summary["positions"])
    spectra = ref["data"][pos[:, 0], pos[:, 1]]
    want = reduce(json.loads(SPEC_RATIO), Frames(spectra, "spectrum", energy_eV=e)).values
    got = np.array([np.nan if v is None else v for v in summary["scalars"]])
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(got)], rtol=1e-5)


def test_an_all_saturated_8_bit_scan_of_unknown_depth_names_the_dtype_and_the_option(tmp_path, capsys) -> None:
    data = np.zeros((2, 3, 8, 8), np.uint8)
    data[..., 3:5, 3:5] = 255                       # every direct beam at the uint8 maximum
    np.save(tmp_path / "scan.npy", data)
    out = tmp_path / "com.npy"
    assert main(["scalarize", str(tmp_path / "scan.npy"), "--scalarizer", "com", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "6 saturated" in err and "255 counts (the uint8 maximum)" in err and '"saturation"' in err


def test_a_survey_file_is_binned_to_the_scan_grid() -> None:
    image = rsciio(HAADF, "digitalmicrograph")["data"].astype(np.float32)    # 68 x 68 HAADF
    with open_data(str(SI), survey=str(HAADF)) as src:
        survey, origin = src.survey()
    assert survey.shape == (2, 2) and "--survey" in origin
    np.testing.assert_allclose(survey, image.reshape(2, 34, 2, 34).mean(axis=(1, 3)), rtol=1e-6)
    with open_data(str(SI)) as src:                 # no survey: the summed signal
        survey, origin = src.survey()
    np.testing.assert_allclose(survey, np.asarray(src.data).sum(axis=2), rtol=1e-5)


def test_a_zspy_written_by_rosettasciio_opens_navigation_first(tmp_path: pathlib.Path) -> None:
    """HyperSpy's zarr format (.zspy, a folder): the real DM4 SI written by rosettasciio's own writer."""
    from rsciio.zspy import file_writer

    ref = rsciio(SI, "digitalmicrograph")
    ref.update(package_info={"name": "hyperspy", "version": "2.0"}, learning_results={}, models={}, attributes={})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_writer(str(tmp_path / "si.zspy"), ref)
    with open_data(str(tmp_path / "si.zspy")) as src:
        assert src.kind == "spectrum" and src.shape == (2, 2, 2048)
        np.testing.assert_array_equal(np.asarray(src.data), np.transpose(ref["data"], (1, 2, 0)))
        assert src.energy_eV[0] == 300.0 and src.scan_step == pytest.approx((ref["axes"][2]["scale"], "µm"))


def test_a_survey_that_does_not_fit_is_one_line() -> None:
    with pytest.raises(EmedgeError, match="not the scan's 4x8 grid or a whole multiple"):
        open_data(str(MRC), survey=str(HAADF))


@pytest.fixture
def velox(tmp_path: pathlib.Path) -> pathlib.Path:
    """A real Velox EMD (16 x 16 EDS SI stored as Velox's spectrum stream + HAADF + element maps)."""
    import zipfile

    with zipfile.ZipFile(VELOX_ZIP) as z:
        z.extract("Test SI 16x16 215 kx.emd", tmp_path)
    return tmp_path / "Test SI 16x16 215 kx.emd"


def test_a_velox_emd_si_opens_navigation_first_with_its_haadf_as_survey(velox, tmp_path, capsys) -> None:
    signals = rsciio(velox, "emd", index=slice(None))
    [ref] = [s for s in signals if s["data"].ndim == 3]                      # the SI, decoded by rosettasciio
    assert ref["data"].shape == (16, 16, 4096) and ref["axes"][2]["units"] == "keV"
    haadf = next(s["data"] for s in signals if s["metadata"]["General"]["title"] == "HAADF")
    for dataset in (None, "EDS#5", "9"):
        with open_data(str(velox), dataset=dataset) as src:
            assert src.kind == "spectrum" and src.shape == (16, 16, 4096) and src.dtype == np.uint16
            np.testing.assert_array_equal(np.asarray(src.data), ref["data"])
            e = ref["axes"][2]
            np.testing.assert_allclose(src.energy_eV, 1000.0 * (e["offset"] + e["scale"] * np.arange(4096)))
            survey, origin = src.survey()
            np.testing.assert_array_equal(survey, haadf.astype(survey.dtype))
            assert "HAADF" in origin
    out = tmp_path / "c.npy"                                               # C K at 0.28 keV: the richest band
    spec = '{"name": "eels_band_integral", "band_eV": [200, 350]}'
    assert main(["scalarize", str(velox), "--scalarizer", spec, "--out", str(out), "--json"]) == 0
    e = 1000.0 * (ref["axes"][2]["offset"] + ref["axes"][2]["scale"] * np.arange(4096))
    want = ref["data"][..., (e >= 200) & (e <= 350)].astype(np.float64).sum(axis=-1)
    assert want.sum() > 100 and want.max() > 10                            # a map, not zeros
    np.testing.assert_allclose(np.load(out), want, rtol=1e-6)
    capsys.readouterr()
    h5 = tmp_path / "si.h5"
    assert main(["compress", str(velox), str(h5), "--json"]) == 0
    res = _json_tail(capsys.readouterr().out)
    plain = ("import sys, h5py, hdf5plugin, numpy as np\n"
             "a = h5py.File(sys.argv[1], 'r')[sys.argv[2]][()]\n"
             "assert 'emedge_core' not in sys.modules\n"
             "print(a.dtype, a.shape, int(a.astype(np.int64).sum()))\n")
    p = subprocess.run([sys.executable, "-c", plain, str(h5), res["dataset"]], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["uint16", "(16,", "16,", "4096)", str(int(ref["data"].astype(np.int64).sum()))]


# -- Nion Swift items written by nionswift's own storage handlers ------------------------------------------
def _swift_properties(title: str, shape: tuple[int, ...], datum: int, cals: list[tuple[float, float, str]]) -> dict:
    return {"type": "data-item", "title": title, "data_shape": list(shape), "collection_dimension_count":
            len(shape) - datum, "datum_dimension_count": datum, "is_sequence": False,
            "dimensional_calibrations": [{"offset": o, "scale": s, "units": u} for o, s, u in cals],
            "intensity_calibration": {"offset": 0.0, "scale": 1.0, "units": "counts"}, "metadata": {"hardware": 1}}


def _write_swift(path: pathlib.Path, data: np.ndarray, props: dict) -> None:
    from nion.swift.model import HDF5Handler, NDataHandler

    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    handler = (HDF5Handler.HDF5Handler if path.suffix == ".h5" else NDataHandler.NDataHandler)(path)
    handler.write_properties(props, now)
    handler.write_data(data, now)
    handler.close()


@pytest.fixture
def swift_si(tmp_path: pathlib.Path, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    data = rng.poisson(50, (6, 7, 40)).astype(np.float32)
    props = _swift_properties("EELS SI", data.shape, 1, [(0.0, 0.5, "nm"), (0.0, 0.5, "nm"), (-5.0, 0.25, "eV")])
    return data, props


@pytest.mark.parametrize("suffix", [".h5", ".ndata"])
def test_swift_items_keep_their_calibrations_and_properties(tmp_path, swift_si, suffix: str) -> None:
    data, props = swift_si
    path = tmp_path / f"item{suffix}"
    _write_swift(path, data, props)
    with open_data(str(path)) as src:
        assert src.title == "EELS SI" and src.kind == "spectrum" and src.shape == data.shape
        np.testing.assert_array_equal(np.asarray(src.data), data)
        np.testing.assert_allclose(src.energy_eV, -5.0 + 0.25 * np.arange(40))
        assert src.scan_step == (0.5, "nm") and src.properties["swift_properties"]["metadata"] == {"hardware": 1}
    out = tmp_path / "out.h5"
    assert main(["compress", str(path), str(out), "--json"]) == 0
    from emedge_core import emd

    kept = emd.metadata(str(out), "data")
    assert kept["swift_properties"]["dimensional_calibrations"] == props["dimensional_calibrations"]
    dims = emd.info(str(out))["arrays"]["data"]["dims"]
    assert [d["units"] for d in dims] == ["nm", "nm", "eV"] and dims[2]["start"] == -5.0 and dims[2]["step"] == 0.25


def test_a_swift_library_folder_lists_its_items_and_takes_its_image_as_survey(tmp_path, swift_si, rng) -> None:
    data, props = swift_si
    lib = tmp_path / "Nion Swift Library" / "Nion Swift Data 16"
    lib.mkdir(parents=True)
    _write_swift(lib / "si.ndata", data, props)
    haadf = rng.random((12, 14)).astype(np.float32)       # twice the scan grid
    _write_swift(lib / "haadf.h5", haadf, _swift_properties("HAADF", haadf.shape, 2, [(0, 0.25, "nm")] * 2))
    with open_data(str(tmp_path / "Nion Swift Library")) as src:
        assert src.title == "EELS SI" and sorted(s.title for s in src.signals) == ["EELS SI", "HAADF"]
        survey, origin = src.survey()
    assert "HAADF" in origin
    np.testing.assert_allclose(survey, haadf.reshape(6, 2, 7, 2).mean(axis=(1, 3)), rtol=1e-6)
    _write_swift(lib / "si2.ndata", data[::-1].copy(), props | {"title": "second SI"})
    with pytest.raises(EmedgeError, match=r"holds 3 signals; choose one with --dataset NAME\|INDEX: .*second SI"):
        open_data(str(tmp_path / "Nion Swift Library"))
    with open_data(str(tmp_path / "Nion Swift Library"), dataset="second SI") as src:
        np.testing.assert_array_equal(np.asarray(src.data), data[::-1])


# -- scalarize: results against a NumPy reference, checks that hold on real data -------------------------
def test_scalarize_a_dm4_si_against_numpy_and_its_window_is_checked_first(tmp_path, capsys) -> None:
    out = tmp_path / "band.npy"
    spec = '{"name": "eels_band_integral", "band_eV": [400, 600]}'
    assert main(["scalarize", str(SI), "--scalarizer", spec, "--out", str(out), "--json"]) == 0
    ref = rsciio(SI, "digitalmicrograph")
    e = 300.0 + np.arange(2048)
    want = ref["data"][(e >= 400) & (e <= 600)].astype(np.float64).sum(axis=0)     # (y, x)
    np.testing.assert_allclose(np.load(out), want, rtol=1e-6)
    assert _json_tail(capsys.readouterr().out)["dataset"] == "EELS_SI"
    assert main(["scalarize", str(SI), "--scalarizer", "eels_peak_energy", "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "range_eV" in err[0] and "300.0-2347.0 eV" in err[0]
    assert not (tmp_path / "x.npy").exists()


def test_the_saturated_merlin_disk_is_its_plateau_not_the_wings() -> None:
    from emedge_core.scalarize.diffraction import bf_disk

    with open_data(str(MERLIN6)) as src:
        frames = src.frames(0, 8).astype(np.float64)
    mean = frames.mean(axis=0)
    _, _, r = bf_disk(mean)
    full = np.sqrt((mean >= 63).sum() / np.pi)            # pixels saturated in every frame
    assert abs(r - full) < 1.0 and 20 < r < 25            # half maximum over the median gave 41 px
    half = mean > np.median(mean) + 0.5 * (mean.max() - np.median(mean))
    assert np.sqrt(half.sum() / np.pi) > 35               # what the wings do to a plain half-maximum
    for frame in frames:                                  # each frame: its own saturated area
        assert abs(bf_disk(frame)[2] - np.sqrt((frame >= 63).sum() / np.pi)) < 1.5


def test_topspin_disk_is_a_disk_not_a_hot_pixel() -> None:
    from emedge_core.scalarize.diffraction import bf_disk

    with open_data(str(TOPSPIN)) as src:
        mean = src.frames(0, 10).astype(np.float64).mean(axis=0)
    cy, cx, r = bf_disk(mean)
    assert 1.8 < r < 3.0 and mean[int(round(cy)), int(round(cx))] > 0.5 * mean.max()
    hot = mean.copy()
    hot[0, 0] = 50 * mean.max()                           # one hot pixel does not become the disk
    assert bf_disk(hot) == pytest.approx((cy, cx, r))


def test_saturated_merlin_frames_are_flagged_at_63_and_the_option_is_named(tmp_path, capsys) -> None:
    out = tmp_path / "com.npy"
    spec = '{"name": "com", "center": "auto"}'
    assert main(["scalarize", str(MERLIN6), "--scalarizer", spec, "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    assert "8 saturated" in captured.err and '"saturation"' in captured.err and "6-bit" in captured.err
    assert (np.load(str(out)[:-4] + ".reason.npy") == 3).all()
    spec = '{"name": "com", "center": [127.5, 127.5], "saturation": 64}'
    assert main(["scalarize", str(MERLIN6), "--scalarizer", spec, "--out", str(out), "--json"]) == 0
    ref = rsciio(MERLIN6, "quantumdetector")["data"].astype(np.float64)    # CoM by NumPy
    rows, cols = np.indices((256, 256))
    total = ref.sum(axis=(2, 3))
    want = np.stack([(ref * (rows - 127.5)).sum(axis=(2, 3)) / total,
                     (ref * (cols - 127.5)).sum(axis=(2, 3)) / total], axis=-1)
    np.testing.assert_allclose(np.load(out), want, rtol=1e-4, atol=1e-4)      # float32 projections


def test_an_all_empty_arina_scan_warns_and_exits_1(tmp_path, capsys) -> None:
    out = tmp_path / "com.npy"
    assert main(["scalarize", str(ARINA), "--scalarizer", "com", "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    assert "warning" in captured.err and "16 empty" in captured.err
    assert np.isnan(np.load(out)).all() and (np.load(str(out)[:-4] + ".reason.npy") == 2).all()


def test_no_zlp_check_on_a_real_spectrum_without_a_zlp() -> None:
    from emedge_core.consistency import check, zlp_peak
    from emedge_core.instrument import Frames

    with open_data(str(SPECTRUM)) as src:
        spectrum, e = np.asarray(src.data, np.float64), src.energy_eV
    assert e[0] < 0 < e[-1]                                # the axis spans 0 eV: the old check looked there
    assert zlp_peak(spectrum, e) is None and check(Frames(spectrum[None], "spectrum", energy_eV=e), {}) == []
    zlp = spectrum + 1e3 * spectrum.max() * np.exp(-0.5 * ((e - 3.0) / 1.0) ** 2)    # a real ZLP at +3 eV
    [finding] = check(Frames(zlp[None], "spectrum", energy_eV=e), {})
    assert finding.key == "energy_offset_eV" and finding.measured == pytest.approx(3.0, abs=0.5)


# -- compress: every reader gets the values rosettasciio read ---------------------------------------------
READERS = [(SI, "digitalmicrograph", (1, 2, 0)), (MERLIN12, "quantumdetector", None),
           (TOPSPIN, "topspin", None), (PY4DSTEM, "emd", None), (MRC, "mrc", None)]


@pytest.mark.parametrize("path,reader,order", READERS, ids=[r[1] for r in READERS])
def test_compress_round_trip_reads_back_in_plain_h5py_and_rosettasciio(tmp_path, capsys, path, reader, order) -> None:
    ref = rsciio(path, reader)
    want = np.ascontiguousarray(ref["data"] if order is None else np.transpose(ref["data"], order))
    want = want.astype(want.dtype.newbyteorder("="))
    out = tmp_path / "out.h5"
    assert main(["compress", str(path), str(out), "--json"]) == 0
    res = _json_tail(capsys.readouterr().out)
    assert res["lossless"] is True and res["max_abs_error"] == 0.0
    np.save(tmp_path / "want.npy", want)
    plain = ("import sys, h5py, hdf5plugin, numpy as np\n"          # nothing from emedge in this reader
             "f = h5py.File(sys.argv[1], 'r'); a = f[sys.argv[2]][()]; w = np.load(sys.argv[3])\n"
             "assert 'emedge_core' not in sys.modules\n"
             "assert a.dtype == w.dtype and a.shape == w.shape and np.array_equal(a, w), (a.dtype, w.dtype)\n")
    p = subprocess.run([sys.executable, "-c", plain, str(out), res["dataset"], str(tmp_path / "want.npy")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    import hdf5plugin  # noqa: F401  (rosettasciio's EMD reader needs the Blosc2 filter registered)
    from rsciio.emd import file_reader

    [back] = file_reader(str(out))
    assert back["data"].dtype == want.dtype and np.array_equal(np.asarray(back["data"]), want)
    if reader == "digitalmicrograph":
        assert [a["units"] for a in back["axes"]] == ["µm", "µm", "eV"]
        assert back["axes"][2]["offset"] == 300.0 and back["axes"][2]["scale"] == 1.0
    emdfile = pytest.importorskip("emdfile", reason="emdfile (test extra) is not installed")
    array = emdfile.read(str(out))                    # py4DSTEM's reader: the values and the dim vectors
    assert np.array_equal(np.asarray(array.data), want)
    if reader == "digitalmicrograph":
        np.testing.assert_allclose(array.dims[2][:3], [300.0, 301.0, 302.0])
        assert array.dim_units[2] == "eV"


def test_compress_of_a_multi_signal_file_takes_dataset_by_title_or_index(tmp_path, capsys) -> None:
    out = tmp_path / "img.h5"
    assert main(["compress", str(TOPSPIN), str(out), "--dataset", "0", "--json"]) == 0
    import h5py

    with h5py.File(out, "r") as f:
        assert f[_json_tail(capsys.readouterr().out)["dataset"]].shape == (8, 56)
    assert main(["compress", str(TOPSPIN), str(out), "--dataset", "7"]) == 2
    err = capsys.readouterr().err
    assert "--dataset 7" in err and "[1] cb76b58d" in err and "2x5x14x12 diffraction" in err


# -- inspect and run ------------------------------------------------------------------------------------
def test_inspect_lists_signals_axes_and_calibrations_and_survives_a_closed_pipe(capsys) -> None:
    assert main(["inspect", str(SI)]) == 0
    text = capsys.readouterr().out
    assert "EELS_SI: 2x2x2048 spectrum" in text and "sig Energy loss: 2048 x 1 eV from 300" in text
    assert main(["inspect", str(MERLIN6), "--json"]) == 0
    desc = _json_tail(capsys.readouterr().out)
    assert desc["bits"] == 6 and desc["saturation"] == 63 and desc["shape"] == [2, 4, 256, 256]
    p = subprocess.run(f"'{sys.executable}' -m emedge_core inspect '{TOPSPIN}' | head -1", shell=True,
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.count("\n") == 1 and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


def test_run_replay_on_a_real_4d_scan_with_a_small_survey(tmp_path) -> None:
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "emedge_core", "run", "--instrument", "replay", "--data", str(MRC),
                        "--scalarizer", "com_magnitude", "--budget", "8", "--seeds", "4", "--out", str(out),
                        "--json"], capture_output=True, text=True, timeout=300,
                       env=os.environ | {"PYTHONWARNINGS": "ignore"})
    assert p.returncode == 0, p.stderr
    assert "small 4x8 survey" in p.stderr
    summary = _json_tail(p.stdout)
    assert summary["n_measured"] == 8 and summary["patches"]["candidates"] >= 16
    with open_data(str(MRC)) as src:
        frames = src.frames(0, 32).astype(np.float64)
    import h5py

    from emedge_core.emd import value

    with h5py.File(out / "experiment.h5", "r") as f:
        stored, pos = value(f["experiment/frames"]), value(f["experiment/positions"])
    np.testing.assert_array_equal(stored, frames.reshape(4, 8, 4, 8)[pos[:, 0], pos[:, 1]])


def test_scalarize_a_swift_h5_uses_its_energy_calibration_and_writes_the_survey(tmp_path, swift_si, capsys) -> None:
    data, props = swift_si
    _write_swift(tmp_path / "si.h5", data, props)
    haadf = np.arange(12 * 14, dtype=np.float32).reshape(12, 14)
    _write_swift(tmp_path / "haadf.h5", haadf, _swift_properties("HAADF", haadf.shape, 2, [(0, 0.25, "nm")] * 2))
    out = tmp_path / "map.npy"
    spec = '{"name": "eels_band_integral", "band_eV": [0, 2]}'        # channels 20..28 of -5 + 0.25 i
    assert main(["scalarize", str(tmp_path / "si.h5"), "--survey", str(tmp_path / "haadf.h5"), "--scalarizer", spec,
                 "--out", str(out), "--json"]) == 0
    summary = _json_tail(capsys.readouterr().out)
    np.testing.assert_allclose(np.load(out), data[..., 20:29].astype(np.float64).sum(axis=2), rtol=1e-6)
    np.testing.assert_allclose(np.load(summary["survey"]), haadf.reshape(6, 2, 7, 2).mean(axis=(1, 3)))


def test_an_emd_file_emedge_wrote_is_read_lazily_unless_only_emedge_can_decode_it(tmp_path) -> None:
    import h5py

    from emedge_core import emd

    cube = np.random.default_rng(5).poisson(1, (4, 6, 16, 16)).astype(np.uint16)
    emd.write(str(tmp_path / "plain.h5"), {"data": cube})                        # auto: any reader decodes it
    emd.write(str(tmp_path / "delta.h5"), {"data": cube}, codec="delta+blosc2")  # opt-in: needs emedge's inverse
    with open_data(str(tmp_path / "plain.h5")) as src:
        assert isinstance(src.data, h5py.Dataset) and src.nav_shape == (4, 6)
        np.testing.assert_array_equal(src.frames(6, 18), cube.reshape(24, 16, 16)[6:18])
    with open_data(str(tmp_path / "delta.h5")) as src:
        assert isinstance(src.data, np.ndarray)
        np.testing.assert_array_equal(src.data, cube)
