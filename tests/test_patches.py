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
