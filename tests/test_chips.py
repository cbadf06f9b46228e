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
from tests.conftest import refused, subset

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


def _synthetic(h=438, w=423, rare=None, *, periods=1, label=None):
    """A cube of random reflectance on a 10 m UTM grid and its class raster: vegetation
    everywhere (or ``label``, 0 unlabelled), with a rare class in a small square if asked."""
    import rioxarray  # noqa: F401
    import xarray as xr

    rng = np.random.default_rng(0)
    quarters = np.arange(periods) * np.timedelta64(90, "D")
    coords = {"time": np.datetime64("2023-01-01", "ns") + quarters,
              "band": ["red", "green", "blue", "nir"],
              "y": 5e6 - 10 * np.arange(h), "x": 5e5 + 10 * np.arange(w)}  # fmt: skip
    values = rng.uniform(0, 0.3, (periods, 4, h, w)).astype("float32")
    cube = xr.Dataset({"reflectance": (("time", "band", "y", "x"), values),
                       "valid_count": (("time", "y", "x"), np.ones((periods, h, w), "int16"))},
                      coords=coords).rio.write_crs("EPSG:32633")  # fmt: skip
    if label is None:
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
    with pytest.warns(LeakageWarning, match=rf"train '{ids[0]}' ~ test '{ids[1]}'") as caught:
        split = split_sites(sites, test=[ids[1]], val=0)
    assert [w.filename for w in caught if w.category is LeakageWarning] == [__file__]
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
    # 0.05° ≈ 6.4 km north, 0.3° ≈ 38 km: one 50 km row of blocks, two rows of 20 km
    corners = {"a": (0.1, 0.05), "b": (0.2, 0.05), "c": (0.6, 0.05), "d": (0.1, -0.05),
               "e": (0.1, 0.3)}  # fmt: skip
    squares = [box(x, y, x + 0.001, y + 0.001) for x, y in corners.values()]
    table = gpd.GeoDataFrame({"site_id": list(corners)}, geometry=squares, crs=4326)
    assert site_groups(table, buffer_m=None, block_m=50_000) == {
        "a": "a", "b": "a", "c": "c", "d": "d", "e": "a"
    }  # fmt: skip
    assert site_groups(table, buffer_m=None, block_m=20_000) == {
        "a": "a", "b": "a", "c": "c", "d": "d", "e": "e"
    }  # fmt: skip
    assert site_groups(table, buffer_m=None, block_m=5_000) == {s: s for s in corners}
    assert site_groups(table, buffer_m=None, block_m=1) == {s: s for s in corners}
    split = split_sites(table, test=["a"], val=0, block_m=50_000)
    assert split == SiteSplit(("c", "d"), (), ("a", "b", "e"))
    assert site_groups(table, buffer_m=None) == {s: s for s in corners}
    assert set(site_groups(table, block_m=1e7).values()) == {"a", "d"}  # north and south
    with pytest.raises(ValueError, match=r"^block_m=0 must be a positive length in metres$"):
        site_groups(table, block_m=0)


# --- the chip grid, the dataset's records, the sampler's weights: worked out by hand --------

VEG = DEFAULT_CLASSES.names.index("vegetation")  # its model index


@pytest.mark.parametrize(
    ("h", "overlap", "rows", "edge_row", "columns", "edge_column"),
    [  # 40² chips; xbatcher steps by 40 - overlap and stops where a whole chip no longer fits
        (99, 10, [0, 30], [59], [0, 30], [50]),
        (100, 10, [0, 30, 60], [], [0, 30], [50]),
        (99, 0, [0, 40], [59], [0, 40], [50]),
    ],
)
def test_the_chip_grid_is_xbatchers_closed_by_one_edge_row_and_column(
    h, overlap, rows, edge_row, columns, edge_column
):
    cube, label = _synthetic(h, 90)
    data = ChipDataset({"s": cube}, {"s": label}, bands="rgbn", input_dims={"y": 40, "x": 40},
                       input_overlap={"y": overlap, "x": overlap})  # fmt: skip
    windows = list(zip(data.chips.y0, data.chips.x0, strict=True))
    assert sorted(windows) == list(itertools.product(rows + edge_row, columns + edge_column))
    regular = data.chips[data.chips.chip >= 0]
    assert sorted(zip(regular.y0, regular.x0, strict=True)) == list(
        itertools.product(rows, columns)
    )
    image = data.norm.apply(cube.reflectance.values[0])
    one_class = np.zeros(len(DEFAULT_CLASSES), int)
    one_class[VEG] = 40 * 40
    for index, row in data.chips.iterrows():
        item = data[index]
        np.testing.assert_array_equal(
            item["image"].numpy(), image[:, row.y0 : row.y0 + 40, row.x0 : row.x0 + 40]
        )
        np.testing.assert_array_equal(item["mask"].numpy(), np.full((40, 40), VEG))
        assert item["site"] == 0
        np.testing.assert_array_equal(row.class_px, one_class)


def test_chips_of_two_frames_are_consecutive_periods_channels_first():
    cube, label = _synthetic(99, 90, periods=3)
    data = ChipDataset({"s": cube}, {"s": label}, bands="rgbn", input_dims={"y": 40, "x": 40},
                       frames=2)  # fmt: skip
    found = sorted(zip(data.chips.t, data.chips.y0, data.chips.x0, strict=True))
    assert found == list(itertools.product([1, 2], [0, 40, 59], [0, 40, 50]))
    image = data.norm.apply(cube.reflectance.values)  # (time, channel, y, x)
    for index, row in data.chips.iterrows():
        window = image[row.t - 1 : row.t + 1, :, row.y0 : row.y0 + 40, row.x0 : row.x0 + 40]
        np.testing.assert_array_equal(data[index]["image"].numpy(), window.transpose(1, 0, 2, 3))
    assert data[0]["image"].shape == (4, 2, 40, 40)
    assert str(data.chips.time[0])[:10] == "2023-04-01"  # a chip's time is its last period


def test_a_dataset_records_what_the_model_card_needs():
    cube, label = _synthetic(128, 130)
    other = cube.assign_attrs(sensor="landsat-c2-l2")
    data = ChipDataset({"a": cube.assign_attrs(sensor="sentinel-2-l2a"), "b": other, "c": cube},
                       {"a": label, "b": label, "c": label})  # fmt: skip
    assert data.input_dims == {"y": 128, "x": 128}  # the default chip
    assert data.input_overlap == {}
    assert data[0]["image"].shape == (4, 128, 128)
    assert data.sensors == ("landsat-c2-l2", "sentinel-2-l2a")
    assert data.schema is DEFAULT_CLASSES
    assert data.sites == ("a", "b", "c")
    assert [data[i]["site"] for i in range(len(data))] == [0, 0, 1, 1, 2, 2]
    seeded = ChipDataset({"a": cube}, {"a": label}, augment=True, seed=0)
    default = ChipDataset({"a": cube}, {"a": label}, augment=True)
    for i in range(len(default)):
        np.testing.assert_array_equal(default[i]["image"], seeded[i]["image"])
    part = data.take([3, 0])
    assert list(part.chips.site_id) == ["b", "a"]
    assert list(part.chips.index) == [0, 1]
    assert list(part.chips.columns) == list(data.chips.columns)
    np.testing.assert_array_equal(part[0]["image"], data[3]["image"])
    assert len(data) == 6  # the original is untouched


def test_the_labelled_fraction_counts_labelled_among_observed_pixels_of_every_site():
    top = np.zeros((40, 40), "uint8")
    top[:10] = DEFAULT_CLASSES["vegetation"].id  # 400 of 1600 pixels labelled
    a, a_label = _synthetic(40, 40, label=top)
    b, b_label = _synthetic(40, 40)
    b["reflectance"][0, 2, 20:] = np.nan  # 800 pixels lack blue: unobserved
    chip = {"y": 40, "x": 40}
    data = ChipDataset({"a": a, "b": b}, {"a": a_label, "b": b_label}, input_dims=chip)
    assert data.labelled_fraction == (400 + 800) / (1600 + 800)
    assert list(data.chips.valid_fraction) == [0.25, 0.5]  # a's chip is kept at min_valid 0.25
    lone = a.copy(deep=True)
    lone["reflectance"][:] = np.nan
    lone["reflectance"][0, :, 0, 0] = 0.1  # one observed pixel, labelled
    data = ChipDataset({"a": lone}, {"a": a_label}, input_dims=chip, min_valid=0)
    assert data.labelled_fraction == 1.0


def test_the_balanced_sampler_weighs_each_chip_by_its_rarest_class_as_worked_out_by_hand():
    ids = {name: DEFAULT_CLASSES[name].id for name in ("vegetation", "tailings", "water", "plant")}
    label = np.full((40, 200), ids["vegetation"], "uint8")  # five 40² chips of 1600 px
    label[0, 40:56] = ids["tailings"]  # chip 1: 16 px of tailings, 1 % exactly
    label[0, 80:95] = ids["water"]  # chip 2: 15 px of water, under 1 %, and 1 px of plant
    label[1, 80] = ids["plant"]
    label[:10, 120:160] = ids["tailings"]  # chip 3: 400 px of tailings (25 % exactly)
    label[10:25, 120:160] = ids["water"]  # and 600 of water, 600 of vegetation
    label[:, 160:] = 0  # chip 4: unlabelled
    cube, label = _synthetic(40, 200, label=label)
    data = ChipDataset({"s": cube}, {"s": label}, input_dims={"y": 40, "x": 40}, min_valid=0)
    assert list(data.chips.x0) == [0, 40, 80, 120, 160]

    def weights(**kwargs):
        return data.sampler(**kwargs).weights.tolist()

    # 1 %: vegetation in chips 0-3 (1/4), tailings in 1 and 3 (1/2), water in 3 (1); chip 4
    # holds nothing and weighs as the commonest class
    assert weights() == [0.25, 0.5, 0.25, 1.0, 0.25]
    assert weights(min_share=0.01, seed=0) == weights()
    # any pixel: water also in chip 2 (1/2), plant only there (1)
    assert weights(min_share=0) == [0.25, 0.5, 1.0, 0.5, 0.25]
    # 25 %: tailings and water only in chip 3 (1); vegetation in all four
    assert weights(min_share=0.25) == [0.25, 0.25, 0.25, 1.0, 0.25]
    assert list(data.sampler()) == list(data.sampler("balanced", seed=0))
    assert data.sampler().replacement
    blank = ChipDataset({"s": cube}, {"s": label.where(False, 0)}, input_dims={"y": 40, "x": 40},
                        min_valid=0)  # fmt: skip
    assert blank.sampler().weights.tolist() == [1.0] * 5  # no class anywhere: uniform
    lone = np.full((40, 120), ids["vegetation"], "uint8")
    lone[:, :40] = 0
    lone[0, 0] = ids["tailings"]  # chip 0: one labelled pixel, all of its labelled share
    cube, lone = _synthetic(40, 120, label=lone)
    data = ChipDataset({"s": cube}, {"s": lone}, input_dims={"y": 40, "x": 40}, min_valid=0)
    assert data.sampler(min_share=0.9).weights.tolist() == [1.0, 0.5, 0.5]
    for share in (1, -0.1):
        assert refused(ValueError, lambda s=share: data.sampler(min_share=s)) == (
            f"min_share={share!r} must be a share of a chip in [0, 1)"
        )


def test_augmented_chips_draw_the_eight_views_equally_often():
    cube, label = _synthetic(96, 96)
    plain = ChipDataset({"s": cube}, {"s": label}, input_dims={"y": 8, "x": 8})
    aug = ChipDataset({"s": cube}, {"s": label}, input_dims={"y": 8, "x": 8}, augment=True)
    draws = []
    for epoch in range(6):  # 6 × 144 = 864 draws, 108 of each view expected
        aug.set_epoch(epoch)
        draws += [_draw(aug, plain, i) for i in range(len(aug))]
    counts = np.bincount(draws, minlength=8)
    assert len(counts) == 8
    assert counts.min() > 70  # 108 ± 3.7 binomial standard deviations
    assert counts.max() < 146


def test_normalisation_applies_in_float32_and_round_trips_through_json():
    import json

    from minecube.chips import Normalisation

    norm = Normalisation(("red", "nir"), (0.1234567, 0.3), (0.0456789, 0.2))
    x = np.random.default_rng(1).uniform(0, 0.5, (3, 2, 4, 5)).astype("float32")
    x[0, 1, 2, 3] = np.nan
    out = norm.apply(x)
    mean = np.array([0.1234567, 0.3], "float32").reshape(2, 1, 1)
    std = np.array([0.0456789, 0.2], "float32").reshape(2, 1, 1)
    expected = (x - mean) / std  # float32 throughout, as the model sees it
    expected[0, 1, 2, 3] = 0.0  # no observation: the mean
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    record = norm.to_dict()
    assert record == {"bands": ["red", "nir"], "mean": [0.1234567, 0.3], "std": [0.0456789, 0.2]}
    assert Normalisation.from_dict(json.loads(json.dumps(record))) == norm
    assert Normalisation.from_dict({"bands": ["red"], "mean": ["0.5"], "std": [1]}) == (
        Normalisation(("red",), (0.5,), (1.0,))
    )
    assert refused(ValueError, lambda: Normalisation(("red",), (0.1, 0.2), (1.0,))) == (
        "bands, mean and std must have the same length"
    )
    assert refused(ValueError, lambda: Normalisation(("red", "nir"), (0.1, 0.2), (1.0, 0.0))) == (
        "std must be positive, got (1.0, 0.0)"
    )


def test_normalisation_of_large_float32_values_is_accumulated_in_float64():
    from minecube.chips import _fit_normalisation

    x = (3000 + np.random.default_rng(2).normal(0, 5, (4, 1, 50, 50))).astype("float32")
    norm = _fit_normalisation([x], ("red",))  # digital numbers: sums of squares near 2e11
    reference = x.astype("float64")
    assert norm.mean[0] == pytest.approx(reference.mean(), abs=1e-6)
    assert norm.std[0] == pytest.approx(reference.std(), abs=2e-6)


def test_features_and_bands_refusals_in_full(lab):
    cube = lab["cubes"]["hunter-coal"]
    rgb = features(cube.sel(band=["red", "green", "blue"]), "rgb")  # NDVI's bands not needed
    assert rgb.name == "features"
    assert list(rgb.channel.values) == ["red", "green", "blue"]
    for bands in ([], ["red", "red"]):
        assert refused(BandError, lambda b=bands: resolve_bands(b)) == (
            f"bands must be a non-empty list of distinct names, got {bands}"
        )


def test_chip_dataset_refusals_in_full():
    cube, label = _synthetic(40, 50)
    chip = {"y": 40, "x": 40}
    for dims, overlap in (({"y": 40}, None), (chip, {"time": 1})):
        assert refused(ValueError, lambda d=dims, o=overlap: ChipDataset(
            {"s": cube}, {"s": label}, input_dims=d, input_overlap=o)) == (
            f"input_dims must name exactly 'y' and 'x' (got {dims}) and input_overlap only those "
            f"(got {overlap or {}})"
        )  # fmt: skip
    assert refused(ValueError, lambda: ChipDataset({"s": cube, "t": cube}, {"s": label, "u": label},
                                                   input_dims=chip)) == (
        "sites ['t', 'u'] have a cube or labels, but not both"
    )  # fmt: skip
    exact = ChipDataset({"s": cube}, {"s": label}, input_dims=chip)  # exactly one chip high
    assert len(exact) == 2
    for dims, frames in (({"y": 41, "x": 40}, 1), (chip, 2)):
        assert refused(ValueError, lambda d=dims, f=frames: ChipDataset(
            {"s": cube}, {"s": label}, input_dims=d, frames=f)) == (
            "site 's': its cube ({'time': 1, 'channel': 4, 'y': 40, 'x': 50}) is smaller than one "
            f"chip ({dims}, frames={frames})"
        )  # fmt: skip
    assert refused(ValueError, lambda: ChipDataset({"s": cube}, {"s": label.where(False, 0)},
                                                   input_dims=chip)) == (
        "no chip of {'y': 40, 'x': 40} has ≥ 25% labelled, observed pixels; check that the labels "
        "overlap the cubes or lower min_valid"
    )  # fmt: skip


# --- splits: groups by column, distance and block; leak warnings and refusals in full --------


def _squares(corners_m, side_m=100.0, epsg=32735):
    """Sites ``{id: (x, y)}``: squares of ``side_m`` at UTM corners (zone 35 S, near
    Johannesburg), as the lon/lat table a user reads."""
    import geopandas as gpd
    from shapely.geometry import box

    squares = [box(x, y, x + side_m, y + side_m) for x, y in corners_m.values()]
    table = gpd.GeoDataFrame({"site_id": list(corners_m)}, geometry=squares, crs=epsg)
    return table.to_crs(4326)


def test_sites_are_grouped_within_buffer_m_of_each_other_and_only_touching_ones_by_default():
    import warnings

    from minecube.chips import LeakageWarning, leaks, site_groups

    x, y = 600_000, 7_100_000
    # b 450 m east of a; c 550 m east of b; d 0.8 m north of a
    table = _squares({"a": (x, y), "b": (x + 550, y), "c": (x + 1200, y), "d": (x, y + 100.8)})
    assert site_groups(table, buffer_m=500) == {"a": "a", "b": "a", "c": "c", "d": "a"}
    assert site_groups(table, buffer_m=400) == {"a": "a", "b": "b", "c": "c", "d": "a"}
    assert site_groups(table) == {s: s for s in "abcd"}  # 0.8 m apart is apart
    split = SiteSplit(("b", "c"), ("d",), ("a",))
    assert leaks(split, table) == []
    assert leaks(split, table, buffer_m=500) == [("train", "b", "a"), ("val", "d", "a")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakageWarning)
        assert split_sites(table, test=["a"], val=["d"]) == split
    # groups by name and by distance together: c brings b (named), a and d stay together
    both = split_sites(table, test=["c"], val=0, buffer_m=400, groups={"c": "g", "b": "g"})
    assert both == SiteSplit(("a", "d"), (), ("b", "c"))


def test_footprints_whose_boxes_overlap_but_shapes_do_not_are_apart():
    import geopandas as gpd
    from shapely.geometry import Polygon

    from minecube.chips import leaks, site_groups

    lower = Polygon([(27.80, -26.20), (27.81, -26.20), (27.80, -26.19)])  # below the diagonal
    upper = Polygon([(27.81, -26.19), (27.81, -26.199), (27.801, -26.19)])  # above it
    table = gpd.GeoDataFrame({"site_id": ["a", "b"]}, geometry=[lower, upper], crs=4326)
    assert site_groups(table) == {"a": "a", "b": "b"}
    assert leaks(SiteSplit(("a",), (), ("b",)), table) == []


def test_split_sites_fills_a_number_with_whole_groups_and_reads_a_group_column():
    ids = list("abcdef")
    sizes = set()
    for seed in range(30):  # a pair and four single sites: three sites, or four with the pair last
        split = split_sites(ids, test=3, val=0, seed=seed, groups={"a": "g", "b": "g"})
        sizes.add(len(split.test))
        assert {"a", "b"} <= set(split.test) or not {"a", "b"} & set(split.test)
    assert sizes == {3, 4}
    default = split_sites(ids)
    assert default == split_sites(ids, test=2, val=1, seed=0)
    assert [len(p) for p in (default.train, default.val, default.test)] == [3, 1, 2]
    assert split_sites(list("abc"), test=2, val=0).train  # one training site is enough
    table = _squares({s: (600_000 + 1000 * k, 7_100_000) for k, s in enumerate("abcd")})
    table["region"] = ["n", "n", "s", "s"]
    assert split_sites(table, test=["a"], val=0, groups="region") == SiteSplit(
        ("c", "d"), (), ("a", "b")
    )


def test_split_refusals_and_the_leak_warning_in_full():
    from minecube.chips import LeakageWarning

    ids = list("abc")
    assert refused(ValueError, lambda: split_sites(ids, test=3)) == (
        "test=3 leaves no training site out of 3"
    )
    assert refused(ValueError, lambda: split_sites(ids, test=["a"], val=0,
                                                   groups={"a": "g", "b": "g", "c": "g"})) == (
        "the groups of the test and validation sites take every site (3); ask for fewer, or "
        "group less (buffer_m=, groups=)"
    )  # fmt: skip
    assert refused(ValueError, lambda: split_sites(ids, groups="region")) == (
        "groups='region' is not a column of the site table"
    )
    for kwargs in ({"buffer_m": 0}, {"block_m": 1000}):
        assert refused(ValueError, lambda k=kwargs: split_sites(ids, **k)) == (
            "buffer_m= and block_m= need the site table, with its footprints"
        )
    assert refused(ValueError, lambda: SiteSplit((), ("a",), ("b",))) == (
        "the split has no training sites"
    )
    for n in (10, 11):  # n small sites inside one big test site
        inside = {f"s{k:02}": (600_000 + 100 * k, 7_100_000) for k in range(n)}
        table = _squares({"big": (599_000, 7_099_000)} | inside, side_m=50)
        table.loc[0, "geometry"] = _squares({"big": (599_000, 7_099_000)}, 3000).geometry[0]
        with pytest.warns(LeakageWarning) as caught:
            split_sites(table, test=["big"], val=0)
        named = ", ".join(f"train 's{k:02}' ~ test 'big'" for k in range(10))
        assert str(caught[0].message) == (
            f"{n} training/validation sites overlap test sites, so the test score measures "
            f"memory, not skill: {named}{' …' if n > 10 else ''}; split with buffer_m=0 (or "
            "more) to keep neighbours together"
        )


def test_hold_out_passes_val_and_seed_on_and_refuses_in_full():
    import pandas as pd

    sites = pd.DataFrame({"site_id": list("abcdefgh"), "climate": ["arid"] * 2 + ["wet"] * 6})
    assert hold_out(sites, climate="arid") == hold_out(sites, climate="arid", val=1, seed=0)
    drawn = {hold_out(sites, climate="arid", val=2, seed=seed).val for seed in range(8)}
    assert {len(v) for v in drawn} == {2}
    assert len(drawn) > 1  # the seed reaches the draw
    assert not set().union(*drawn) & {"a", "b"}
    for kwargs in ({}, {"climate": "arid", "commodity": "gold"}):
        assert refused(ValueError, lambda k=kwargs: hold_out(sites, **k)) == (
            "give exactly one of climate= or commodity="
        )
    assert refused(ValueError, lambda: hold_out(sites, commodity="gold")) == (
        "the site table has no 'commodity' column; columns: ['site_id', 'climate']"
    )
