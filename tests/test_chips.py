"""Chips: band presets, NDVI from the cube, normalisation on training sites, splits, D4."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from dask.callbacks import Callback
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- chips that cover the cube, rare classes drawn, splits without leakage -----------------


def _synthetic(h=438, w=423, rare=None):
    """A one-period cube of random reflectance and labels everywhere (vegetation), with a
    rare class in a small square if asked."""
    import rioxarray  # noqa: F401
    import xarray as xr

    rng = np.random.default_rng(0)
    coords = {"time": np.array(["2023-01-01"], "datetime64[ns]"),
              "band": ["red", "green", "blue", "nir"],
              "y": 5e6 - 10 * np.arange(h), "x": 5e5 + 10 * np.arange(w)}  # fmt: skip
    values = rng.uniform(0, 0.3, (1, 4, h, w)).astype("float32")
    cube = xr.Dataset({"reflectance": (("time", "band", "y", "x"), values),
                       "valid_count": (("time", "y", "x"), np.ones((1, h, w), "int16"))},
                      coords=coords).rio.write_crs("EPSG:32633")  # fmt: skip
    label = np.full((h, w), DEFAULT_CLASSES["vegetation"].id, "uint8")
    if rare is not None:
        label[rare] = DEFAULT_CLASSES["tailings"].id
    label = xr.DataArray(label, dims=("y", "x"), coords={"y": coords["y"], "x": coords["x"]},
                         attrs=DEFAULT_CLASSES.cf_attrs())  # fmt: skip
    return cube, label


@pytest.mark.parametrize("overlap", [0, 48])
def test_chips_cover_every_labelled_pixel_of_the_cube(overlap):
    cube, label = _synthetic()
    data = ChipDataset({"s": cube}, {"s": label}, bands="rgbn", input_dims={"y": 128, "x": 128},
                       input_overlap={"y": overlap, "x": overlap})  # fmt: skip
    seen = np.zeros((438, 423), bool)
    for row in data.chips.itertuples():
        seen[row.y0 : row.y0 + 128, row.x0 : row.x0 + 128] = True
    assert seen.all()  # xbatcher's grid alone covers 79.6 % of a 438 × 423 cube with 0 overlap
    assert (data.chips.y0.max(), data.chips.x0.max()) == (438 - 128, 423 - 128)
    edge = data.chips[data.chips.chip < 0].iloc[0]
    item = data[int(edge.name)]
    assert item["image"].shape == (4, 128, 128)
    expected = data.norm.apply(cube.reflectance.values[0])[:, edge.y0 : edge.y0 + 128,
                                                           edge.x0 : edge.x0 + 128]  # fmt: skip
    np.testing.assert_array_equal(item["image"].numpy(), expected)
    assert data.labelled_fraction == 1.0


def test_a_balanced_sampler_draws_chips_of_rare_classes_more_often():
    cube, label = _synthetic(rare=(slice(0, 40), slice(0, 40)))
    data = ChipDataset({"s": cube}, {"s": label}, bands="rgbn", input_dims={"y": 64, "x": 64})
    tailings = DEFAULT_CLASSES.names.index("tailings")
    holds = np.array([px[tailings] > 0.01 * px.sum() for px in data.chips.class_px])
    draws = list(data.sampler("balanced", seed=3))
    assert draws == list(data.sampler("balanced", seed=3))  # seeded
    assert holds.mean() < 0.05  # one chip of 36
    assert holds[draws].mean() > 0.3  # drawn about as often as vegetation-only chips
    with pytest.raises(ValueError, match="sampler='rare' is not one of"):
        data.sampler("rare")


def test_overlapping_real_patches_stay_on_one_side_of_a_split(patches):
    import warnings

    from minecube.chips import LeakageWarning, leaks, site_groups
    from minecube.sites import from_items

    sites = from_items(patches)
    ids = list(sites.site_id)
    with pytest.warns(LeakageWarning, match=rf"train '{ids[0]}' ~ test '{ids[1]}'"):
        split = split_sites(sites, test=[ids[1]], val=0)
    assert leaks(split, sites) == [("train", ids[0], ids[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert site_groups(sites) == {ids[0]: ids[0], ids[1]: ids[0]}
        with pytest.raises(ValueError, match="take every site"):
            split_sites(sites, test=[ids[1]], val=0, buffer_m=0)


@settings(max_examples=40, deadline=None)
@given(
    boxes=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=4, max_size=14),
    seed=st.integers(0, 10_000),
    buffer_m=st.sampled_from([0.0, 500.0, 3000.0]),
)
def test_grouped_splits_are_disjoint_complete_and_never_split_a_group(boxes, seed, buffer_m):
    import warnings

    import geopandas as gpd
    from shapely.geometry import box

    from minecube.chips import site_groups

    # 1 km squares on a 1 km lattice near 27.8° E, -26.2° (some touch, some overlap)
    step = 0.01
    geoms = [box(27.8 + i * step, -26.2 + j * step, 27.8 + (i + 1.2) * step,
                 -26.2 + (j + 1.2) * step) for i, j in boxes]  # fmt: skip
    sites = gpd.GeoDataFrame({"site_id": [f"s{k}" for k in range(len(geoms))]}, geometry=geoms,
                             crs=4326)  # fmt: skip
    groups = site_groups(sites, buffer_m=buffer_m)
    if len(set(groups.values())) < 3:
        return  # too few groups for a three-way split
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leakage warning: groups are kept together
        split = split_sites(sites, test=1, val=1, seed=seed, buffer_m=buffer_m)
    parts = [split.train, split.val, split.test]
    assert sorted(s for p in parts for s in p) == sorted(sites.site_id)
    assert all(len(p) for p in parts)
    side = {s: k for k, p in enumerate(parts) for s in p}
    for site, group in groups.items():
        assert side[site] == side[group]


@given(
    n=st.integers(3, 12),
    labels=st.lists(st.integers(0, 3), min_size=12, max_size=12),
    test=st.integers(0, 2),
    val=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=300, deadline=None)
def test_split_sites_is_disjoint_complete_and_keeps_groups_whole(n, labels, test, val, seed):
    """Over many seeds and groupings: every site in exactly one part, no group across parts,
    at least the sites asked for (whole groups may add more), and the same seed, the same split."""
    ids = [f"s{k}" for k in range(n)]
    groups = {s: f"g{g}" for s, g in zip(ids, labels, strict=False)}
    refused = None
    try:
        split = split_sites(ids, test=test, val=val, seed=seed, groups=groups)
    except ValueError as error:  # the groups asked for leave no training site: said so
        refused = str(error)
    if refused is not None:
        assert "no training site" in refused or "take every site" in refused
        return
    parts = (split.train, split.val, split.test)
    assert sorted(itertools.chain(*parts)) == sorted(ids)
    assert sum(map(len, parts)) == n
    for a, b in itertools.combinations(parts, 2):
        assert not {groups[s] for s in a} & {groups[s] for s in b}
    assert len(split.test) >= test
    assert len(split.val) >= val
    assert split.train
    assert split == split_sites(ids, test=test, val=val, seed=seed, groups=groups)


def test_the_eight_d4_views_move_image_and_mask_as_written_out_by_hand():
    from minecube.chips import _d4

    a = np.arange(9).reshape(3, 3)
    views = [  # k quarter turns counter-clockwise, then (k >= 4) mirrored left to right
        [[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[2, 5, 8], [1, 4, 7], [0, 3, 6]],
        [[8, 7, 6], [5, 4, 3], [2, 1, 0]], [[6, 3, 0], [7, 4, 1], [8, 5, 2]],
        [[2, 1, 0], [5, 4, 3], [8, 7, 6]], [[8, 5, 2], [7, 4, 1], [6, 3, 0]],
        [[6, 7, 8], [3, 4, 5], [0, 1, 2]], [[0, 3, 6], [1, 4, 7], [2, 5, 8]],
    ]  # fmt: skip
    image = np.stack([a, 100 + a])  # (channel, y, x)
    periods = np.stack([image, 1000 + image])  # (time, channel, y, x)
    for k, view in enumerate(views):
        turned, mask = _d4(image, a, k)
        np.testing.assert_array_equal(turned, [view, 100 + np.array(view)])
        np.testing.assert_array_equal(mask, view)
        assert turned.flags.c_contiguous
        assert mask.flags.c_contiguous
        turned, _ = _d4(periods, a, k)
        np.testing.assert_array_equal(turned[1, 1], 1100 + np.array(view))


def test_normalisation_is_the_mean_and_spread_of_every_valid_pixel():
    from minecube.chips import _fit_normalisation

    rng = np.random.default_rng(4)
    first = rng.normal([[[0.1]], [[0.3]]], 0.05, (3, 2, 4, 5))  # (time, channel, y, x)
    second = rng.normal([[[0.2]], [[0.5]]], 0.1, (2, 2, 3, 3))
    first[0, 0, :2] = np.nan  # holes in one band only
    second[1, 1, 1, 1] = np.nan
    norm = _fit_normalisation([first, second], ("red", "nir"))
    values = [np.concatenate([first[:, c].ravel(), second[:, c].ravel()]) for c in (0, 1)]
    assert norm.bands == ("red", "nir")
    assert norm.mean == tuple(np.round([np.nanmean(v) for v in values], 6))
    assert norm.std == tuple(np.round([np.nanstd(v) + 1e-6 for v in values], 6))
    empty = np.full((1, 2, 2, 2), np.nan)
    empty[:, 0] = 1.0
    whole = r"^no valid pixels for bands \['red', 'nir'\] in the training cubes$"
    with pytest.raises(ValueError, match=whole):
        _fit_normalisation([empty], ("red", "nir"))


def test_spatial_blocks_group_sites_whose_centres_share_a_block():
    import geopandas as gpd
    from shapely.geometry import box

    from minecube.chips import site_groups

    # EASE-Grid 2.0 near the equator: x = 6378137 m × lon (rad) × cos 30°, so 0.1° ≈ 9.6 km,
    # 0.2° ≈ 19.3 km, 0.6° ≈ 57.8 km; y > 0 just north of the equator, < 0 just south
    corners = {"a": (0.1, 0.05), "b": (0.2, 0.05), "c": (0.6, 0.05), "d": (0.1, -0.05)}
    squares = [box(x, y, x + 0.001, y + 0.001) for x, y in corners.values()]
    table = gpd.GeoDataFrame({"site_id": list(corners)}, geometry=squares, crs=4326)
    assert site_groups(table, buffer_m=None, block_m=50_000) == {
        "a": "a", "b": "a", "c": "c", "d": "d"
    }  # fmt: skip
    assert site_groups(table, buffer_m=None, block_m=5_000) == {s: s for s in corners}
    assert site_groups(table, buffer_m=None) == {s: s for s in corners}
    assert set(site_groups(table, block_m=1e7).values()) == {"a", "d"}  # north and south
    with pytest.raises(ValueError, match=r"^block_m=0 must be a positive length in metres$"):
        site_groups(table, block_m=0)
