import h5py
import numpy as np
import pytest

from emedge_core import EmedgeError
from emedge_core.replay import Replay


@pytest.fixture
def spectra(rng):
    survey = rng.random((12, 10)).astype(np.float32)
    data = rng.poisson(50, size=(12, 10, 64)).astype(np.float32)
    energy = np.linspace(-5, 58, 64)
    return survey, data, energy


def test_npz_and_hdf5_give_the_same_frames(tmp_path, spectra):
    survey, data, energy = spectra
    np.savez(tmp_path / "a.npz", survey=survey, data=data, energy_eV=energy)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["survey"], f["data"], f["energy_eV"] = survey, data, energy
    pos = np.array([[0, 0], [11, 9], [5, 3]])
    for name in ("a.npz", "a.h5"):
        r = Replay(str(tmp_path / name))
        assert r.signal_kind == "spectrum" and r.available() is None
        np.testing.assert_array_equal(r.survey().image, survey)
        fr = r.measure(pos)
        np.testing.assert_array_equal(fr.data, data[pos[:, 0], pos[:, 1]])
        np.testing.assert_array_equal(fr.energy_eV, energy)


def test_diffraction(tmp_path, rng):
    np.savez(tmp_path / "d.npz", survey=rng.random((4, 5)), data=rng.random((4, 5, 8, 8)))
    r = Replay(str(tmp_path / "d.npz"))
    assert r.signal_kind == "diffraction"
    assert r.measure(np.array([[3, 4]])).data.shape == (1, 8, 8)


@pytest.mark.parametrize("arrays,msg", [
    ({"data": np.zeros((4, 5, 8))}, "no 'energy_eV'"),
    ({"survey": np.zeros((4, 5))}, "no 'data'"),
    ({"survey": np.zeros(4), "data": np.zeros((4, 5, 8))}, "2-D"),
    ({"survey": np.zeros((4, 5)), "data": np.zeros((4, 6, 8)), "energy_eV": np.zeros(8)}, "shape"),
    ({"survey": np.zeros((4, 5)), "data": np.zeros((4, 5, 8))}, "energy_eV"),
    ({"survey": np.zeros((4, 5)), "data": np.zeros((4, 5, 8)), "energy_eV": np.zeros(7)}, "channels"),
])
def test_bad_files(tmp_path, arrays, msg):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(EmedgeError, match=msg):
        Replay(str(tmp_path / "bad.npz"))


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(EmedgeError, match="not found"):
        Replay(str(tmp_path / "nope.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(EmedgeError, match="HDF5"):
        Replay(str(tmp_path / "junk.h5"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(EmedgeError, match="npz"):
        Replay(str(tmp_path / "junk.npz"))


def test_a_file_without_survey_replays_on_the_summed_signal(tmp_path, rng):
    data = rng.random((4, 5, 8)).astype(np.float32)
    np.savez(tmp_path / "nosurvey.npz", data=data, energy_eV=np.arange(8.0))
    r = Replay(str(tmp_path / "nosurvey.npz"))
    np.testing.assert_allclose(r.survey().image, data.sum(axis=2), rtol=1e-6)
    assert "summed" in r.survey_from
    np.testing.assert_array_equal(r.measure(np.array([[3, 4]])).data[0], data[3, 4])
