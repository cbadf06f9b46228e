"""Reading and validating site tables."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import Polygon

from minecube.sites import SiteTableError, read_sites, utm_epsg


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [(118.6, -22.7, 32750), (-68.9, -22.3, 32719), (-1.7, 6.2, 32630), (150.9, -32.4, 32756)],
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
