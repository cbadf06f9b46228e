"""Label polygons burnt onto cube grids, checked against the demo world's truth rasters."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from shapely.geometry import box

from minecube.classes import DEFAULT_CLASSES
from minecube.labels import LabelError, MissingLabelsWarning, rasterize


def _grid(epsg=32750):
    da = xr.DataArray(
        np.zeros((6, 6), "float32"),
        dims=("y", "x"),
        coords={"y": 55.0 - 10 * np.arange(6), "x": 5.0 + 10 * np.arange(6)},
    )
    return da.rio.write_crs(f"EPSG:{epsg}")


def test_labels_on_the_cube_grid_equal_the_truth_rasters(world, lab):
    for site in world.site_ids:
        cube, label = lab["cubes"][site], lab["labels"][site]
        assert label.dims == ("time", "y", "x")
        assert label.dtype == np.uint8
        assert label.rio.crs == cube.rio.crs
        assert label.attrs["flag_meanings"].split() == DEFAULT_CLASSES.names
        for t, year in enumerate(cube.time.dt.year.values):
            truth = world.truth(site, int(year))
            inside = label.isel(time=t).sel(y=truth.y, x=truth.x)
            np.testing.assert_array_equal(inside.values, truth.values)
            # the cube's margin outside the truth window stays unlabelled
            assert int((label.isel(time=t) > 0).sum()) == int((truth > 0).sum())


def test_labels_in_another_crs_are_reprojected(world, lab):
    site = "pilbara-iron"  # southern hemisphere, UTM 50S
    polygons = gpd.read_file(world.labels_path(site)).to_crs(4326)
    again = rasterize(polygons, lab["cubes"][site], time_column="year")
    agree = float((again == lab["labels"][site]).mean())
    assert agree > 0.999


def test_overlaps_go_to_the_smaller_polygon_whatever_the_order():
    big, small = box(0, 0, 60, 60), box(20, 20, 40, 40)
    for order in ([big, small], [small, big]):
        names = ["vegetation", "tailings"] if order[0] is big else ["tailings", "vegetation"]
        frame = gpd.GeoDataFrame({"class": names}, geometry=order, crs="EPSG:32750")
        out = rasterize(frame, _grid())
        assert (out.values == 3).sum() == 4
        assert (out.values == 6).sum() == 32
    ids = gpd.GeoDataFrame({"class": [6, 3]}, geometry=[big, small], crs="EPSG:32750")
    np.testing.assert_array_equal(rasterize(ids, _grid()).values, out.values)


def test_unlabelled_pixels_are_nodata_and_years_without_labels_warn(lab):
    cube = lab["cubes"]["hunter-coal"]
    frame = gpd.GeoDataFrame(
        {"class": ["open_pit"], "year": [int(cube.time.dt.year[0])]},
        geometry=[box(*cube.rio.bounds())],
        crs=cube.rio.crs,
    )
    with pytest.warns(MissingLabelsWarning, match="no label polygons for the years"):
        out = rasterize(frame, cube, time_column="year")
    assert (out.isel(time=0) == 1).all()
    assert (out.isel(time=slice(1, None)) == DEFAULT_CLASSES.nodata).all()
    dated = frame.assign(year=[f"{int(cube.time.dt.year[0])}-06-30"])
    with pytest.warns(MissingLabelsWarning):
        np.testing.assert_array_equal(rasterize(dated, cube, time_column="year"), out)
    with pytest.raises(LabelError, match="neither years nor dates"):
        rasterize(frame.assign(year=["soon"]), cube, time_column="year")


def test_bad_labels_name_the_problem(tmp_path):
    frame = gpd.GeoDataFrame({"class": ["pit"]}, geometry=[box(0, 0, 30, 30)], crs="EPSG:32750")
    with pytest.raises(LabelError, match=r"classes \['pit'\] that are not in the class schema"):
        rasterize(frame, _grid())
    with pytest.raises(LabelError, match="no column 'kind'"):
        rasterize(frame, _grid(), column="kind")
    with pytest.raises(LabelError, match="polygons have no CRS"):
        rasterize(frame.set_crs(None, allow_override=True), _grid())
    with pytest.raises(LabelError, match="the cube has no CRS"):
        rasterize(frame, _grid().drop_vars("spatial_ref"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rasterize(tmp_path / "missing.gpkg", _grid())
