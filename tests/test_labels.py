"""Label polygons burnt onto cube grids, checked against the demo world's truth rasters."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rioxarray
import xarray as xr
from shapely.geometry import box

from minecube.classes import DEFAULT_CLASSES, ClassSchema
from minecube.labels import LabelError, MissingLabelsWarning, from_raster, rasterize, read_mapping
from tests.conftest import FILES, refused


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


def test_a_pixel_takes_a_polygon_s_class_when_its_centre_lies_inside():
    """Polygons off the pixel grid: the centre rule (GDAL's default), checked pixel by pixel
    against the centres' containment computed here; touching a pixel is not enough."""
    from shapely.geometry import Point, Polygon

    grid = _grid()  # 10 m pixels, centres at 5, 15, …, 55
    shapes = [
        box(6.0, 6.0, 24.0, 24.0),  # touches 3 × 3 pixels, holds one centre (15, 15)
        Polygon([(31.0, 2.0), (59.0, 2.0), (59.0, 44.0)]),  # a slanted edge
    ]
    frame = gpd.GeoDataFrame({"class": ["tailings", "open_pit"]}, geometry=shapes,
                             crs="EPSG:32750")  # fmt: skip
    out = rasterize(frame, grid).values
    expected = np.zeros(out.shape, np.uint8)
    for i, y in enumerate(grid.y.values):
        for j, x in enumerate(grid.x.values):
            for shape, cls in zip(shapes, (3, 1), strict=True):
                if shape.contains(Point(x, y)):
                    expected[i, j] = cls
    np.testing.assert_array_equal(out, expected)
    assert (out == 3).sum() == 1


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


# --- labels as people have them: class rasters, foreign codes, binary masks ----------------

LULC = FILES / "eolearn-lulc.tif"  # eo-learn's codes: 1 cultivated, 2 forest, 3 grassland…


def _lulc_grid():
    return rioxarray.open_rasterio(LULC).squeeze("band", drop=True)


def test_a_published_code_raster_maps_onto_any_grid_by_nearest():
    labels = from_raster(LULC, _lulc_grid(), mapping=FILES / "eolearn-lulc-to-minecube.csv")
    schema = ClassSchema.from_cf_attrs(labels.attrs)
    assert schema.names == ["cropland", "vegetation", "water", "urban", "bare_land"]
    assert schema.ids == [DEFAULT_CLASSES[n].id for n in schema.names]  # default ids kept
    codes = _lulc_grid().values
    lut = {0: 0, 1: 7, 2: 6, 3: 6, 4: 6, 8: 9}  # the CSV's table, written out
    np.testing.assert_array_equal(labels.values, np.vectorize(lut.get)(codes))
    assert labels.attrs["labelled_fraction"] == pytest.approx(1 - 155 / codes.size)
    # another CRS and pixel size: every label pixel is the code under its centre
    other = xr.DataArray(np.zeros((40, 40)), dims=("y", "x"), coords={
        "y": 5080240.0 - 25 * np.arange(40), "x": 465190.0 + 25 * np.arange(40)})  # fmt: skip
    other = other.rio.write_crs("EPSG:32633").rio.reproject("EPSG:3035")
    coarse = from_raster(LULC, other, mapping=FILES / "eolearn-lulc-to-minecube.csv")
    assert coarse.rio.crs == other.rio.crs
    assert set(np.unique(coarse.values)) <= {0, 6, 7, 9}  # no blended code
    share = float((coarse.values == 6).sum() / (coarse.values > 0).sum())
    assert share == pytest.approx(float((labels.values == 6).sum() / (labels.values > 0).sum()),
                                  abs=0.03)  # fmt: skip


def test_unmapped_codes_are_refused_by_name_and_ignore_leaves_them_out():
    partial = {1: "cropland", 2: "vegetation", 3: "vegetation", 4: "vegetation"}
    with pytest.raises(LabelError, match=r"neither mapped nor ignored: 0 \(155 px\), 8 \(198 px\)"):
        from_raster(LULC, _lulc_grid(), mapping=partial)
    labels = from_raster(LULC, _lulc_grid(), mapping=partial, ignore=[0, 8])
    assert labels.attrs["labelled_fraction"] == pytest.approx(1 - (155 + 198) / 10100)
    with pytest.raises(LabelError, match=r"classes \['tailing'\] that are not in the schema"):
        from_raster(LULC, _lulc_grid(), mapping={**partial, 8: "tailing"}, ignore=0,
                    schema=DEFAULT_CLASSES)  # fmt: skip


def test_polygons_of_a_foreign_scheme_agree_with_that_project_s_own_raster():
    """eo-learn rasterised these Slovenian land-use polygons (RABA codes) into its LULC raster;
    minecube's mapping of either code column gives the same classes, pixel for pixel."""
    grid = _lulc_grid()
    raba = rasterize(FILES / "eolearn-raba.gpkg", grid, column="RABA_ID",
                     mapping=FILES / "raba-to-minecube.csv")  # fmt: skip
    raster = from_raster(LULC, grid, mapping=FILES / "eolearn-lulc-to-minecube.csv")
    both = (raba.values > 0) & (raster.values > 0)
    assert both.mean() > 0.98
    np.testing.assert_array_equal(raba.values[both], raster.values[both])
    table = read_mapping(FILES / "raba-to-minecube.csv")
    del table[3000]
    with pytest.raises(LabelError, match=r"codes the mapping lacks: 3000 \(11 polygons\)"):
        rasterize(FILES / "eolearn-raba.gpkg", grid, column="RABA_ID", mapping=table)


def test_binary_masks_get_a_background_class():
    grid = _grid()
    mask = xr.DataArray(np.zeros((6, 6), "uint8"), dims=("y", "x"), coords=grid.coords)
    mask[1:3, 1:4] = 1
    mask = mask.rio.write_crs(grid.rio.crs)
    labels = from_raster(mask, grid, mapping={1: "tailings", 0: "background"})
    schema = ClassSchema.from_cf_attrs(labels.attrs)
    assert schema.describe() == "3=tailings, 11=background"
    assert int((labels == 3).sum()) == 6
    assert int((labels == 11).sum()) == 30
    # polygons of one class with everything else background
    polygon = gpd.GeoDataFrame({"class": ["tailings"]}, geometry=[box(10, 30, 40, 50)],
                               crs=grid.rio.crs)  # fmt: skip
    burnt = rasterize(polygon, grid, schema=schema, fill="background")
    np.testing.assert_array_equal(burnt.values, labels.values)
    assert int((rasterize(polygon, grid, schema=schema) == 0).sum()) == 30  # else unlabelled


def _on_site_grid(site):
    """An empty (y, x) raster on a site's grid (minecube.cube.site_grid)."""
    import warnings

    from minecube.cube import site_grid

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sites over two zones warn; the grid is what counts
        grid = site_grid(site)
    h, w = grid.shape
    west, _, _, north = grid.bounds
    r = grid.resolution
    return xr.DataArray(
        np.zeros((h, w), "float32"), dims=("y", "x"),
        coords={"y": north - r * (np.arange(h) + 0.5), "x": west + r * (np.arange(w) + 0.5)},
    ).rio.write_crs(f"EPSG:{grid.epsg}")  # fmt: skip


def _centres_inside(grid, polygon, *, wrap: bool = False) -> np.ndarray:
    """The centre rule computed here: which pixel centres, taken to longitude and latitude,
    lie in ``polygon`` (drawn in degrees; ``wrap``: its longitudes run on past 180°)."""
    import shapely
    from pyproj import Transformer

    xx, yy = np.meshgrid(grid.x.values, grid.y.values)
    lon, lat = Transformer.from_crs(grid.rio.crs, "EPSG:4326", always_xy=True).transform(xx, yy)
    if wrap:
        lon = np.where(lon < 0, lon + 360, lon)
    return shapely.contains_xy(polygon, lon, lat)


@pytest.mark.parametrize(
    ("site", "pit", "wrap"),
    [
        # Taveuni, Fiji: site and pit across 180°, each split in two parts as RFC 7946 wants
        (
            box(179.98, -16.82, 180.0, -16.78) | box(-180.0, -16.82, -179.98, -16.78),
            box(179.99, -16.81, 180.0, -16.79) | box(-180.0, -16.81, -179.993, -16.79),
            True,
        ),
        # on the equator, in Gabon: the grid is one hemisphere's zone, the pit in both
        (box(9.40, -0.02, 9.44, 0.03), box(9.41, -0.011, 9.43, 0.012), False),
        # on the edge of UTM zones 54 and 55 (144° E): the pit is in both zones
        (box(143.97, -20.03, 144.03, -19.99), box(143.99, -20.02, 144.01, -20.0), False),
    ],
    ids=["antimeridian", "equator", "zone-edge"],
)
def test_labels_across_the_antimeridian_the_equator_and_zone_edges(site, pit, wrap):
    """Polygons in longitude and latitude burnt onto a site's UTM grid where the sphere's seams
    run: each pixel takes the pit's class when its centre, taken back to degrees, lies in the
    pit — both halves of a split pit, both sides of the equator and of a zone edge."""
    grid = _on_site_grid(site)
    frame = gpd.GeoDataFrame({"class": ["open_pit"]}, geometry=[pit], crs="EPSG:4326")
    burnt = rasterize(frame, grid).values == 1
    unwrapped = box(179.99, -16.81, 180.007, -16.79) if wrap else pit
    expected = _centres_inside(grid, unwrapped, wrap=wrap)
    assert expected.sum() > 1000
    # the pit's straight edges in degrees bend slightly in UTM: pixels along them may differ
    assert (burnt != expected).sum() < 0.01 * expected.sum()
    assert burnt.sum() == pytest.approx(expected.sum(), rel=0.01)


# --- whole results and messages, worked out by hand (docs/testing.md, mutation testing) --------


def _timed_grid():
    """The 6 × 6 grid of _grid over three years, 2021–2023."""
    grid = _grid()
    times = np.array(["2021-07-01", "2022-07-01", "2023-07-01"], dtype="datetime64[ns]")
    return grid.expand_dims(time=times).rio.write_crs(grid.rio.crs)


def test_a_labelled_raster_is_a_uint8_class_layer_on_the_cube_s_grid():
    grid = _grid()
    polygons = gpd.GeoDataFrame(
        {"class": ["open_pit", "water", "open_pit"]},
        geometry=[box(0, 30, 20, 60), box(30, 0, 60, 20), box(0, 0, 0, 0).buffer(0)],
        crs="EPSG:32750",
    )  # the third is empty: left out
    out = rasterize(polygons, grid)
    expected = np.full((6, 6), DEFAULT_CLASSES.nodata, "uint8")
    expected[:3, :2] = 1
    expected[4:, 3:] = DEFAULT_CLASSES["water"].id
    np.testing.assert_array_equal(out.values, expected)
    assert (out.name, out.dims, out.dtype) == ("label", ("y", "x"), np.uint8)
    np.testing.assert_array_equal(out.y, grid.y)
    np.testing.assert_array_equal(out.x, grid.x)
    assert out.attrs == {"long_name": "class id", **DEFAULT_CLASSES.cf_attrs()}
    assert out.rio.crs == grid.rio.crs
    assert out.rio.encoded_nodata == DEFAULT_CLASSES.nodata
    background = ClassSchema.from_cf_attrs(
        {"flag_values": [1, 11], "flag_meanings": "open_pit background"}
    )
    filled = rasterize(polygons[polygons["class"] == "open_pit"], grid, schema=background,
                       fill="background")  # fmt: skip
    assert int((filled == 11).sum()) == 30
    assert int((filled == 1).sum()) == 6
    assert refused(LabelError, lambda: rasterize(polygons, grid, fill="sky")) == (
        f"fill= holds classes ['sky'] that are not in the class schema {DEFAULT_CLASSES.names}; "
        "pass schema= with a schema that has them (minecube.classes.read_schema)"
    )


def test_periods_get_their_year_s_polygons_and_years_without_any_stay_unlabelled():
    grid = _timed_grid()
    polygons = gpd.GeoDataFrame(
        {"class": ["open_pit", "open_pit"], "year": [2021, 2023]},
        geometry=[box(0, 40, 20, 60), box(0, 20, 40, 60)],
        crs="EPSG:32750",
    )
    background = ClassSchema.from_cf_attrs(
        {"flag_values": [1, 11], "flag_meanings": "open_pit background"}
    )
    with pytest.warns(MissingLabelsWarning) as caught:
        out = rasterize(polygons, grid, time_column="year", schema=background, fill="background")
    assert {w.filename for w in caught if w.category is MissingLabelsWarning} == {__file__}
    assert [str(w.message) for w in caught if w.category is MissingLabelsWarning] == [
        "no label polygons for the years [2022]; those periods stay unlabelled (labels cover "
        "[2021, 2023])"
    ]
    assert (out.name, out.dims, out.dtype) == ("label", ("time", "y", "x"), np.uint8)
    np.testing.assert_array_equal(out.time, grid.time)
    assert [int((out.isel(time=t) == 1).sum()) for t in range(3)] == [4, 0, 16]
    assert [int((out.isel(time=t) == 11).sum()) for t in range(3)] == [32, 0, 20]
    assert bool((out.isel(time=1) == background.nodata).all())  # unlabelled, not background
    assert out.attrs == {"long_name": "class id", **background.cf_attrs()}
    assert out.rio.crs == grid.rio.crs
    assert refused(LabelError, lambda: rasterize(polygons, _grid(), time_column="year")) == (
        "time_column= needs a cube with a time dimension"
    )


def test_labels_without_a_crs_or_a_cube_without_one_are_refused_whole(tmp_path):
    frame = gpd.GeoDataFrame({"class": ["open_pit"]}, geometry=[box(0, 0, 30, 30)],
                             crs="EPSG:32750")  # fmt: skip
    assert refused(LabelError, lambda: rasterize(frame, _grid().drop_vars("spatial_ref"))) == (
        "the cube has no CRS; write one with cube.rio.write_crs(...) or build it with "
        "minecube.cube.build"
    )
    unplaced = frame.set_crs(None, allow_override=True)
    assert refused(LabelError, lambda: rasterize(unplaced, _grid())) == (
        "the label polygons have no CRS; set one with frame.set_crs(...) before rasterizing"
    )
    missing = tmp_path / "missing.gpkg"
    assert refused(FileNotFoundError, lambda: rasterize(missing, _grid())) == (
        f"label file {str(missing)!r} does not exist"
    )
    assert refused(TypeError, lambda: rasterize(7, _grid())) == (
        "labels must be a GeoDataFrame or a file path, got int"
    )


def test_a_mapping_reads_from_a_dict_or_any_of_its_csv_layouts(tmp_path):
    assert read_mapping({"60": "bare_land", 0: None, 80.0: "water"}) == {
        60: "bare_land", 0: "", 80: "water"
    }  # fmt: skip
    for column in ("class", "name", "label"):
        path = tmp_path / f"{column}.csv"
        path.write_text(f"code,{column}\n007,bare_land\n80.0, water \n0,\n")
        assert read_mapping(path) == {7: "bare_land", 80: "water", 0: ""}
    bad = tmp_path / "bad.csv"
    bad.write_text("code,kind\n1,water\n")
    assert refused(LabelError, lambda: read_mapping(bad)) == (
        f"class mapping {str(bad)!r} needs a 'code' and a 'class' column; it has ['code', 'kind']"
    )
    bad.write_text("value,class\n1,water\n")
    assert refused(LabelError, lambda: read_mapping(bad)).endswith("it has ['value', 'class']")
    bad.write_text("code,class\none,water\n")
    assert refused(LabelError, lambda: read_mapping(bad)) == (
        f"class mapping {str(bad)!r}: a code is not a number (could not convert string to "
        "float: 'one')"
    )
    assert refused(FileNotFoundError, lambda: read_mapping(tmp_path / "none.csv")) == (
        f"class mapping {tmp_path / 'none.csv'!r} is neither a dict nor a CSV file"
    )


def test_a_class_raster_s_codes_nodata_and_refusals_are_handled_whole(tmp_path):
    grid = _grid()
    codes = np.full((6, 6), 1, "uint8")
    codes[0, :3] = 255  # the file's nodata
    codes[5, 5] = 9
    raster = xr.DataArray(codes, dims=("y", "x"), coords=grid.coords).rio.write_crs(grid.rio.crs)
    path = tmp_path / "codes.tif"
    raster.rio.write_nodata(255).rio.to_raster(path)
    mapping = {1: "water", 9: "open_pit", 256: "water"}  # 256: a code this file cannot hold
    out = from_raster(path, grid, mapping=mapping)
    water, pit = (
        DEFAULT_CLASSES.subset(["water", "open_pit"])[n].id for n in ("water", "open_pit")
    )
    expected = np.full((6, 6), water, "uint8")
    expected[0, :3] = DEFAULT_CLASSES.nodata
    expected[5, 5] = pit
    np.testing.assert_array_equal(out.values, expected)
    assert (out.name, out.dims, out.dtype) == ("label", ("y", "x"), np.uint8)
    np.testing.assert_array_equal(out.y, grid.y)
    np.testing.assert_array_equal(out.x, grid.x)
    schema = DEFAULT_CLASSES.subset(["water", "open_pit"])
    assert out.attrs == {"long_name": "class id", **schema.cf_attrs(), "labelled_fraction": 33 / 36}
    assert out.rio.crs == grid.rio.crs
    assert out.rio.encoded_nodata == schema.nodata
    # a cube with periods (a Dataset) gives its grid; codes past 255 (a uint16 scheme) map too
    timed = xr.Dataset({"reflectance": _timed_grid()})
    wide = raster.astype("uint16").where(raster != 9, 300).rio.write_crs(grid.rio.crs)
    on_periods = from_raster(wide, timed, mapping={1: "water", 300: "open_pit", 255: "",
                                                    256: "water"})  # fmt: skip
    assert on_periods.dims == ("y", "x")
    assert on_periods.rio.crs == grid.rio.crs
    np.testing.assert_array_equal(on_periods.values, expected)
    # a mapping wins over the file's nodata: 255 mapped is labelled
    labelled = from_raster(path, grid, mapping={**mapping, 255: "water"})
    assert int((labelled == DEFAULT_CLASSES.nodata).sum()) == 0
    assert refused(LabelError, lambda: from_raster(raster, grid, mapping={1: "water"})) == (
        "the label raster holds codes that are neither mapped nor ignored: 9 (1 px), 255 (3 px). "
        "Map each to a class (mapping=), or to no label (ignore=[…] or an empty class in the "
        "mapping)"
    )
    assert int((from_raster(raster, grid, mapping={1: "water"}, ignore=[9, 255]) == 0).sum()) == 4
    assert refused(LabelError, lambda: from_raster(raster.drop_vars("spatial_ref"), grid)) == (
        "the label raster and the cube both need a CRS (rio.write_crs)"
    )
    assert refused(TypeError, lambda: from_raster(raster.expand_dims(band=[1]), grid)) == (
        "raster must be a 2-D DataArray (y, x) with a CRS, or a GeoTIFF path"
    )
    assert refused(FileNotFoundError, lambda: from_raster(tmp_path / "none.tif", grid)) == (
        f"label raster {str(tmp_path / 'none.tif')!r} does not exist"
    )


def test_polygons_classes_codes_and_years_are_refused_whole():
    grid, crs = _grid(), "EPSG:32750"
    known = DEFAULT_CLASSES.names
    fix = "pass schema= with a schema that has them (minecube.classes.read_schema)"
    ids = gpd.GeoDataFrame({"class": [1, 99]}, geometry=[box(0, 0, 30, 30)] * 2, crs=crs)
    assert refused(LabelError, lambda: rasterize(ids, grid)) == (
        f"column 'class' holds classes [99] that are not in the class schema "
        f"{DEFAULT_CLASSES.ids}; {fix}"
    )
    names = gpd.GeoDataFrame({"kind": ["pit"]}, geometry=[box(0, 0, 30, 30)], crs=crs)
    assert refused(LabelError, lambda: rasterize(names, grid, column="kind")) == (
        f"column 'kind' holds classes ['pit'] that are not in the class schema {known}; {fix}"
    )
    dated = gpd.GeoDataFrame({"class": ["open_pit"], "when": ["soon"]},
                             geometry=[box(0, 0, 30, 30)], crs=crs)  # fmt: skip
    assert refused(LabelError, lambda: rasterize(dated, _timed_grid(), time_column="when")) == (
        "column 'when' holds neither years nor dates (e.g. 'soon')"
    )
    coded = gpd.GeoDataFrame({"code": [10, 10, 77, 0]}, geometry=[box(0, 0, 30, 30)] * 4,
                             crs=crs)  # fmt: skip
    assert refused(LabelError, lambda: rasterize(coded, grid, column="code",
                                                 mapping={10: "water", 0: ""})) == (
        "column 'code' holds codes the mapping lacks: 77 (1 polygons); map each to a class, or "
        "to no label (an empty class in the mapping)"
    )  # fmt: skip
    texts = coded.assign(code=["10", "x7", "x7", "99"])
    assert refused(LabelError, lambda: rasterize(texts, grid, column="code",
                                                 mapping={10: "water"})) == (
        "column 'code' holds codes the mapping lacks: x7 (2 polygons), 99 (1 polygons); map "
        "each to a class, or to no label (an empty class in the mapping)"
    )  # fmt: skip
    assert refused(LabelError, lambda: rasterize(coded, grid, column="code",
                                                 mapping={10: "lake", 77: "", 0: ""})) == (
        "the mapping names a class minecube does not know (unknown class 'lake'; known classes: "
        f"{', '.join(known)}); pass schema= with the mapping's classes "
        "(minecube.classes.read_schema)"
    )  # fmt: skip
    mapped = rasterize(coded.assign(geometry=[box(0, 0, 30, 30), None, box(0, 0, 0, 0), None]),
                       grid, column="code", mapping={10: "water", 77: "", 0: ""})  # fmt: skip
    assert mapped.attrs["flag_meanings"] == "water"  # the mapping's classes only
    assert int((mapped == DEFAULT_CLASSES["water"].id).sum()) == 9


def test_labels_of_a_sliced_cube_are_the_slice_of_the_labels():
    """The grid comes from the cube's coordinates, not a transform cached before slicing (as a
    cube read from a file carries one)."""
    grid = _grid().rio.write_transform(_grid().rio.transform())
    polygons = gpd.GeoDataFrame({"class": ["open_pit", "water"]},
                                geometry=[box(0, 30, 20, 60), box(30, 0, 60, 20)],
                                crs="EPSG:32750")  # fmt: skip
    whole = rasterize(polygons, grid)
    part = grid.isel(y=slice(1, 5), x=slice(2, 6))
    np.testing.assert_array_equal(rasterize(polygons, part).values, whole.values[1:5, 2:6])
    codes = xr.DataArray(whole.values, dims=("y", "x"), coords=grid.coords).rio.write_crs(
        grid.rio.crs
    )
    np.testing.assert_array_equal(from_raster(codes, part).values, whole.values[1:5, 2:6])


def test_a_raster_of_class_ids_needs_no_mapping_and_leaves_what_it_misses_unlabelled():
    grid = _grid()
    ids = np.full((6, 6), DEFAULT_CLASSES["vegetation"].id, "uint8")
    ids[:2] = DEFAULT_CLASSES.nodata
    raster = xr.DataArray(ids, dims=("y", "x"), coords=grid.coords).rio.write_crs(grid.rio.crs)
    np.testing.assert_array_equal(from_raster(raster, grid).values, ids)
    half = from_raster(raster.isel(x=slice(0, 3)), grid)  # the raster covers half the grid
    np.testing.assert_array_equal(half.values[:, :3], ids[:, :3])
    assert bool((half.values[:, 3:] == DEFAULT_CLASSES.nodata).all())
    assert half.attrs["labelled_fraction"] == pytest.approx(12 / 36)


def test_a_signed_raster_s_negative_nodata_stays_unlabelled():
    grid = _grid()
    codes = np.full((6, 6), 1, "int16")
    codes[0] = -9999
    raster = xr.DataArray(codes, dims=("y", "x"), coords=grid.coords).rio.write_crs(grid.rio.crs)
    out = from_raster(raster.rio.write_nodata(-9999), grid, mapping={1: "water"})
    assert bool((out.values[0] == DEFAULT_CLASSES.subset(["water"]).nodata).all())
    assert int((out.values[1:] == DEFAULT_CLASSES["water"].id).sum()) == 30
