"""Building blocks of the synthetic scenes: SCL aggregation, encoding, shapes and clouds."""

from __future__ import annotations

import numpy as np
import pytest

from minecube.demo import scene


def test_scl_to_20m_keeps_the_most_restrictive_code():
    scl10 = np.array(
        [
            [4, 4, 5, 9, 6, 6],
            [4, 3, 5, 5, 6, 0],
        ],
        "uint8",
    )
    np.testing.assert_array_equal(scene.scl_to_20m(scl10), [[3, 9, 0]])


def test_encoding_follows_the_l2a_offset_and_marks_nodata():
    refl = np.array([[[0.0, 0.25], [1.0, np.inf]]], "float32")
    valid = np.array([[True, True], [True, False]])
    dn = scene.encode_reflectance(refl, valid)
    np.testing.assert_array_equal(dn, [[[1000, 3500], [11000, 0]]])
    np.testing.assert_allclose(dn[0, 0, :2] * 1e-4 - 0.1, [0.0, 0.25], atol=1e-6)


def test_grown_blobs_contain_the_smaller_ones():
    rng = np.random.default_rng(1)
    blob = scene._random_blob(rng, 50, 50, 20)
    yy, xx = np.mgrid[0:100, 0:100].astype("float32")
    small = blob.normalised_radius(yy, xx, 1.0) <= 1
    large = blob.normalised_radius(yy, xx, 1.3) <= 1
    assert small.sum() > 800
    assert not (small & ~large).any()


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.6, 1.0])
def test_cloud_cover_matches_the_drawn_fraction(fraction):
    rng = np.random.default_rng(3)
    mine = scene.MineSite((128, 128), (24, 24, 80), "gold", "tropical", False, seed=5)
    _, scl = mine.observe(mine.class_map(0), 180.0, fraction, rng)
    cloudy = np.isin(scl, (8, 9)).mean()
    assert cloudy == pytest.approx(fraction, abs=0.1)


def test_vegetation_follows_the_season_of_its_hemisphere():
    north = scene.MineSite((96, 96), (8, 8, 80), "coal", "temperate", False, seed=2)
    south = scene.MineSite((96, 96), (8, 8, 80), "coal", "temperate", True, seed=2)
    assert north.greenness(196) > 0.99
    assert north.greenness(15) < 0.05
    assert south.greenness(15) > 0.99


def test_draw_cloud_fraction_is_mostly_clear_sometimes_overcast():
    rng = np.random.default_rng(0)
    draws = np.array([scene.draw_cloud_fraction(rng) for _ in range(2000)])
    assert 0.35 < (draws == 0).mean() < 0.55
    assert 0.03 < (draws == 1).mean() < 0.15
