import numpy as np
import pytest

from emedge_core.scalarize import from_spec
from emedge_core.twin import DigitalTwin, TwinSpec


def test_seeded_and_shaped():
    a, b = DigitalTwin(seed=3, size=64), DigitalTwin(seed=3, size=64)
    np.testing.assert_array_equal(a.survey().image, b.survey().image)
    pos = np.array([[10, 10], [30, 40]])
    np.testing.assert_array_equal(a.measure(pos).data, b.measure(pos).data)
    assert a.survey().image.shape == (64, 64)
    f = a.measure(pos)
    assert f.data.shape == (2, 512) and f.energy_eV.shape == (512,)
    d = DigitalTwin(seed=3, size=64, signal="diffraction", detector=24).measure(pos)
    assert d.data.shape == (2, 24, 24) and d.mrad_per_px > 0


def test_poisson_noise_at_the_dose():
    twin = DigitalTwin(seed=0, size=64, dose=1e4)
    pos = np.array([[30, 20]] * 200)
    f = twin.measure(pos).data
    clean = twin.truth_frames(pos[:1]).data[0]
    assert abs(f.sum(1).mean() - 1e4) < 50
    ch = int(np.argmax(clean))
    assert abs(f[:, ch].var() / clean[ch] - 1) < 0.3       # Poisson: variance = mean


def test_defects_raise_the_plasmon_energy_and_the_field():
    twin = DigitalTwin(seed=1)
    energy = twin.truth(from_spec("eels_peak_energy"))
    sites = twin.defect_sites
    assert len(sites) == 10
    bulk = np.median(energy[twin.thickness > 0])
    assert np.all(energy[sites[:, 0], sites[:, 1]] > bulk + 3.0)
    dtwin = DigitalTwin(seed=1, signal="diffraction")
    com = dtwin.truth(from_spec("com_magnitude"))
    ring = np.hypot(*np.mgrid[-8:9, -8:9]) < 8
    near = np.array([com[r - 8:r + 9, c - 8:c + 9][ring].max() for r, c in sites if 8 <= r < 120 and 8 <= c < 120])
    assert np.median(near) > 2 * np.median(com[dtwin.thickness > 0])


def test_vacuum_has_no_plasmon():
    twin = DigitalTwin(seed=0)
    r, c = np.argwhere(twin.thickness == 0)[0]
    spec = twin.truth_frames(np.array([[r, c]])).data[0]
    e = twin.energy_eV
    assert spec[(e > 10) & (e < 30)].sum() < 1e-6 * spec.sum()


@pytest.mark.parametrize("knobs", [{"size": 8}, {"signal": "x"}, {"dose": 0}, {"defects": -1}])
def test_bad_knobs(knobs):
    with pytest.raises(ValueError):
        TwinSpec(**knobs)


def test_positions_outside_are_refused():
    with pytest.raises(ValueError, match="outside"):
        DigitalTwin(size=32).measure(np.array([[0, 40]]))
