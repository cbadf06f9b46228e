"""Exports: CSV/Parquet tables, COG slices and class polygons, checked against the stats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio

from minecube.export import to_cog, to_polygons, write_table
from minecube.stats import StatsError, class_areas
from tests.test_stats import HAND, _grid


def test_tables_keep_their_units(tmp_path):
    table = class_areas(_grid(HAND), units="km2")
    parquet = pd.read_parquet(write_table(table, tmp_path / "t.parquet"))
    assert parquet.attrs["units"] == "km2"
    pd.testing.assert_frame_equal(parquet, table, check_like=True)
    csv = pd.read_csv(write_table(table, tmp_path / "sub" / "t.csv"))
    assert "area_km2" in csv.columns
    assert csv.time.tolist()[:1] == ["2021-01-01"]
    with pytest.raises(StatsError, match=r"\.csv or \.parquet"):
        write_table(table, tmp_path / "t.xlsx")


def test_cog_of_a_period_is_a_coloured_cloud_optimised_geotiff(tmp_path):
    pred = _grid(np.tile(HAND, (1, 100, 100)))  # 300 × 400 px, big enough for overviews
    path = to_cog(pred, tmp_path / "pred.tif", time="2022-01-01")
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.crs.to_epsg() == 32750
        assert src.nodata == 0
        assert src.colormap(1)[1] == (140, 81, 10, 255)  # open_pit's #8c510a
        assert src.tags()["period"] == "2022-01-01"
        np.testing.assert_array_equal(src.read(1), pred.isel(time=1).values)
        assert src.transform == pred.rio.transform(recalc=True)
    assert not list(tmp_path.glob("*.partial"))
    assert not list(tmp_path.glob("*.plain"))


def test_polygon_areas_equal_the_class_areas(tmp_path):
    import geopandas as gpd

    pred = _grid(HAND).assign_attrs(site_id="hand")
    frame = to_polygons(pred, tmp_path / "classes.gpkg", units="m2")
    stored = gpd.read_file(tmp_path / "classes.gpkg", layer="classes")
    assert len(stored) == len(frame) > 0
    assert stored.crs.to_epsg() == 32750
    assert set(stored.site_id) == {"hand"}
    polygons = frame.groupby(["time", "class"]).area_m2.sum()
    table = class_areas(pred, units="m2").set_index(["time", "class"]).area_m2
    assert np.allclose(polygons, table[table > 0].reindex(polygons.index))
    assert (table[table > 0].index.isin(polygons.index)).all()
    with pytest.raises(StatsError, match="projected"):
        to_polygons(_grid(HAND, crs="EPSG:4326", res=0.001, y0=10.0, x0=10.0))


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path):
    table = pd.DataFrame({"site_id": ["a", "b"], "commodity": ['=HYPERLINK("http://x")', "@SUM(1)"],
                          "area_ha": [-1.5, 2.0]})  # fmt: skip
    text = write_table(table, tmp_path / "t.csv").read_text().splitlines()
    assert text[1] == 'a,"\'=HYPERLINK(""http://x"")",-1.5'
    assert text[2] == "b,'@SUM(1),2.0"  # numbers, negative ones too, stay numbers
    back = pd.read_parquet(write_table(table, tmp_path / "t.parquet"))
    pd.testing.assert_frame_equal(back, table)  # Parquet keeps values as they are
