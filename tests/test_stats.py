"""Class areas, expansion, transitions and aggregation: hand-checkable grids and the demo truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from minecube.classes import DEFAULT_CLASSES
from minecube.stats import (
    MIN_STRATUM,
    SampleSizeWarning,
    StatsError,
    adjusted_areas,
    adjusted_mining_area,
    adjusted_trend,
    aggregate,
    class_areas,
    compare_areas,
    expansion,
    pixel_area,
    reference_from,
    sample,
    sample_size,
    transitions,
)
from tests.conftest import refused

PIT, DUMP, VEG, NODATA = 1, 2, 6, 0


def _grid(ids, *, crs="EPSG:32750", res=10.0, y0=7_400_000.0, x0=500_000.0, times=None):
    """Class ids on a north-up grid (default: 10 m pixels of southern UTM zone 50)."""
    ids = np.asarray(ids, dtype="uint8")
    ny, nx = ids.shape[-2:]
    coords = {"y": y0 - res * (np.arange(ny) + 0.5), "x": x0 + res * (np.arange(nx) + 0.5)}
    dims = ("y", "x")
    if ids.ndim == 3:
        dims = ("time", "y", "x")
        coords["time"] = pd.to_datetime(times or [f"{2021 + k}-01-01" for k in range(len(ids))])
    pred = xr.DataArray(ids, dims=dims, coords=coords, attrs=DEFAULT_CLASSES.cf_attrs())
    return pred.rio.write_crs(crs).rio.write_nodata(NODATA)


# a 3 × 4 grid over two years: the pit grows into vegetation, one pixel is clouded in 2022
HAND = [
    [[PIT, PIT, VEG, VEG], [DUMP, VEG, VEG, VEG], [VEG, VEG, VEG, VEG]],
    [[PIT, PIT, PIT, VEG], [DUMP, PIT, VEG, NODATA], [VEG, VEG, VEG, VEG]],
]


def test_class_areas_on_a_southern_utm_grid_by_hand():
    table = class_areas(_grid(HAND, times=["2021-06-01", "2022-06-01"]), units="m2")
    assert table.attrs["units"] == "m2"
    by = table.set_index(["time", "class"])
    first, second = pd.Timestamp("2021-06-01"), pd.Timestamp("2022-06-01")
    assert by.loc[(first, "open_pit"), "area_m2"] == 200  # 2 pixels of 10 m × 10 m
    assert by.loc[(first, "vegetation"), "area_m2"] == 900
    assert by.loc[(second, "open_pit"), "area_m2"] == 400
    assert by.loc[(second, "vegetation"), "area_m2"] == 600
    assert by.loc[(first, "tailings"), "area_m2"] == 0  # every class is listed, even empty
    # the clouded pixel is unobserved, not a class; nothing is lost
    assert by.xs(second, level="time").unobserved_m2.unique().tolist() == [100]
    totals = table.groupby("time").area_m2.sum() + table.groupby("time").unobserved_m2.first()
    assert totals.tolist() == [1200, 1200]
    # other units are the same numbers scaled
    ha = class_areas(_grid(HAND), units="ha")
    assert np.allclose(ha.area_ha * 1e4, table.area_m2)
    assert np.allclose(class_areas(_grid(HAND), units="km2").area_km2 * 1e6, table.area_m2)
    assert set(table.site_id) == {""}


def test_class_areas_dask_and_mapping_give_the_same_table():
    pred = _grid(HAND)
    lazy = pred.chunk({"time": 1, "y": 2, "x": 3})
    eager = class_areas(pred)
    table = class_areas({"a": lazy, "b": pred})
    assert table.site_id.tolist() == ["a"] * len(eager) + ["b"] * len(eager)
    pd.testing.assert_frame_equal(
        table[table.site_id == "a"].drop(columns="site_id").reset_index(drop=True),
        eager.drop(columns="site_id"),
    )


def test_class_areas_on_a_distributed_cluster(cluster):
    from distributed import Client

    lazy = _grid(np.tile(HAND, (1, 20, 20))).chunk({"y": 16, "x": 16})
    local = class_areas(lazy)
    with Client(cluster):
        remote = class_areas(lazy)
    pd.testing.assert_frame_equal(local, remote)


def test_pixel_area_of_non_square_pixels():
    """Pixels 10 m wide and 20 m tall, and 0.2° wide and 0.1° tall: each side from its own
    resolution (the geodesic polygon as the oracle for the geographic one)."""
    from pyproj import Geod

    def grid(crs, xres, yres, x0, y0):
        coords = {"y": y0 - yres * (np.arange(3) + 0.5), "x": x0 + xres * (np.arange(2) + 0.5)}
        return xr.DataArray(np.full((3, 2), VEG, "uint8"), dims=("y", "x"), coords=coords,
                            attrs=DEFAULT_CLASSES.cf_attrs()).rio.write_crs(crs)  # fmt: skip

    assert float(pixel_area(grid("EPSG:32750", 10.0, 20.0, 500_000, 7_400_000))) == 200.0
    lonlat = grid("EPSG:4326", 0.2, 0.1, 10.0, 60.3)
    south, north = lonlat.y.values[0] - 0.05, lonlat.y.values[0] + 0.05
    lons = np.r_[np.linspace(10, 10.2, 2001), np.linspace(10.2, 10, 2001)]
    lats = np.r_[np.full(2001, south), np.full(2001, north)]  # parallels densified
    expected, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    assert pixel_area(lonlat).values[0] == pytest.approx(abs(expected), rel=1e-6)


def test_projected_pixel_area_follows_the_crs_unit():
    metres = _grid(HAND[0], res=30.0)
    assert float(pixel_area(metres)) == 900.0
    feet = _grid(HAND[0], crs="EPSG:2263", res=10.0, y0=200_000.0, x0=1_000_000.0)
    assert float(pixel_area(feet)) == pytest.approx((10 * 1200 / 3937) ** 2, rel=1e-12)


@pytest.mark.parametrize("top", [0.3, 60.3, -44.7, 89.9, -80.0])
def test_geographic_pixel_area_matches_the_geodesic_polygon(top):
    from pyproj import Geod

    res = 0.1
    grid = _grid(np.full((3, 2), VEG), crs="EPSG:4326", res=res, y0=top, x0=10.0)
    areas = pixel_area(grid).values
    geod = Geod(ellps="WGS84")
    for k, lat in enumerate(grid.y.values):
        south, north = lat - res / 2, min(lat + res / 2, 90)
        lons = np.r_[np.linspace(10, 10 + res, 2001), np.linspace(10 + res, 10, 2001)]
        lats = np.r_[np.full(2001, south), np.full(2001, north)]  # parallels densified
        expected, _ = geod.polygon_area_perimeter(lons, lats)
        assert areas[k] == pytest.approx(abs(expected), rel=1e-6)
    # the rows' areas differ, and class areas sum them row by row
    table = class_areas(grid, units="km2")
    vegetation = table.set_index("class").loc["vegetation", "area_km2"]
    assert vegetation == pytest.approx(2 * areas.sum() / 1e6, rel=1e-12)


def test_truth_raster_areas_match_the_truth_polygons(world, lab):
    import geopandas as gpd

    for site in world.site_ids:
        polygons = gpd.read_file(world.labels_path(site))
        by_year = polygons.assign(area=polygons.area).groupby(["year", "class"]).area.sum()
        for year in world.spec.years:
            truth = world.truth(site, year).rio.write_nodata(NODATA)
            table = class_areas(truth, units="m2", schema=DEFAULT_CLASSES).set_index("class")
            expected = by_year.loc[year].reindex(table.index, fill_value=0)
            assert np.allclose(table.area_m2, expected, rtol=0.01, atol=0)
            assert table.unobserved_m2.iloc[0] == 0
        # the labels burnt on the cube grid give the same areas
        labels = class_areas(lab["labels"][site], units="m2").set_index(["time", "class"])
        for year, areas in labels.groupby(level="time"):
            expected = by_year.loc[year.year].reindex(areas.index.get_level_values(1), fill_value=0)
            assert np.allclose(areas.area_m2.to_numpy(), expected.to_numpy(), rtol=0.01)


def test_expansion_skips_cloudy_periods_and_dates_disturbance():
    row = [VEG, VEG, VEG, VEG]
    series = [
        [row, row],
        [[PIT, VEG, VEG, VEG], row],  # one pixel mined
        [[PIT, NODATA, NODATA, NODATA], [NODATA] * 4],  # clouded: only 1/8 observed
        [[PIT, PIT, VEG, DUMP], row],  # the footprint grows to 3 pixels
        [[PIT, PIT, VEG, DUMP], [VEG, VEG, VEG, PIT]],  # a last-period pit pixel
    ]
    times = ["2020-01-01", "2021-01-01", "2021-07-01", "2022-01-01", "2023-01-01"]
    result = expansion(_grid(series, times=times), units="m2", min_observed=0.8)
    table = result.table
    assert table.mining_m2.tolist() == [0, 100, 100, 300, 400]
    assert table.reliable.tolist() == [True, True, False, True, True]
    assert table.observed_pct.tolist() == [100, 100, 12.5, 100, 100]
    assert np.isnan(table.change_m2[2])  # the clouded period is not read as a change
    assert table.change_m2[3] == 200  # against 2021-01-01, the previous reliable period
    assert table.change_pct[3] == pytest.approx(200)
    years = (pd.Timestamp("2022-01-01") - pd.Timestamp("2021-01-01")).days / 365.25
    assert table.growth_pct_per_year[3] == pytest.approx(100 * (3 ** (1 / years) - 1))
    assert np.isnan(table.change_pct[1])  # growth from nothing has no rate
    summary = result.summary.iloc[0]
    assert summary.first_m2 == 0
    assert summary.last_m2 == 400
    assert summary.reliable_periods == 4
    date = result.disturbance[""]
    assert date.dtype == "datetime64[ns]"
    assert str(date.values[0, 0])[:10] == "2021-01-01"
    assert str(date.values[0, 1])[:10] == "2022-01-01"
    assert str(date.values[0, 3])[:10] == "2022-01-01"  # a dump is mining too
    assert str(date.values[1, 3])[:10] == "2023-01-01"  # end of series: one observation is enough
    assert np.isnat(date.values[1, 0])
    assert date.rio.crs.to_epsg() == 32750


def test_disturbance_needs_persistence_and_skips_clouds():
    # pixel 0: a one-period blip; pixel 1: mined, clouded, mined again; pixel 2: mined only
    # when restricted to open pits
    series = [
        [[VEG, VEG, VEG]],
        [[PIT, PIT, DUMP]],
        [[VEG, NODATA, DUMP]],
        [[VEG, PIT, DUMP]],
    ]
    pred = _grid(np.repeat(np.array(series), 2, axis=1))
    strict = expansion(pred, persistence=2).disturbance[""].values[0]
    assert np.isnat(strict[0])
    assert str(strict[1])[:4] == "2022"
    assert str(strict[2])[:4] == "2022"
    loose = expansion(pred, persistence=1).disturbance[""].values[0]
    assert str(loose[0])[:4] == "2022"
    pits = expansion(pred, mining_classes=["open_pit"]).disturbance[""].values[0]
    assert np.isnat(pits[2])
    chunked = expansion(pred.chunk({"y": 1, "x": 2}), persistence=2).disturbance[""]
    assert chunked.chunks is not None
    np.testing.assert_array_equal(chunked.values[0], strict)


def test_transitions_by_hand():
    matrix = transitions(_grid(HAND), 0, "2022-01-01", units="m2")
    assert matrix.attrs == {"units": "m2", "t0": "2021-01-01", "t1": "2022-01-01"}
    assert matrix.loc["vegetation", "open_pit"] == 200
    assert matrix.loc["open_pit", "open_pit"] == 200
    assert matrix.loc["vegetation", "vegetation"] == 600
    assert matrix.loc["vegetation", "unobserved"] == 100
    assert matrix.loc["waste_dump", "waste_dump"] == 100
    assert matrix.to_numpy().sum() == 1200
    assert matrix.index.name == "from"
    assert matrix.columns.name == "to"


def test_compare_areas_over_pixels_both_observe():
    truth = _grid(HAND[1:2])
    pred = _grid([[[PIT, PIT, VEG, VEG], [NODATA, PIT, VEG, VEG], [VEG, VEG, VEG, VEG]]])
    table = compare_areas({"s": pred}, {"s": truth}, units="m2").set_index("class")
    # the prediction's nodata pixel (truth: dump) and the truth's nodata pixel are left out
    pit = table.loc["open_pit"]
    assert [pit.predicted_m2, pit.truth_m2, pit.error_m2] == [300, 400, -100]
    assert table.loc["open_pit", "error_pct"] == -25
    assert table.loc["waste_dump", "truth_m2"] == 0
    assert table.compared_pct.iloc[0] == pytest.approx(100 * 10 / 12)


def test_aggregate_by_commodity_and_climate(world):
    sites = world.sites
    pred = _grid(HAND)
    table = class_areas({s: pred for s in sites.site_id}, units="m2")
    by = aggregate(table, sites, by="commodity")
    gold = by[(by.commodity == "gold") & (by["class"] == "open_pit")]
    assert gold.sites.tolist() == [2, 2]
    assert gold.area_m2.tolist() == [400, 800]
    both = aggregate(table, sites, by=["climate", "commodity"])
    assert set(both.columns) >= {"climate", "commodity", "time", "class", "area_m2", "sites"}
    assert both.groupby("time").area_m2.sum().tolist() == [8 * 1200, 8 * 1100]
    growth = aggregate(
        expansion({s: pred for s in sites.site_id}, units="m2").table, sites, by="climate"
    )
    assert "change_m2" not in growth.columns  # per-site changes do not add up
    assert growth[growth.climate == "tropical"].mining_m2.tolist() == [3 * 300, 3 * 500]


def test_bad_input_is_named():
    pred = _grid(HAND)
    with pytest.raises(StatsError, match=r"no CRS.*write_crs"):
        class_areas(pred.drop_vars("spatial_ref"))
    with pytest.raises(StatsError, match=r"unknown classes \['pitt'\].*open_pit"):
        expansion(pred, mining_classes=["pitt"])
    with pytest.raises(StatsError, match=r"values \[42\]"):
        class_areas(pred.where(pred != VEG, 42).astype("uint8"))
    with pytest.raises(StatsError, match=r"values \[42\]"):
        transitions(pred.where(pred != VEG, 42).astype("uint8"), 0, 1)
    with pytest.raises(StatsError, match="units='acres'"):
        class_areas(pred, units="acres")
    with pytest.raises(StatsError, match=r"t1='2030' is not one of .*2021-01-01"):
        transitions(pred, 0, "2030")
    with pytest.raises(StatsError, match="dims"):
        class_areas(pred.expand_dims(band=["a"]))
    bare = pred.copy()
    bare.attrs = {}
    with pytest.raises(StatsError, match="flag_values"):
        class_areas(bare)
    with pytest.raises(StatsError, match=r"no truth for \['b'\]"):
        compare_areas({"a": pred, "b": pred}, {"a": pred})
    with pytest.raises(StatsError, match="not on the prediction's grid"):
        compare_areas({"a": pred}, {"a": pred.isel(x=slice(1, None))})
    table = class_areas({"nowhere-mine": pred})
    with pytest.raises(StatsError, match=r"sites \['nowhere-mine'\] that are not in the site"):
        aggregate(table, pd.DataFrame({"site_id": ["a"], "commodity": ["gold"]}))
    with pytest.raises(StatsError, match=r"no column\(s\) \['climate'\]"):
        aggregate(table, pd.DataFrame({"site_id": ["nowhere-mine"]}), by="climate")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        expansion(pred)  # no division warnings from growth from zero


def test_accessor_is_the_same_function():
    import minecube  # noqa: F401 - registers the accessor

    pred = _grid(HAND)
    pd.testing.assert_frame_equal(
        pred.minecube.class_areas(units="m2"), class_areas(pred, units="m2")
    )
    pd.testing.assert_frame_equal(pred.minecube.expansion().table, expansion(pred).table)
    pd.testing.assert_frame_equal(pred.minecube.transitions(0, 1), transitions(pred, 0, 1))


# -- good-practice area estimation -------------------------------------------------------------

BARE = 8


def test_adjusted_areas_reproduce_olofsson_et_al_2014():
    """The worked example of Olofsson et al. (2014, RSE 148, tables 8–9): strata of 200,000,
    150,000, 3,200,000 and 6,450,000 ha and their sample's error matrix."""
    classes = [PIT, DUMP, VEG, BARE]  # standing in for deforestation, gain, forest, non-forest
    pixels = [2000, 1500, 32000, 64500]  # 1 km pixels: 100 ha each
    ids = np.repeat(classes, pixels).reshape(250, 400)
    pred = _grid(ids, res=1000.0)
    matrix = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
    rows = [(m, r) for i, m in enumerate(classes) for j, r in enumerate(classes)
            for _ in range(matrix[i][j])]  # fmt: skip
    points = pd.DataFrame(rows, columns=["map_class_id", "reference"])
    points = points.assign(site_id="example", time=pd.NaT)
    table = adjusted_areas({"example": pred}, points, units="ha", method="olofsson")
    deforestation = table.set_index("class_id").loc[PIT]
    assert deforestation.mapped_ha == pytest.approx(200_000)
    assert deforestation.adjusted_ha == pytest.approx(235_086, abs=1)
    assert 1.96 * deforestation.se_ha == pytest.approx(68_418, abs=1)  # the paper's z = 1.96
    assert deforestation.users_accuracy == pytest.approx(0.88)
    assert deforestation.producers_accuracy == pytest.approx(0.75, abs=0.005)
    assert 1.96 * deforestation.producers_se == pytest.approx(0.21, abs=0.005)
    assert deforestation.overall_accuracy == pytest.approx(0.95, abs=0.005)
    assert table.adjusted_ha.sum() == pytest.approx(10_000_000)
    # every standard error, worked by hand from eqs. 5 and 6 of the paper: the user's
    # accuracy's U(1 − U)/(n − 1), the overall accuracy's Σ W² U(1 − U)/(n − 1); the paper
    # prints the deforestation stratum's as ±0.07 (95 %) and the overall accuracy's as ±0.02
    n = np.array([75, 75, 165, 325])
    users = np.array([66 / 75, 55 / 75, 153 / 165, 313 / 325])
    w = np.array(pixels) / sum(pixels)
    by_class = table.set_index("class_id").loc[classes]
    np.testing.assert_allclose(by_class.users_se, np.sqrt(users * (1 - users) / (n - 1)))
    overall_se = np.sqrt((w**2 * users * (1 - users) / (n - 1)).sum())
    np.testing.assert_allclose(by_class.overall_se, overall_se)
    assert 1.96 * deforestation.users_se == pytest.approx(0.07, abs=0.005)
    # and the producer's accuracy's (eq. 7 of Olofsson et al. 2013, RSE 129): for reference class
    # j, N̂_j = Σ_i A_i n_ij / n_i; V(P̂_j) = [A_j² (1 − P̂_j)² Û_j (1 − Û_j) / (n_j − 1)
    # + P̂_j² Σ_{i≠j} A_i² (n_ij / n_i)(1 − n_ij / n_i) / (n_i − 1)] / N̂_j²
    area = np.array(pixels, float)
    counts = np.array(matrix, float)
    for j, cls in enumerate(classes):
        total = sum(area[i] * counts[i, j] / n[i] for i in range(4))
        producers = area[j] * counts[j, j] / n[j] / total
        others = sum(area[i] ** 2 * counts[i, j] / n[i] * (1 - counts[i, j] / n[i]) / (n[i] - 1)
                     for i in range(4) if i != j)  # fmt: skip
        own = area[j] ** 2 * (1 - producers) ** 2 * users[j] * (1 - users[j]) / (n[j] - 1)
        row = by_class.loc[cls]
        assert row.producers_accuracy == pytest.approx(producers)
        assert row.producers_se == pytest.approx(np.sqrt(own + producers**2 * others) / total)
    assert 1.96 * overall_se == pytest.approx(0.02, abs=0.01)
    # the same estimate with Jeffreys' bounds: skewed upward, as omissions hidden in the large
    # strata (3 and 2 points of 165 and 325) can only add area
    jeffreys = adjusted_areas({"example": pred}, points, units="ha").set_index("class_id").loc[PIT]
    assert jeffreys.adjusted_ha == deforestation.adjusted_ha
    assert jeffreys.ci_low_ha > deforestation.ci_low_ha
    assert jeffreys.ci_high_ha - jeffreys.adjusted_ha > deforestation.ci_high_ha - 235_086


def test_a_sample_that_does_not_fit_the_maps_is_refused_never_a_zero_width_interval():
    ids = np.full((2, 40, 40), VEG, "uint8")
    ids[:, :10, :10] = PIT
    pred = _grid(ids)
    points = sample({"pit": pred}, n=60, allocation="equal", seed=3)
    labelled = points.assign(reference=points.map_class)
    table = adjusted_areas({"pit": pred}, labelled)
    assert (table.se_ha > 0).all()  # the sound case runs
    assert table.index.equals(pd.RangeIndex(2 * len(DEFAULT_CLASSES)))  # one table of two maps
    assert table.attrs["units"] == "ha"
    bare = pred.copy()
    bare.attrs = {}  # no schema in the attributes: the one given is used
    pd.testing.assert_frame_equal(
        adjusted_areas({"pit": bare}, labelled, schema=DEFAULT_CLASSES), table
    )
    cases = {
        "unlabelled": (points.assign(reference=None),
                       r"none of the sample's 120 points has a 'reference' label"),
        "unknown site": (labelled.assign(site_id="elsewhere"),
                         r"points of sites \['elsewhere'\] that are not among.*\['pit'\]"),
        "period outside": (labelled.assign(time=pd.Timestamp("2030-01-01")),
                           r"120 labelled points are of periods the predictions do not have "
                           r"\(or that are all unobserved\): pit 2030-01-01"),
        "moved off the map": (labelled.assign(x=labelled.x + 1e4),
                              r"60 sample points of site 'pit' 2021-01-01 lie outside its grid"),
        "another map": (labelled.assign(map_class_id=VEG),
                        r"\d+ of the 60 sample points of site 'pit' 2021-01-01 say another class"),
        "unknown class": (labelled.assign(reference="lava"),
                          r"reference classes \['lava'\] of site 'pit' 2021-01-01 are not"),
    }  # fmt: skip
    for table, message in cases.values():  # each refused by both estimators
        for estimate in (adjusted_areas, adjusted_mining_area):
            with pytest.raises(StatsError, match=message):
                estimate({"pit": pred}, table)
    one_period = labelled[labelled.time == labelled.time.min()]  # a map simply not sampled
    with pytest.warns(SampleSizeWarning, match=r"no labelled sample point falls on site 'pit' "
                                               r"2022-01-01: no estimate for it"):  # fmt: skip
        only_2021 = adjusted_areas({"pit": pred}, one_period)
    assert set(only_2021.time) == {pd.Timestamp("2021-01-01")}
    few = labelled.drop(labelled.index[(labelled.map_class == "open_pit")][5:])
    with pytest.warns(SampleSizeWarning, match=r"open_pit: 5 \(add 15\).*min_per_stratum=20"):
        adjusted_areas({"pit": pred}, few)
    with pytest.raises(StatsError, match="method='bayes' is not 'jeffreys' or 'olofsson'"):
        adjusted_areas({"pit": pred}, labelled, method="bayes")


def test_intervals_hold_the_truth_at_their_nominal_rate_where_the_map_is_good():
    """A seeded simulation: a good map (a 2 % band of omitted pit around the mapped one, 0.3 %
    of vegetation wrong) sampled 400 times at n = 300, 20 points per stratum or more. The
    normal interval, blind to errors no point happened to hit, holds the true footprint far
    less often than 95 % (84 %); the default one holds it at least 93 % of the time and at most
    98.5 % (± 1.1 points: the standard error of 400 trials)."""
    rng = np.random.default_rng(7)
    truth = np.full((120, 120), VEG, "uint8")
    truth[20:60, 20:60] = PIT
    truth[60:70, 20:50] = DUMP
    mapped = truth.copy()
    mapped[20:22, 20:60] = VEG  # the pit's edge missed: omission inside the vegetation stratum
    wrong = (rng.random(truth.shape) < 0.003) & (truth == VEG)
    mapped[wrong] = DUMP
    pred, true = _grid(mapped[None], times=["2022-01-01"]), _grid(truth[None], times=["2022-01-01"])
    true_ha = np.isin(truth, [PIT, DUMP]).sum() * 0.01
    held = {"jeffreys": [], "olofsson": []}
    for seed in range(400):
        points = sample({"s": pred}, n=300, min_per_stratum=MIN_STRATUM, seed=seed)
        labelled = reference_from(points, {"s": true})
        for method, hits in held.items():
            row = adjusted_mining_area({"s": pred}, labelled, method=method).iloc[0]
            hits.append(row.ci_low_ha <= true_ha <= row.ci_high_ha)
    # 98 % here: where errors are this rare, the prior errs on the side of width
    assert 0.93 <= np.mean(held["jeffreys"]) <= 0.985, np.mean(held["jeffreys"])
    assert np.mean(held["olofsson"]) < 0.9, np.mean(held["olofsson"])


def test_the_adjusted_trend_carries_each_periods_interval():
    years = pd.date_range("2018", periods=6, freq="YS")
    area = 50 + 4.0 * np.arange(6) + np.array([0.0, 1, -1, 0.5, -0.5, 0])
    table = pd.DataFrame({"site_id": "pit", "time": years, "adjusted_ha": area,
                          "ci_low_ha": area, "ci_high_ha": area})  # fmt: skip
    exact = adjusted_trend(table).iloc[0]  # areas known exactly: Theil–Sen's own interval
    from scipy.stats import theilslopes

    slope, _, low, high = theilslopes(area, (years - years[0]).days / 365.25)
    assert (
        exact.trend_ha_per_year,
        exact.trend_low_ha_per_year,
        exact.trend_high_ha_per_year,
    ) == pytest.approx((slope, low, high))
    doubtful = adjusted_trend(table.assign(ci_low_ha=area - 6, ci_high_ha=area + 6)).iloc[0]
    assert doubtful.trend_ha_per_year == pytest.approx(slope)
    assert doubtful.trend_low_ha_per_year < low - 0.5
    assert doubtful.trend_high_ha_per_year > high + 0.5
    assert doubtful.trend_low_ha_per_year < 4 < doubtful.trend_high_ha_per_year
    assert np.isnan(adjusted_trend(table.head(2)).iloc[0].trend_ha_per_year)  # too few periods


def test_a_doubt_reaching_one_way_draws_the_trend_that_way_only():
    from minecube.stats import _drawn_slopes

    years, area, last = np.array([0.0, 1.0, 2.0]), np.full(3, 10.0), np.array([0.0, 0.0, 6.0])
    # the last period may be up to 6 ha smaller, never larger: of the pairs' slopes 0, d / 2
    # and d (d = its drawn change), the median is d / 2, down to −3 ha/yr at the interval's
    # low, which a draw reaches 2.5 % of the time
    down = _drawn_slopes(years, area, area - last, area, np.random.default_rng(0))
    assert down.shape == (4000,)
    assert down.max() == 0.0
    assert np.mean(down < 0) == pytest.approx(0.5, abs=0.03)  # the draws below the estimate
    assert np.quantile(down, 0.025) == pytest.approx(-3.0, abs=0.2)
    up = _drawn_slopes(years, area, area, area + last, np.random.default_rng(0))
    assert up.min() == 0.0
    assert np.quantile(up, 0.975) == pytest.approx(3.0, abs=0.2)


def test_sample_is_stratified_reproducible_and_labels_in_a_gis(tmp_path):
    import geopandas as gpd

    ids = np.full((2, 60, 80), VEG, "uint8")
    ids[:, :10, :10] = PIT
    ids[1, :20, :10] = PIT  # the pit grows
    ids[:, -1, :] = NODATA
    pred = _grid(ids)
    points = sample({"pit": pred}, n=100, min_per_stratum=30, seed=7)
    again = sample({"pit": pred}, n=100, min_per_stratum=30, seed=7)
    pd.testing.assert_frame_equal(points.drop(columns="geometry"), again.drop(columns="geometry"))
    counts = points.groupby(["time", "map_class"]).size()
    pit_share = [100 / 4720, 200 / 4720]  # of the observed pixels, the last row is nodata
    for when, share in zip(pred.time.values, pit_share, strict=True):
        assert counts.loc[(when, "open_pit")] == 30  # raised to the minimum
        assert counts.loc[(when, "vegetation")] == round(100 * (1 - share))  # proportional
    # every point sits on a pixel of its stratum, never on nodata, each pixel at most once
    on_map = pred.sel(x=xr.DataArray(points.x), y=xr.DataArray(points.y),
                      time=xr.DataArray(points.time)).values  # fmt: skip
    assert (on_map == points.map_class_id.to_numpy()).all()
    assert not points.duplicated(["time", "x", "y"]).any()
    assert (points.weight * points.groupby(["time", "stratum"]).x.transform("size")
            == points.stratum_pixels).all()  # fmt: skip
    points.to_file(tmp_path / "sample.gpkg")  # ready to label in QGIS
    read = gpd.read_file(tmp_path / "sample.gpkg")
    assert len(read) == len(points)
    assert read.geometry.x.round(6).tolist() == points.lon.round(6).tolist()
    with pytest.raises(StatsError, match="allocation names unknown classes"):
        sample({"pit": pred}, n=10, allocation={"open_pitt": 5})
    assert sample_size({"a": 1, "b": 1}, {"a": 0.5, "b": 0.5}, target_se=0.05) == 100


def _noisy_maps(world):
    """Maps of three demo sites made from their truth with a systematic error (pits two pixels
    too wide) and 4 % random errors; the truth; the true class areas."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    maps, truths, true_area = {}, {}, {}
    for site in ("hunter-coal", "pilbara-iron", "sudbury-nickel"):
        years = list(world.spec.years)
        truth = xr.concat([world.truth(site, y) for y in years], "time")
        truth = truth.assign_coords(time=pd.to_datetime([f"{y}-01-01" for y in years]))
        truth = truth.rio.write_nodata(NODATA)
        ids = truth.values.copy()
        for k in range(len(years)):  # pits two pixels too wide, and 4 % of pixels wrong
            wide = ndimage.binary_dilation(ids[k] == PIT, iterations=2) & (ids[k] != NODATA)
            ids[k][wide] = PIT
            flip = (rng.random(ids[k].shape) < 0.04) & (ids[k] != NODATA)
            ids[k][flip] = rng.choice([PIT, DUMP, VEG, BARE], flip.sum())
        maps[site] = truth.copy(data=ids).assign_attrs(DEFAULT_CLASSES.cf_attrs())
        truths[site] = truth.assign_attrs(DEFAULT_CLASSES.cf_attrs())
        true_area[site] = class_areas(truths[site], units="ha").set_index(["time", "class"])
    return maps, truths, true_area


@pytest.mark.slow
def test_adjusted_intervals_cover_the_true_area_on_the_demo_world(world):
    """A map with a systematic error (pits drawn two pixels too wide) and noise, against the
    demo world's truth: over repeated samples labelled from the truth, the 95 % intervals cover
    the true class areas 93–97 % of the time (95.0 % of 1,110 cases; 95.3 % of 2,590 at 70
    samples), and the adjusted mining area is close to the truth where the mapped one is far
    off."""
    maps, truths, true_area = _noisy_maps(world)
    covered, mining, covered_mining = [], [], []
    for r in range(30):
        points = sample(maps, n=1000, min_per_stratum=50, seed=r)
        labelled = reference_from(points, truths)
        table = adjusted_areas(maps, labelled, units="ha")
        # classes with enough sample: 5 % of the map or more (rarer ones are covered less
        # often, ~86 % here: their omissions inside large strata are seldom sampled)
        share = table.mapped_ha / table.groupby(["site_id", "time"]).mapped_ha.transform("sum")
        for row in table[share >= 0.05].itertuples():
            truth_ha = true_area[row.site_id].loc[(row.time, row._3), "area_ha"]
            covered.append(row.ci_low_ha <= truth_ha <= row.ci_high_ha)
        mining.append(table[table["class"] == "open_pit"])
        footprint = adjusted_mining_area(maps, labelled, units="ha")
        for row in footprint.itertuples():  # the union of the mining classes, as one class
            truth_ha = true_area[row.site_id].loc[row.time].query("is_mining").area_ha.sum()
            covered_mining.append(row.ci_low_ha <= truth_ha <= row.ci_high_ha)
        by_class = table[table.is_mining].groupby(["site_id", "time"]).adjusted_ha.sum()
        assert np.allclose(footprint.set_index(["site_id", "time"]).adjusted_ha, by_class)
    coverage = float(np.mean(covered))
    assert 0.93 <= coverage <= 0.97, coverage
    assert 0.93 <= float(np.mean(covered_mining)) <= 0.97  # the footprint: 96.7 % of 270
    # the pits' area per site and period, mapped and estimated (mean over the samples)
    mining = pd.concat(mining).groupby(["site_id", "time"])[["mapped_ha", "adjusted_ha"]].mean()
    truth_pit = [true_area[s].loc[(t, "open_pit"), "area_ha"] for s, t in mining.index]
    mapped_error = np.median(np.abs(mining.mapped_ha / truth_pit - 1))
    adjusted_error = np.median(np.abs(mining.adjusted_ha / truth_pit - 1))
    assert mapped_error > 0.1  # the map is far off...
    assert adjusted_error < 0.03  # ...the estimate is not (unbiased)


def test_expansion_trend_is_robust_to_one_misclassified_period():
    """Eight yearly periods growing by 10 pixels a year, one of them misread as twice the
    footprint: the Theil–Sen trend keeps the growth, with an interval around it."""
    ids = np.full((8, 10, 20), VEG, "uint8")
    for k in range(8):
        ids[k].flat[: 20 + 10 * k] = PIT
    ids[5].flat[: 2 * (20 + 10 * 5)] = PIT  # one bad period
    pred = _grid(ids, times=[f"{2016 + k}-01-01" for k in range(8)])
    row = expansion(pred, units="m2", min_observed=0.5).summary.iloc[0]
    assert row.trend_m2_per_year == pytest.approx(1000, rel=0.02)  # 10 pixels of 100 m²
    assert row.trend_low_m2_per_year <= 1000 <= row.trend_high_m2_per_year
    assert row.trend_pct_per_year == pytest.approx(100 * 1000 / 5500, rel=0.05)
    short = expansion(pred.isel(time=[0, 1]), units="m2", min_observed=0.5).summary.iloc[0]
    assert np.isnan(short.trend_m2_per_year)  # two periods: no trend, only their change


def test_change_strata_estimate_the_area_mined_between_two_dates(world):
    """A change sample between the first and last year: the intervals of mining gain and of
    the stable footprint cover the true areas, which the change map gets wrong."""
    maps, truths, _ = _noisy_maps(world)
    first, last = (f"{y}-01-01" for y in (world.spec.years[0], world.spec.years[-1]))
    true_gain = {}
    for site, truth in truths.items():
        a, b = truth.sel(time=first).values, truth.sel(time=last).values
        mining = [c.id for c in DEFAULT_CLASSES.mining]
        gained = ~np.isin(a, mining) & np.isin(b, mining) & (a != NODATA) & (b != NODATA)
        true_gain[site] = gained.sum() * 100 / 1e4  # 10 m pixels, in ha
    covered, mapped_gain = [], {}
    for r in range(40):
        points = sample(maps, n=600, min_per_stratum=50, strata="change",
                        periods=(first, last), seed=r)  # fmt: skip
        assert set(points.map_class) <= {"stable non-mining", "mining gain", "mining loss",
                                         "stable mining"}  # fmt: skip
        assert (points.time0 == pd.Timestamp(first)).all()
        table = adjusted_areas(maps, reference_from(points, truths), units="ha")
        gain = table[table["class"] == "mining gain"].set_index("site_id")
        for site, row in gain.iterrows():
            covered.append(row.ci_low_ha <= true_gain[site] <= row.ci_high_ha)
            mapped_gain[site] = row.mapped_ha
    assert 0.9 <= np.mean(covered) <= 0.99, np.mean(covered)
    assert any(abs(mapped_gain[s] / true_gain[s] - 1) > 0.1 for s in true_gain)  # map is off
    with pytest.raises(StatsError, match="give periods"):
        sample(maps, n=10, strata="change")


def test_a_change_sample_of_a_perfect_map_gives_its_areas_by_pair_of_dates():
    """HAND from 2021 to 2022: two pixels gained by the pit, three mining in both years (two
    pit, one dump), one unobserved in 2022, six vegetation in both."""
    first, last = "2021-06-01", "2022-06-01"
    maps = {"s": _grid(HAND, times=[first, last])}
    points = sample(maps, n=12, min_per_stratum=2, strata="change", periods=(first, last), seed=0)
    table = adjusted_areas(maps, reference_from(points, maps), units="m2")
    assert list(table.columns[:3]) == ["site_id", "time0", "time"]
    assert set(table.time0) == {pd.Timestamp(first)}
    assert set(table.time) == {pd.Timestamp(last)}
    areas = table.set_index("class").adjusted_m2
    assert areas.to_dict() == pytest.approx(
        {"stable non-mining": 600, "mining gain": 200, "mining loss": 0, "stable mining": 300}
    )


def _frame(pit, dump=0, cloud=0):
    """2 × 5 pixels of 100 m², filled from the first: ``pit`` pit pixels, ``dump`` dump pixels
    and ``cloud`` unobserved ones, vegetation in the rest."""
    flat = [PIT] * pit + [DUMP] * dump + [NODATA] * cloud
    return np.reshape(flat + [VEG] * (10 - len(flat)), (2, 5))


def test_expansion_summary_worked_out_by_hand_for_growth_one_period_and_growth_from_nothing():
    grows = _grid(
        [_frame(2), _frame(4), _frame(1, cloud=5), _frame(5), _frame(6, 2)],
        times=["2020-01-01", "2021-01-01", "2021-07-01", "2022-01-01", "2024-01-01"],
    )
    one = _grid([_frame(3), _frame(3, cloud=3)], times=["2020-01-01", "2021-01-01"])
    new = _grid([_frame(0), _frame(3)], times=["2020-01-01", "2021-01-01"])  # fmt: skip
    result = expansion({"grows": grows, "one": one, "new": new}, units="m2")
    summary = result.summary.set_index("site_id")
    trend = ["trend_m2_per_year", "trend_low_m2_per_year", "trend_high_m2_per_year",
             "trend_pct_per_year"]  # fmt: skip
    assert list(result.summary.columns) == [
        "site_id", "reliable_periods", "first", "last", "first_m2", "last_m2", "change_m2",
        "change_pct", "growth_pct_per_year", *trend,
    ]  # fmt: skip
    g = summary.loc["grows"]
    assert (g.reliable_periods, g["first"], g["last"]) == (
        4,
        pd.Timestamp("2020-01-01"),
        pd.Timestamp("2024-01-01"),
    )
    assert (g.first_m2, g.last_m2, g.change_m2, g.change_pct) == (200, 800, 600, 300)
    assert g.growth_pct_per_year == pytest.approx(100 * (2**0.5 - 1))  # ×4 in 1461 days: 4 years
    years = np.array([0, 366, 731, 1461]) / 365.25  # the reliable periods (2020 is a leap year)
    area = np.array([200, 400, 500, 800])
    slopes = [
        (area[j] - area[i]) / (years[j] - years[i]) for i in range(4) for j in range(i + 1, 4)
    ]
    assert g.trend_m2_per_year == pytest.approx(np.median(slopes))  # Theil–Sen: median slope
    assert g.trend_pct_per_year == pytest.approx(100 * np.median(slopes) / 450)  # of the median
    assert g.trend_low_m2_per_year < g.trend_m2_per_year < g.trend_high_m2_per_year
    o = summary.loc["one"]  # one reliable period: nothing to compare
    assert o.reliable_periods == 1
    assert pd.isna(o["first"])
    assert pd.isna(o["last"])
    assert o.drop(["reliable_periods", "first", "last"]).isna().all()
    n = summary.loc["new"]  # from nothing: a change, but no rate
    assert (n["first"], n["last"], n.first_m2, n.last_m2, n.change_m2) == (
        pd.Timestamp("2020-01-01"),
        pd.Timestamp("2021-01-01"),
        0,
        300,
        300,
    )
    assert n[["change_pct", "growth_pct_per_year", *trend]].isna().all()
    assert result.summary.attrs["units"] == result.table.attrs["units"] == "m2"
    assert result.table.site_id.tolist() == ["grows"] * 5 + ["one"] * 2 + ["new"] * 2
    assert result.table.index.equals(pd.RangeIndex(9))
    alone = expansion(one, units="m2").summary  # no site with two reliable periods
    assert alone[["first_m2", "change_pct", "trend_m2_per_year"]].dtypes.tolist() == [float] * 3


def test_aggregate_sums_stocks_recomputes_error_pct_and_counts_degraded_sites():
    time = pd.Timestamp("2024-01-01")
    table = pd.DataFrame({
        "site_id": ["a", "b", "c"], "time": time, "class": "open_pit",
        "predicted_m2": [300.0, 100.0, 50.0], "truth_m2": [200.0, 200.0, 100.0],
        "error_m2": [100.0, -100.0, -50.0], "error_pct": [50.0, -50.0, -50.0],
        "compared_pct": [100.0, 90.0, 80.0], "degraded": [True, False, True],
    })  # fmt: skip
    sites = pd.DataFrame({"site_id": ["a", "b", "c"], "commodity": ["gold", "gold", "coal"],
                          "climate": ["arid", "wet", "arid"]})  # fmt: skip
    table.insert(3, "class_id", PIT)
    table.insert(4, "is_mining", True)
    for attrs in ({"units": "m2"}, {}):  # the units recorded, or read from the column names
        table.attrs = attrs
        out = aggregate(table, sites)
        columns = ["commodity", "time", "class", "class_id", "is_mining", "predicted_m2",
                   "truth_m2", "error_m2", "sites", "degraded_sites", "error_pct"]  # fmt: skip
        assert list(out.columns) == columns
        assert out.commodity.tolist() == ["coal", "gold"]
        assert out.predicted_m2.tolist() == [50, 400]
        assert out.truth_m2.tolist() == [100, 400]
        assert out.error_m2.tolist() == [-50, 0]
        assert out.error_pct.tolist() == [-50, 0]  # of the summed truth, not a mean of -50 and 50
        assert out.sites.tolist() == [1, 2]
        assert out.degraded_sites.tolist() == [1, 1]
        assert out.attrs["units"] == "m2"
    unknown = sites.assign(commodity=["gold", "gold", None])  # a site of no known commodity
    plain = table.drop(columns="degraded").assign(truth_m2=[200.0, 200.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        kept = aggregate(plain, unknown)
    assert kept.commodity.tolist()[0] == "gold"
    assert pd.isna(kept.commodity.tolist()[1])  # kept as its own group, not dropped
    assert kept.error_pct.tolist() == [0, -np.inf]  # -50 m² of 0 m² of truth
    assert "degraded_sites" not in kept.columns
    both = aggregate(table, sites, by=["climate", "commodity"])
    assert both[["climate", "commodity", "sites"]].values.tolist() == [
        ["arid", "coal", 1], ["arid", "gold", 1], ["wet", "gold", 1]
    ]  # fmt: skip
    assert refused(StatsError, lambda: aggregate(table.drop(columns="site_id"), sites)) == (
        "the table has no site_id column (columns: ['time', 'class', 'class_id', 'is_mining', "
        "'predicted_m2', 'truth_m2', 'error_m2', 'error_pct', 'compared_pct', 'degraded'])"
    )
    assert refused(StatsError, lambda: aggregate(table, sites, by=["climate", "region"])) == (
        "the site table has no column(s) ['region']; its columns are ['site_id', 'commodity', "
        "'climate']"
    )
    assert refused(StatsError, lambda: aggregate(table, sites[sites.site_id != "b"])) == (
        "the table has sites ['b'] that are not in the site table (['a', 'c']); pass the site "
        "table the predictions were made for"
    )


def test_transitions_in_hectares_by_date_and_position_with_refusals_in_full():
    pred = _grid(HAND).assign_attrs(site_id="mine-a")  # 12 pixels of 0.01 ha
    m = transitions(pred, "2021-01-01", -1, units="ha")
    expected = {("open_pit", "open_pit"): 2, ("vegetation", "open_pit"): 2,
                ("waste_dump", "waste_dump"): 1, ("vegetation", "vegetation"): 6,
                ("vegetation", "unobserved"): 1}  # fmt: skip
    for (a, b), pixels in expected.items():
        assert m.loc[a, b] == pytest.approx(0.01 * pixels)
    assert m.to_numpy().sum() == pytest.approx(0.12)
    assert m.attrs == {"units": "ha", "t0": "2021-01-01", "t1": "2022-01-01"}
    pd.testing.assert_frame_equal(transitions(pred, -2, 1, units="ha"), m)
    bare = pred.copy()
    bare.attrs = {}  # no schema in the attributes: the one given is used
    pd.testing.assert_frame_equal(transitions(bare, 0, 1, units="ha", schema=DEFAULT_CLASSES), m)
    periods = "['2021-01-01', '2022-01-01']"
    for t1 in (2, -3):
        assert refused(StatsError, lambda t=t1: transitions(pred, 0, t)) == (
            f"t1={t1} is out of range for 2 periods {periods}"
        )
    for t0 in ("2020-01-01", "soon"):
        assert refused(StatsError, lambda t=t0: transitions(pred, t, 1)) == (
            f"t0={t0!r} is not one of the prediction's periods {periods}; give one of them or a "
            "position"
        )
    unknown = (
        "site 'mine-a': the raster holds values [42] that are neither classes "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10] nor nodata 0; pass the schema it was made with (schema=)"
    )
    for t in (0, 1):  # in either period; and one pixel of a quarter of a square metre
        odd = pred.copy(deep=True)
        odd[t, 2, 0] = 42
        assert refused(StatsError, lambda o=odd: transitions(o, 0, 1)) == unknown
        fine = _grid(odd.values, res=0.5).assign_attrs(site_id="mine-a")
        assert refused(StatsError, lambda f=fine: transitions(f, 0, 1)) == unknown


def test_compare_areas_in_hectares_worked_out_by_hand():
    pred = _grid(HAND).assign_attrs(site_id="mine-a")
    truth = _grid(HAND[0])  # the first year's map, static, with one pixel unlabelled
    truth[2, 3] = NODATA
    table = compare_areas(pred, truth, units="ha")
    assert list(table.columns) == ["site_id", "time", "class", "class_id", "is_mining",
                                   "predicted_ha", "truth_ha", "error_ha", "error_pct",
                                   "compared_pct"]  # fmt: skip
    assert set(table.site_id) == {"mine-a"}
    rows = table.set_index(["time", "class"])
    first, second = pd.Timestamp("2021-01-01"), pd.Timestamp("2022-01-01")
    # 2021: the 11 labelled pixels agree; 2022: 10 pixels both observe and label, two of the
    # truth's vegetation now mapped as pit
    for when, cls, predicted, true in [(first, "open_pit", 2, 2), (first, "vegetation", 8, 8),
                                       (second, "open_pit", 4, 2), (second, "vegetation", 5, 7),
                                       (second, "waste_dump", 1, 1)]:  # fmt: skip
        row = rows.loc[(when, cls)]
        assert (row.predicted_ha, row.truth_ha) == pytest.approx((0.01 * predicted, 0.01 * true))
        assert row.error_ha == pytest.approx(0.01 * (predicted - true))
        assert row.error_pct == pytest.approx(100 * (predicted - true) / true)
    assert rows.loc[(first, "open_pit")].class_id == PIT
    assert rows.loc[(first, "open_pit")].is_mining
    assert not rows.loc[(first, "vegetation")].is_mining
    assert np.isnan(rows.loc[(first, "tailings")].error_pct)  # 0 of 0
    assert rows.xs(first).compared_pct.iloc[0] == pytest.approx(100 * 11 / 12)
    assert rows.xs(second).compared_pct.iloc[0] == pytest.approx(100 * 10 / 12)
    assert table.index.equals(pd.RangeIndex(2 * len(DEFAULT_CLASSES)))
    assert table.attrs["units"] == "ha"
    odd = truth.copy(deep=True)
    odd[0, 0] = 42
    assert refused(StatsError, lambda: compare_areas(pred, odd)) == (
        "site 'mine-a': the raster holds values [42] that are neither classes "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10] nor nodata 0; pass the schema it was made with (schema=)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # x/0 and 0/0 are inf and NaN, silently
        pit = compare_areas(_grid([[PIT, PIT], [VEG, VEG]]), _grid([[VEG, VEG], [VEG, VEG]]))
    assert pit.set_index("class").loc["open_pit", "error_pct"] == np.inf
    assert np.isnan(pit.set_index("class").loc["tailings", "error_pct"])
    bare = pred.copy()
    bare.attrs = {"site_id": "mine-a"}
    pd.testing.assert_frame_equal(compare_areas(bare, truth, units="ha", schema=DEFAULT_CLASSES),
                                  table)  # fmt: skip
    assert refused(StatsError, lambda: compare_areas({"a": pred}, {"b": truth})) == (
        "predictions and truth cover different sites: no truth for ['a'], no prediction for "
        "['b']; give both mappings the same site ids"
    )
    shifted = truth.isel(x=slice(1, None))
    assert refused(StatsError, lambda: compare_areas(pred, shifted)) == (
        "site 'mine-a': truth {'time': 2, 'y': 3, 'x': 3} is not on the prediction's grid and "
        "periods {'time': 2, 'y': 3, 'x': 4}; rasterize the labels onto the prediction "
        "(minecube.labels.rasterize(labels, pred, time_column=...))"
    )


def test_expansion_table_dates_attributes_and_refusals_in_full():
    times = ["2020-01-01", "2021-01-01", "2021-07-01", "2022-01-01", "2024-01-01"]
    pred = _grid([_frame(2), _frame(4), _frame(1, cloud=5), _frame(5), _frame(8)], times=times)
    pred.attrs["degraded_periods"] = '{"2021-07-01": {"S2B_1": "404"}}'
    result = expansion(pred, units="m2")
    table = result.table
    assert table.mining_m2.tolist() == [200, 400, 100, 500, 800]
    np.testing.assert_array_equal(table.change_m2, [np.nan, 200, np.nan, 100, 300])
    np.testing.assert_allclose(table.change_pct, [np.nan, 100, np.nan, 25, 60])
    growth = [np.nan, 2 ** (365.25 / 366), np.nan, 1.25 ** (365.25 / 365), 1.6 ** (365.25 / 730)]
    np.testing.assert_allclose(table.growth_pct_per_year, 100 * (np.array(growth) - 1))
    assert table.degraded.tolist() == [False, False, True, False, False]
    date = result.disturbance[""]
    assert date.name == "disturbance_date"
    assert {k: date.attrs[k] for k in ("long_name", "mining_classes", "persistence")} == {
        "long_name": "first period the pixel became mining",
        "mining_classes": "open_pit waste_dump tailings mine_water plant",  # the schema's
        "persistence": 2,
    }
    stamps = [str(v)[:10] for v in date.values.ravel()]
    # mining from the first period on; then two pixels in 2021, one in 2022 (the clouded
    # period skipped, not counted), three in 2024 (the last period: one observation is enough)
    assert (
        stamps
        == ["2020-01-01"] * 2
        + ["2021-01-01"] * 2
        + ["2022-01-01"]
        + ["2024-01-01"] * 3
        + ["NaT"] * 2
    )
    pits = expansion(pred, mining_classes=["open_pit"]).disturbance[""]
    assert pits.attrs["mining_classes"] == "open_pit"
    lazy = expansion(pred.chunk({"time": 1, "y": 1}), units="m2")
    pd.testing.assert_frame_equal(lazy.table, table)
    np.testing.assert_array_equal(lazy.disturbance[""].values, date.values)
    bare = pred.copy()
    bare.attrs = {}
    pd.testing.assert_frame_equal(
        expansion(bare, units="m2", schema=DEFAULT_CLASSES).summary, result.summary
    )
    edge = expansion(pred, units="m2", min_observed=0.5).table.reliable  # observed 50 %: enough
    assert edge.tolist() == [True] * 5
    assert expansion(pred, units="m2", min_observed=0).table.reliable.all()
    assert expansion(pred, units="m2", min_observed=1).table.reliable.tolist() == [
        True, True, False, True, True
    ]  # fmt: skip
    blip = _grid([_frame(0), _frame(1), _frame(0), _frame(0)], times=times[:2] + times[3:])
    assert np.isnat(expansion(blip).disturbance[""].values).all()  # one period is not mining
    for kwargs, message in [
        ({"min_observed": 1.5}, "min_observed=1.5 must be a share between 0 and 1"),
        ({"min_observed": -0.1}, "min_observed=-0.1 must be a share between 0 and 1"),
        ({"persistence": 0}, "persistence=0 must be at least 1 period"),
        ({"mining_classes": ["open_pit", "quarry"]},
         "mining_classes names unknown classes ['quarry']; the prediction's classes are "
         "open_pit, waste_dump, tailings, mine_water, plant, vegetation, cropland, bare_land, "
         "urban, water"),
    ]:  # fmt: skip
        assert refused(StatsError, lambda k=kwargs: expansion(pred, **k)) == message


def test_expansion_trend_from_three_periods_and_none_in_percent_of_a_median_of_nothing():
    times = ["2020-01-01", "2021-01-01", "2022-01-01", "2023-01-01"]
    three = _grid([_frame(1), _frame(2), _frame(4)], times=times[:3])
    late = _grid([_frame(0), _frame(0), _frame(0), _frame(3)], times=times)
    summary = expansion({"three": three, "late": late}, units="m2").summary.set_index("site_id")
    years = np.array([0, 366, 731]) / 365.25
    slopes = [100 / years[1], 300 / years[2], 200 / (years[2] - years[1])]
    assert summary.loc["three"].trend_m2_per_year == pytest.approx(np.median(slopes))
    assert summary.loc["three"].trend_pct_per_year == pytest.approx(np.median(slopes) / 2)
    years = np.array([0, 366, 731, 1096]) / 365.25
    slopes = [0, 0, 0, 300 / years[3], 300 / (years[3] - years[1]), 300 / (years[3] - years[2])]
    assert summary.loc["late"].trend_m2_per_year == pytest.approx(np.median(slopes))
    assert np.isnan(summary.loc["late"].trend_pct_per_year)  # the median footprint is 0


def test_sample_size_by_olofssons_equation_13_worked_out_by_hand():
    shares, accuracy = {"a": 0.2, "b": 0.3, "c": 0.5}, {"a": 0.7, "b": 0.6, "c": 0.9}
    s = 0.2 * np.sqrt(0.7 * 0.3) + 0.3 * np.sqrt(0.6 * 0.4) + 0.5 * np.sqrt(0.9 * 0.1)
    assert sample_size(shares, accuracy) == int(np.ceil((s / 0.01) ** 2)) == 1511
    assert sample_size(shares, accuracy, margin=0.02) == int(np.ceil((s * 1.959964 / 0.02) ** 2))
    assert sample_size(shares, accuracy, margin=0.5) == int(np.ceil((s * 1.959964 / 0.5) ** 2))
    # areas in any unit; a class without an expected accuracy is taken at 0.8
    assert sample_size({"a": 100.0, "b": 300.0}, {"a": 0.9}) == int(
        np.ceil(((0.25 * 0.3 + 0.75 * 0.4) / 0.01) ** 2)
    )
    assert refused(StatsError, lambda: sample_size(shares, accuracy, margin=0)) == (
        "margin=0 must be a positive share (0.02 = ± 2 points)"
    )
    for mapped, target in [({"a": 0.0}, 0.01), (shares, 0.0)]:
        assert refused(StatsError, lambda m=mapped, t=target: sample_size(m, {}, target_se=t)) == (
            "give positive mapped areas and a positive target_se"
        )


def test_adjusted_trend_per_site_in_order_with_an_interval_that_leans_with_the_doubt():
    years = pd.date_range("2020", periods=5, freq="YS")
    area = np.array([10.0, 12, 14, 16, 18])
    doc = pd.DataFrame({"site_id": "pit", "time": years, "adjusted_ha": area,
                        "ci_low_ha": area - 1, "ci_high_ha": area + 1})  # fmt: skip
    doc.attrs["units"] = "ha"
    row = adjusted_trend(doc).iloc[0]  # the docstring's example
    assert f"{row.trend_low_ha_per_year:.2f}–{row.trend_high_ha_per_year:.2f}" == "1.66–2.34"
    assert row.trend_pct_per_year == pytest.approx(100 * row.trend_ha_per_year / 14)  # of median
    assert adjusted_trend(doc).attrs["units"] == "ha"
    # a later site listed first, one with exactly three periods, one whose median is nothing
    area = np.array([0.0, 0, 5])
    table = pd.concat([
        doc.assign(site_id="b", ci_high_ha=doc.adjusted_ha + 8),  # more doubt above
        doc.head(3).assign(site_id="a", time=years[2:], adjusted_ha=area, ci_low_ha=area,
                           ci_high_ha=area + 1),
    ])  # fmt: skip
    table.attrs = {}  # the units read from the column names
    trend = adjusted_trend(table)
    assert list(trend.columns) == ["site_id", "periods", "trend_ha_per_year",
                                   "trend_low_ha_per_year", "trend_high_ha_per_year",
                                   "trend_pct_per_year"]  # fmt: skip
    assert trend.site_id.tolist() == ["a", "b"]
    assert trend.periods.tolist() == [3, 5]
    a, b = trend.iloc[0], trend.iloc[1]
    slopes = [0, 5 / (365 / 365.25), 5 / (730 / 365.25)]  # 2022, 2023, 2024
    assert a.trend_ha_per_year == pytest.approx(np.median(slopes))
    assert np.isnan(a.trend_pct_per_year)  # the median footprint is 0
    assert b.trend_ha_per_year == pytest.approx(2, rel=1e-3)
    width = row.trend_high_ha_per_year - row.trend_low_ha_per_year  # ± 1 ha about each period
    assert b.trend_high_ha_per_year - b.trend_low_ha_per_year > 3 * width  # + 8 ha: far wider
    assert np.isnan(adjusted_trend(table, min_periods=4).iloc[0].trend_ha_per_year)
    assert refused(StatsError, lambda: adjusted_trend(table.drop(columns="adjusted_ha"))) == (
        "the table has no adjusted_<units> column (columns: ['site_id', 'time', 'ci_low_ha', "
        "'ci_high_ha']); give a table made by minecube.stats"
    )


def test_strata_of_one_point_none_and_no_area_and_the_tables_of_one_sample():
    from minecube.stats import _adjusted_tables

    ids = np.full((20, 20), VEG, "uint8")
    ids[:10, :10] = PIT  # 100 pixels
    ids[10, :5] = DUMP  # 5 pixels, one point
    ids[19, 19] = 10  # water: 1 pixel, no point
    ids[15, :3] = 5  # plant: 3 pixels, two points
    pred = _grid(ids)
    rows = [(PIT, "open_pit")] * 18 + [(PIT, "vegetation")] * 2 + [(DUMP, "waste_dump")]
    rows += [(5, "plant"), (5, "vegetation")]
    rows += [(VEG, "vegetation")] * 30
    points = pd.DataFrame(rows, columns=["map_class_id", "reference"]).assign(
        site_id="pit", time=pd.NaT
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no division by an empty stratum shows
        with pytest.warns(SampleSizeWarning) as caught:
            table = adjusted_areas({"pit": pred}, points, units="m2", method="olofsson")
    said = [str(w.message) for w in caught if w.category is SampleSizeWarning]
    assert {w.filename for w in caught if w.category is SampleSizeWarning} == {__file__}
    assert said == [  # once, each small stratum with what it can still add (5 and 1 pixels)
        "strata with fewer than 20 labelled points, too few to estimate their errors (labelled "
        "points per stratum, and how many to add): site 'pit' waste_dump: 1 (add 4), site 'pit' "
        "plant: 2 (add 1), site 'pit' water: 0 (add 1). Sample with min_per_stratum=20 or more, "
        "or label more points there"
    ]
    by_class = table.set_index("class")
    assert by_class.loc[["open_pit", "waste_dump", "vegetation", "water", "tailings"],
                        "n_sample"].tolist() == [20, 1, 30, 0, 0]  # fmt: skip
    assert by_class.loc["plant", "n_sample"] == 2
    references = by_class.loc[["open_pit", "waste_dump", "plant", "vegetation", "water"]]
    assert references.n_reference.tolist() == [18, 1, 1, 33, 0]  # points labelled as each class
    assert by_class.n_sample.dtype.kind == by_class.n_reference.dtype.kind == "i"
    assert by_class.unsampled[by_class.unsampled].index.tolist() == ["water"]  # mapped, no point
    assert by_class.loc["waste_dump", "users_accuracy"] == 1.0  # one point is a sample
    assert by_class.loc["open_pit", "users_accuracy"] == 0.9
    assert by_class.loc["waste_dump", "users_se"] == 0  # no spread seen in one point
    assert by_class.loc["plant", "users_se"] == np.sqrt(0.5 * 0.5 / (2 - 1))  # U(1 − U)/(n − 1)
    assert np.isnan(by_class.loc["water", "users_accuracy"])
    with pytest.warns(SampleSizeWarning) as caught:
        tables = _adjusted_tables({"pit": pred}, points, units="m2")
    assert [str(w.message) for w in caught if w.category is SampleSizeWarning] == said  # once
    assert list(tables) == ["adjusted_areas", "adjusted_mining", "adjusted_trend"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        assert _adjusted_tables({"pit": pred}, points)["adjusted_areas"].attrs["units"] == "ha"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        mining = adjusted_mining_area({"pit": pred}, points, units="m2")
        again = adjusted_areas({"pit": pred}, points, units="m2")
        pd.testing.assert_frame_equal(tables["adjusted_areas"], again)
    pd.testing.assert_frame_equal(tables["adjusted_mining"], mining)
    pd.testing.assert_frame_equal(tables["adjusted_trend"], adjusted_trend(mining))
    drawn = sample({"pit": pred}, n=40, allocation="equal", seed=1)
    moved = drawn.assign(reference=drawn.map_class, x=drawn.x + 1e4)
    assert refused(StatsError, lambda: adjusted_areas({"pit": pred}, moved)) == (
        f"{len(moved)} sample points of site 'pit' lie outside its grid (the first at "  # no date
        f"x={moved.x.iloc[0]}, y={moved.y.iloc[0]}); were they moved, or drawn from another "
        "grid? Draw the sample from these predictions (sample(pred, ...))"
    )


def test_geographic_pixel_area_on_a_sphere_by_hand():
    grid = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"),
                        coords={"y": [1.5, 0.5], "x": [0.5, 1.5]})  # fmt: skip
    area = pixel_area(grid.rio.write_crs("+proj=longlat +R=6371000 +no_defs")).values
    # a cell between two parallels on a sphere of radius R: R² Δλ (sin φ₂ − sin φ₁)
    expected = (
        6371000.0**2 * np.radians(1) * (np.sin(np.radians([2, 1])) - np.sin(np.radians([1, 0])))
    )
    np.testing.assert_allclose(area, expected, rtol=1e-12)


def test_change_codes_of_each_pair_of_classes_as_defined():
    from minecube.stats import _change_codes

    first = np.array([VEG, VEG, PIT, PIT, NODATA, VEG, 42])
    last = np.array([VEG, PIT, VEG, DUMP, PIT, NODATA, VEG])
    codes = _change_codes(first, last, DEFAULT_CLASSES.ids, [PIT, DUMP])
    # stable other, gain, loss, stable mining; unobserved (or not a class) in either period
    assert codes.tolist() == [0, 1, 2, 3, -1, -1, -1]
    assert codes.dtype.kind == "i"
