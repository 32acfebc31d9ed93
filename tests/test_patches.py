import numpy as np
import pytest

from emedge_core import EmedgeError
from emedge_core.patches import make_patches


def test_restrict_counts_and_centres(rng):
    img = rng.random((128, 128)).astype(np.float32)
    p = make_patches(img, 16)
    assert len(p) == 113 * 113 == 12769
    assert p.features.shape == (12769, 256) and p.features.dtype == np.float32
    # candidate (r, c) holds rows r-8 .. r+7 of the normalised survey
    norm = (img - img.mean()) / img.std()
    i = int(p.index[40, 70])
    assert tuple(p.coords[i]) == (40, 70)
    np.testing.assert_allclose(p.features[i].reshape(16, 16), norm[32:48, 62:78], rtol=1e-5)
    assert p.index[7, 50] == -1 and p.index[121, 50] == -1 and p.index[8, 8] >= 0 and p.index[120, 120] >= 0


def test_reflect_covers_every_pixel(rng):
    img = rng.random((20, 30))
    p = make_patches(img, 5, mode="reflect")
    assert len(p) == 600
    assert (p.index >= 0).all()
    np.testing.assert_array_equal(p.lookup(np.array([[0, 0], [19, 29]])), p.index[[0, 19], [0, 29]])


def test_available_mask_and_to_map(rng):
    img = rng.random((32, 32))
    mask = np.zeros((32, 32), bool)
    mask[10:12, 10:15] = True
    p = make_patches(img, 8, available=mask)
    assert len(p) == 10
    m = p.to_map(np.arange(10.0))
    assert np.isnan(m[0, 0]) and m[10, 10] == 0 and m[11, 14] == 9


@pytest.mark.parametrize("image,window,mode,msg", [
    (np.zeros((10, 10)), 11, "restrict", "does not fit"),
    (np.zeros((10, 10)), 3, "wrap", "patch mode"),
    (np.zeros((10,)), 3, "restrict", "2-D"),
    (np.full((10, 10), np.nan), 3, "restrict", "NaN"),
])
def test_bad_input(image, window, mode, msg):
    with pytest.raises(EmedgeError, match=msg):
        make_patches(image, window, mode)


# -- small scans: defaults that adapt, limits that name the option ----------------------------------
def test_a_49x6_si_gets_a_window_that_leaves_most_of_the_scan_a_candidate(rng):
    from emedge_core.patches import fit_to_survey, n_candidates

    choice = fit_to_survey((49, 6), 16, 16)
    assert (choice.window, choice.mode, choice.components) == (3, "restrict", 9)
    assert choice.candidates == n_candidates((49, 6), 3) == 47 * 4 == 188 and 188 / 294 > 0.5
    assert "--window 3" in choice.note and "--components 9" in choice.note and "188 of 294" in choice.note
    p = make_patches(rng.random((49, 6)), choice.window, choice.mode, components=choice.components)
    assert len(p) == 188 and p.features.shape == (188, 9)
    assert fit_to_survey((128, 128), 16, 16).note == ""           # a normal survey keeps the defaults


def test_a_tiny_survey_goes_to_reflect_and_given_options_are_kept_or_refused():
    from emedge_core.patches import fit_to_survey

    tiny = fit_to_survey((4, 4), 16, 16)
    assert tiny.mode == "reflect" and tiny.window == 4 and tiny.candidates == 16 and "--patch-mode reflect" in tiny.note
    kept = fit_to_survey((49, 6), 5, 4, "reflect", fixed=(True, True, True))
    assert (kept.window, kept.mode, kept.components, kept.candidates, kept.note) == (5, "reflect", 4, 294, "")
    with pytest.raises(EmedgeError, match=r"--components 16 is more than the 9 .* use at most 9"):
        fit_to_survey((49, 6), 3, 16, fixed=(True, True, False))
    with pytest.raises(EmedgeError, match=r"--window 8 does not fit the 49x6 survey.*--patch-mode reflect"):
        fit_to_survey((49, 6), 8, 16, fixed=(True, False, True))
    with pytest.raises(EmedgeError, match="--components must be between 1 and 9"):
        make_patches(np.random.default_rng(0).random((49, 6)), 3, components=16)


def test_run_on_a_49x6_si_adapts_and_says_so(tmp_path, rng):
    import json
    import subprocess
    import sys

    e = np.linspace(-5, 60, 80)
    peak = 20 + 10 * rng.random((49, 6))
    data = 100 * np.exp(-0.5 * ((e - peak[..., None]) / 2) ** 2) + rng.poisson(5, (49, 6, 80))
    np.savez(tmp_path / "si.npz", data=data.astype(np.float32), energy_eV=e)
    cmd = [sys.executable, "-m", "emedge_core", "run", "--instrument", "replay", "--data", str(tmp_path / "si.npz"),
           "--budget", "12", "--seeds", "4", "--out", str(tmp_path / "o"), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "small 49x6 survey: chose --window 3 --components 9" in p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["patches"] == {"window": 3, "mode": "restrict", "components": 9, "candidates": 188,
                                  "note": summary["patches"]["note"]}
    bad = subprocess.run(cmd[:-3] + ["--scalarizer", '{"name": "eels_peak_energy", "range_eV": [100, 200]}',
                                     "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "range_eV=100-200 eV holds no channel" in bad.stderr
    assert not (tmp_path / "bad").exists()                     # checked before anything was measured
