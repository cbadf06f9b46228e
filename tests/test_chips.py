"""Chips: band presets, NDVI from the cube, normalisation on training sites, splits, D4."""

from __future__ import annotations

import numpy as np
import pytest
from dask.callbacks import Callback

from minecube.chips import (
    PRESETS,
    BandError,
    ChipDataset,
    SiteSplit,
    features,
    hold_out,
    normalisation,
    resolve_bands,
    split_sites,
)
from minecube.classes import DEFAULT_CLASSES, IGNORE_INDEX
from tests.conftest import subset

DIMS = {"y": 64, "x": 64}
TRAIN = ["pilbara-iron", "kalimantan-coal"]


@pytest.fixture(scope="module")
def chips(lab):
    return ChipDataset(*subset(lab, TRAIN), bands="rgbn+ndvi", input_dims=DIMS)


def test_presets_and_ndvi_computed_from_the_cube(lab):
    assert resolve_bands("rgbn") == ("red", "green", "blue", "nir")
    assert set(PRESETS) == {"rgb", "rgbn", "ndvi", "rgb+ndvi", "rgbn+ndvi"}
    cube = lab["cubes"]["hunter-coal"]
    x = features(cube, "rgb+ndvi")
    assert list(x.channel.values) == ["red", "green", "blue", "ndvi"]
    np.testing.assert_allclose(x.sel(channel="ndvi"), cube.ndvi, rtol=1e-6)
    np.testing.assert_array_equal(x.sel(channel="red"), cube.reflectance.sel(band="red"))
    with pytest.raises(BandError, match="unknown band preset 'rgbnir'"):
        resolve_bands("rgbnir")
    no_nir = cube.sel(band=["red", "green", "blue"])
    with pytest.raises(BandError, match=r"need \['nir'\].*the cube has bands \['red'"):
        features(no_nir, "rgb+ndvi")


def test_chips_are_the_normalised_cube_window_with_its_labels(lab, chips):
    norm = chips.norm
    assert norm == normalisation([lab["cubes"][s] for s in TRAIN], "rgbn+ndvi")
    for index in (0, len(chips) // 2, len(chips) - 1):
        row, item = chips.chips.iloc[index], chips[index]
        cube, label = lab["cubes"][row.site_id], lab["labels"][row.site_id]
        window = {"time": int(np.flatnonzero(cube.time.values == np.datetime64(row.time))[0])}
        window |= {"y": slice(row.y0, row.y0 + 64), "x": slice(row.x0, row.x0 + 64)}
        x = features(cube, "rgbn+ndvi").isel(window).values
        expected = np.nan_to_num(
            (x - np.reshape(norm.mean, (5, 1, 1))) / np.reshape(norm.std, (5, 1, 1))
        )
        np.testing.assert_allclose(item["image"].numpy(), expected, rtol=1e-5, atol=1e-5)
        target = DEFAULT_CLASSES.to_index(label.isel(window).values)
        target[~np.isfinite(x).all(axis=0)] = IGNORE_INDEX
        np.testing.assert_array_equal(item["mask"].numpy(), target)
        assert item["image"].shape == (5, 64, 64)
        assert item["mask"].dtype.is_floating_point is False


def test_normalisation_is_fitted_on_the_training_sites_only(lab, chips):
    everything = normalisation(list(lab["cubes"].values()), "rgbn+ndvi")
    assert chips.norm != everything
    val = ChipDataset(*subset(lab, ["hunter-coal"]), bands="rgbn+ndvi", input_dims=DIMS,
                      norm=chips.norm)  # fmt: skip
    assert val.norm is chips.norm
    with pytest.raises(BandError, match="norm is for bands"):
        ChipDataset(*subset(lab, ["hunter-coal"]), bands="rgb", input_dims=DIMS, norm=chips.norm)


def test_chips_with_too_few_labelled_pixels_are_dropped(lab):
    loose = ChipDataset(*subset(lab, TRAIN), input_dims=DIMS, min_valid=0.0)
    strict = ChipDataset(*subset(lab, TRAIN), input_dims=DIMS, min_valid=0.95)
    assert len(strict) < len(loose)
    assert (strict.chips.valid_fraction >= 0.95).all()
    assert (loose.chips.valid_fraction < 0.95).any()


def _draw(aug, plain, index):
    """Which of the 8 D4 symmetries turned the plain chip into the augmented one."""
    from minecube.chips import _d4

    a, p = aug[index], plain[index]
    found = []
    for k in range(8):
        image, mask = _d4(p["image"].numpy(), p["mask"].numpy(), k)
        if np.array_equal(image, a["image"].numpy()) and np.array_equal(mask, a["mask"].numpy()):
            found.append(k)
    assert found, "the augmented chip is not a D4 image of the original"
    return found[0]


def test_d4_moves_image_and_mask_together_and_is_reproducible(lab):
    plain = ChipDataset(*subset(lab, TRAIN), input_dims=DIMS)
    aug = ChipDataset(*subset(lab, TRAIN), input_dims=DIMS, augment=True, seed=3)
    first = [_draw(aug, plain, i) for i in range(16)]
    assert len(set(first)) > 2
    assert first == [_draw(aug, plain, i) for i in range(16)]  # same epoch, same draws
    aug.set_epoch(1)
    assert first != [_draw(aug, plain, i) for i in range(16)]


def test_a_lazy_cube_is_read_once_not_per_chip(world, lab):
    from minecube.cube import open_cube

    lazy = {s: open_cube(lab["store"], s) for s in TRAIN}
    assert lazy[TRAIN[0]].reflectance.chunks is not None

    class Count(Callback):
        calls = 0

        def _start(self, dsk):
            Count.calls += 1

    with Count():
        data = ChipDataset(lazy, subset(lab, TRAIN)[1], input_dims=DIMS)
        built = Count.calls
        for i in range(len(data)):
            data[i]
    assert Count.calls == built  # no dask computation while chips are served
    assert built == len(TRAIN)  # one read per site, for both statistics and chips


def test_splits_are_by_site(lab):
    sites = lab["sites"]
    split = split_sites(sites, test=2, val=1, seed=1)
    assert len(split.test) == 2
    assert len(split.val) == 1
    assert len(split.train) == 5
    assert split == split_sites(sites, test=2, val=1, seed=1)
    arid = hold_out(sites, climate="arid", val=["hunter-coal"])
    assert set(arid.test) == set(sites.site_id[sites.climate == "arid"])
    assert "hunter-coal" in arid.val
    assert not set(arid.train) & set(arid.test)
    gold = hold_out(sites, commodity="gold", val=0)
    assert set(gold.test) == {"ashanti-gold", "bodaibo-gold"}
    with pytest.raises(ValueError, match="no site has climate 'polar'"):
        hold_out(sites, climate="polar")
    with pytest.raises(ValueError, match="more than one part"):
        SiteSplit(("a",), ("a",), ())
    with pytest.raises(ValueError, match=r"test sites \['nowhere'\] are not among"):
        split_sites(sites, test=["nowhere"])
