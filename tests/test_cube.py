"""Per-site cubes from the served demo world: pixels, masking, composites, engines, Zarr."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from minecube.cube import (
    MASKED_SCL,
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
                    if dn[r, c] == 0 or scl[sr, sc] in MASKED_SCL:
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


def test_stackstac_and_odc_stac_give_the_same_pixels(site, items):
    a = build(site, items, composite="month", engine="stackstac").compute()
    b = build(site, items, composite="month", engine="odc-stac").compute()
    xr.testing.assert_equal(a.reflectance, b.reflectance)
    xr.testing.assert_equal(a.valid_count, b.valid_count)


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
    with pytest.warns(EmptyPeriodWarning, match=f"period starting {day:%Y-%m-%d}"):
        to_zarr(cube.sel(time=[day]), tmp_path / "c.zarr")
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


def test_half_written_period_is_not_read_as_complete(site, items, tmp_path):
    import zarr

    store = tmp_path / "cubes.zarr"
    cube = build(site, items, composite="quarter")
    to_zarr(cube, store)
    node = zarr.open_group(store, mode="a")[SITE]
    node.attrs["minecube:complete_periods"] = node.attrs["minecube:complete_periods"][:-1]
    assert open_cube(store, SITE).sizes["time"] == cube.sizes["time"] - 1
    assert to_zarr(cube, store) == [str(cube.time.values[-1])[:10]]  # rewritten in place
    assert open_cube(store, SITE).sizes["time"] == cube.sizes["time"]


def test_bad_input_names_the_fix(world, site, items):
    with pytest.raises(ValueError, match=r"unknown bands \['swir16'\]; available bands are"):
        build(site, items, bands=["red", "swir16"])
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
@pytest.mark.parametrize("engine", ["stackstac", "odc-stac"])
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
