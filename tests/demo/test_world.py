"""The demo world on disk: site table, archive layout, determinism, labels and growth."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.features
from shapely.geometry import box, shape

from minecube.classes import DEFAULT_CLASSES
from minecube.demo import SITES, generate, open_world
from minecube.errors import DemoWorldError
from tests.conftest import TINY

MINING = [c.id for c in DEFAULT_CLASSES.mining]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _items_by_site(world) -> dict[str, list[dict]]:
    tiles = world.sites.set_index("site_id")["tiles"].str.split(",")
    items = world.items()
    return {
        sid: [i for i in items if i["properties"]["grid:code"].removeprefix("MGRS-") in codes]
        for sid, codes in tiles.items()
    }


def test_site_table_spans_commodities_climates_zones_and_hemispheres(world):
    sites = world.sites
    assert len(sites) >= 6
    assert sites["site_id"].is_unique
    assert sites.crs.to_epsg() == 4326
    assert set(sites["climate"]) == {"tropical", "arid", "temperate", "continental"}
    assert len(set(sites["commodity"])) >= 5
    assert {"gold", "coal", "copper", "iron ore", "nickel", "bauxite"} <= set(sites["commodity"])
    assert sites["epsg"].nunique() >= 5  # several UTM zones
    southern = sites[sites.bounds.maxy < 0]
    assert len(southern) >= 1
    assert (southern["epsg"] // 100 == 327).all()  # UTM south zones
    assert (sites[sites.bounds.miny > 0]["epsg"] // 100 == 326).all()
    straddling = sites[sites["tiles"].str.contains(",")]
    assert len(straddling) >= 1
    # the CSV form (lon/lat + buffer) describes the same sites
    table = pd.read_csv(world.path / "sites.csv")
    assert list(table["site_id"]) == list(sites["site_id"])
    for row, geom in zip(table.itertuples(), sites.geometry, strict=True):
        assert geom.contains(gpd.points_from_xy([row.lon], [row.lat])[0])
        assert row.buffer_m == world.spec.site_size * 10 / 2


def test_archive_has_several_dates_per_year_for_three_years(world):
    assert len(world.spec.years) >= 3
    for sid, items in _items_by_site(world).items():
        dates = {i["properties"]["datetime"][:10] for i in items}
        per_year = Counter(d[:4] for d in dates)
        assert sorted(per_year) == [str(y) for y in world.spec.years], sid
        assert min(per_year.values()) >= 4, (sid, per_year)


def test_assets_are_cogs_with_earth_search_names_and_scaling(world):
    item = world.items()[0]
    assert set(item["assets"]) == {"blue", "green", "red", "nir", "scl"}
    assert item["properties"]["proj:code"].startswith("EPSG:32")
    red = item["assets"]["red"]
    assert red["raster:bands"][0] | {} == {
        "nodata": 0,
        "spatial_resolution": 10,
        "data_type": "uint16",
        "bits_per_sample": 15,
        "scale": 0.0001,
        "offset": -0.1,
    }
    assert red["eo:bands"][0]["common_name"] == "red"
    for key, asset in item["assets"].items():
        with rasterio.open(asset["href"]) as src:
            assert src.driver == "GTiff"
            assert src.profile["tiled"], key
            assert src.overviews(1), f"{key} has no overviews: not a COG"
            assert src.nodata == 0
            assert [src.height, src.width] == asset["proj:shape"]
            assert list(src.transform)[:6] == asset["proj:transform"]
            assert src.crs.to_string() == item["properties"]["proj:code"]
            assert src.res == ((20.0, 20.0) if key == "scl" else (10.0, 10.0))


def test_same_seed_gives_same_bytes_and_another_seed_does_not(tmp_path):
    a = generate(tmp_path / "a", seed=7, **TINY)
    b = generate(tmp_path / "b", seed=7, **TINY)
    c = generate(tmp_path / "c", seed=8, **TINY)
    da, db, dc = _digest(a.path), _digest(b.path), _digest(c.path)
    assert len(da) > 20
    assert da == db
    changed = [k for k in da if k.startswith("cogs/") and da[k] != dc.get(k)]
    assert len(changed) == len([k for k in da if k.startswith("cogs/")])


def test_reflectance_is_in_range_and_clouds_match_scl(world):
    items = world.items()
    checked = 0
    for item in items[::9]:
        bands = []
        for key in ("blue", "green", "red", "nir"):
            with rasterio.open(item["assets"][key]["href"]) as src:
                bands.append(src.read(1).astype("float64") * 1e-4 - 0.1)
        with rasterio.open(item["assets"]["scl"]["href"]) as src:
            scl = np.kron(src.read(1), np.ones((2, 2), "uint8"))  # 20 m → 10 m
        refl = np.stack(bands)
        usable = ~np.isin(scl, (0, 1))
        assert np.all(refl[:, usable] >= -0.01)
        assert np.all(refl[:, usable] <= 1.0)
        clear = np.isin(scl, (4, 5, 6))
        assert np.all(refl[:, clear] <= 0.6)
        cloud = scl == 9
        if cloud.sum() > 500 and clear.sum() > 500:
            assert refl[:3, cloud].mean() > refl[:3, clear].mean() + 0.15
        # eo:cloud_cover is the cloudy share of the observed SCL pixels
        with rasterio.open(item["assets"]["scl"]["href"]) as src:
            scl20 = src.read(1)
        observed = scl20 > 0
        expected = 100 * np.isin(scl20, (8, 9, 10))[observed].mean() if observed.any() else 0
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(expected, abs=1e-3)
        checked += 1
    assert checked >= 10


def test_some_scenes_end_inside_their_tile(world):
    partial = [i for i in world.items() if 5 < i["properties"]["s2:nodata_pixel_percentage"] < 95]
    assert partial, "no scene with a nodata edge"
    item = partial[0]
    with rasterio.open(item["assets"]["red"]["href"]) as src:
        red = src.read(1)
        tile = box(*src.bounds)
    with rasterio.open(item["assets"]["scl"]["href"]) as src:
        scl = src.read(1)
    share = 100 * (red == 0).mean()
    assert share == pytest.approx(item["properties"]["s2:nodata_pixel_percentage"], abs=0.01)
    assert (scl == 0).any()
    # the item's footprint shows the edge: it is smaller than the tile
    tile_lonlat = gpd.GeoSeries([tile], crs=item["properties"]["proj:code"]).to_crs(4326)[0]
    assert shape(item["geometry"]).area < 0.97 * tile_lonlat.area


@pytest.mark.parametrize("site_id", [s.site_id for s in SITES])
def test_label_polygons_rasterise_back_to_the_truth_raster(world, site_id):
    labels = gpd.read_file(world.labels_path(site_id))
    assert {"site_id", "year", "class", "class_id", "geometry"} <= set(labels.columns)
    assert set(labels["class"]) <= set(DEFAULT_CLASSES.names)
    for year in world.spec.years:
        with rasterio.open(world.truth_path(site_id, year)) as src:
            truth = src.read(1)
            transform, crs = src.transform, src.crs
        assert labels.crs == crs
        polygons = labels[labels["year"] == year]
        burned = rasterio.features.rasterize(
            zip(polygons.geometry, polygons["class_id"], strict=True),
            out_shape=truth.shape,
            transform=transform,
            dtype="uint8",
        )
        np.testing.assert_array_equal(burned, truth)
        # polygon areas are the pixel areas of the truth raster
        areas = polygons.area.groupby(polygons["class_id"]).sum()
        counts = pd.Series(np.bincount(truth.ravel(), minlength=11)) * 100.0
        for class_id, area in areas.items():
            assert area == pytest.approx(counts[class_id], rel=1e-9)


def test_truth_is_a_labelled_dataarray(world):
    site = world.site_ids[0]
    truth = world.truth(site, world.spec.years[0])
    assert truth.dims == ("y", "x")
    assert truth.rio.crs.to_epsg() == int(world.sites.set_index("site_id").loc[site, "epsg"])
    assert truth.rio.resolution() == (10.0, -10.0)
    with pytest.raises(DemoWorldError, match="no truth for site 'nowhere'"):
        world.truth("nowhere", 2022)


@pytest.mark.parametrize("site_id", [s.site_id for s in SITES])
def test_mines_grow_monotonically(world, site_id):
    years = world.spec.years
    masks, classes = [], []
    for year in years:
        with rasterio.open(world.truth_path(site_id, year)) as src:
            truth = src.read(1)
        classes.append(truth)
        masks.append(np.isin(truth, MINING))
    for before, after in itertools.pairwise(masks):
        assert not (before & ~after).any(), "a mining pixel reverted to non-mining"
        assert after.sum() > before.sum() * 1.05, "the mine did not grow"
    tailings = DEFAULT_CLASSES["tailings"].id
    assert not (classes[0] == tailings).any()  # the tailings facility appears ...
    counts = [(c == tailings).sum() for c in classes[1:]]
    assert counts[0] > 0
    assert counts == sorted(counts)  # ... and fills
    # every class of the schema is present somewhere around the mine
    assert {1, 2, 3, 4, 5} <= set(np.unique(classes[-1]))


def _clear_pixels(world, site_id, year):
    """(pixels × [blue, green, red, nir]) reflectance of a cloud-free scene, and truth labels."""
    truth = world.truth(site_id, year)
    x0, y1 = float(truth.x[0]) - 5, float(truth.y[0]) + 5
    x1, y0 = x0 + truth.shape[1] * 10, y1 - truth.shape[0] * 10
    for item in _items_by_site(world)[site_id]:
        p = item["properties"]
        if not p["datetime"].startswith(str(year)) or p["eo:cloud_cover"] > 1:
            continue
        bands = []
        for key in ("blue", "green", "red", "nir"):
            with rasterio.open(item["assets"][key]["href"]) as src:
                if not box(*src.bounds).contains(box(x0, y0, x1, y1)):
                    break  # a tile that holds only part of the site
                data = src.read(1, window=src.window(x0, y0, x1, y1))
                if (data == 0).any():
                    break  # a scene that ends inside the site
                bands.append(data.astype("float64") * 1e-4 - 0.1)
        if len(bands) == 4:
            return np.stack(bands).reshape(4, -1).T, truth.values.ravel()
    return None


def _balanced_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Mean per-class recall of a Gaussian naive Bayes fitted on the same pixels."""
    classes = np.unique(y)
    mu = np.stack([x[y == c].mean(0) for c in classes])
    sd = np.stack([x[y == c].std(0) + 1e-4 for c in classes])
    loglik = -0.5 * (((x[:, None] - mu) / sd) ** 2).sum(-1) - np.log(sd).sum(-1)
    predicted = classes[loglik.argmax(1)]
    return float(np.mean([np.mean(predicted[y == c] == c) for c in classes]))


def test_rgb_confuses_classes_that_nir_and_ndvi_separate(world):
    """Class spectra overlap in RGB; NIR, and NDVI more so, separate them (as in the paper)."""
    scores = []
    for site_id in world.site_ids:
        pixels = _clear_pixels(world, site_id, world.spec.years[-1])
        if pixels is None:
            continue
        x, y = pixels
        ndvi = (x[:, 3] - x[:, 2]) / (x[:, 3] + x[:, 2])
        scores.append(
            [
                _balanced_accuracy(x[:, :3], y),
                _balanced_accuracy(x, y),
                _balanced_accuracy(np.column_stack([x[:, :3], ndvi]), y),
            ]
        )
    assert len(scores) >= 5
    rgb, rgbn, rgb_ndvi = np.mean(scores, axis=0)
    assert rgb < 0.8, f"RGB alone separates the classes too well ({rgb:.2f})"
    assert rgbn > rgb + 0.03, f"NIR does not help: RGB {rgb:.2f}, RGB+NIR {rgbn:.2f}"
    assert rgb_ndvi > rgb + 0.08, f"NDVI does not help: RGB {rgb:.2f}, +NDVI {rgb_ndvi:.2f}"


def test_world_stays_small(world):
    assert world.summary["bytes"] < 300e6
    assert world.summary["items"] == len(world.items())


def test_generate_reuses_refuses_and_recovers(tmp_path):
    path = tmp_path / "w"
    first = generate(path, **TINY)
    stamp = (path / "world.json").stat().st_mtime_ns
    assert generate(path, **TINY).spec == first.spec
    assert (path / "world.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(DemoWorldError, match="overwrite=True"):
        generate(path, **{**TINY, "seed": 1})
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(DemoWorldError, match="is not a demo world"):
        generate(other, overwrite=True, **TINY)
    assert (other / "thesis.tex").read_text() == "precious"
    # an interrupted run leaves only a .partial folder, never a world that looks complete
    broken = tmp_path / "broken"
    (tmp_path / "broken.partial").mkdir()
    with pytest.raises(DemoWorldError, match="interrupted"):
        open_world(broken)
    generate(broken, **TINY)
    assert not (tmp_path / "broken.partial").exists()
    assert json.loads((broken / "world.json").read_text())["spec"]["seed"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 129}, "must be even"),
        ({"site_size": 200, "tile_size": 210}, "tile_size ≥ site_size \\+ 32"),
        ({"sites": ["atlantis"]}, "unknown demo sites \\['atlantis'\\]"),
        ({"years": [2023, 2022]}, "increasing"),
    ],
)
def test_bad_parameters_name_the_problem(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "w", **kwargs)
    assert not (tmp_path / "w").exists()
