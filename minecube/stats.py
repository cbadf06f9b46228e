"""Site analytics: class areas, mine expansion and land-cover transitions from predictions.

Everything here reads class-id rasters, (time, y, x) or (y, x) DataArrays with a CRS, such as
the output of :func:`minecube.segment.segment`, :func:`minecube.segment.open_predictions` or
:func:`minecube.labels.rasterize`, and turns them into tidy pandas tables with the unit in every
area column's name (``area_ha``, ``unobserved_km2``, …).

Pixel areas come from the CRS (:func:`pixel_area`): for projected grids, the pixel's area on the
map plane (exact for the grid; for UTM it differs from the ground area by the scale factor
squared, at most about 0.1 % inside a zone); for geographic grids, the exact area on the CRS's
ellipsoid of each row's cells. Pixels without a valid observation (the raster's nodata) are
reported as *unobserved area*, never counted as a class.

Class tallies are grouped sums on the dask graph (flox, with the classes as
``expected_groups``), so a continent-sized prediction is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from minecube.classes import ClassSchema
from minecube.errors import MinecubeError, find_stack_level

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

__all__ = [
    "MIN_STRATUM",
    "Expansion",
    "SampleSizeWarning",
    "StatsError",
    "adjusted_areas",
    "adjusted_mining_area",
    "adjusted_trend",
    "aggregate",
    "class_areas",
    "compare_areas",
    "degraded_periods",
    "expansion",
    "pixel_area",
    "reference_from",
    "sample",
    "sample_size",
    "transitions",
]

Units = Literal["m2", "ha", "km2"]
Method = Literal["jeffreys", "olofsson"]
"""How :func:`adjusted_areas` bounds its estimates (the estimates are the same)."""
UNITS: dict[str, float] = {"m2": 1.0, "ha": 1e4, "km2": 1e6}
"""Square metres per unit."""


class StatsError(MinecubeError, ValueError):
    """A prediction or table that the statistics cannot be computed from."""


class SampleSizeWarning(UserWarning):
    """A map without sample points (no estimate), or strata with too few to estimate errors."""


MIN_STRATUM = 20
"""Points a stratum needs for its errors to be estimated: with fewer and none of them wrong,
the stratum's error rate could still exceed 15 % (the rule of three, 3/n, at 95 %)."""


# -- inputs ------------------------------------------------------------------------------------


def _check_units(units: str) -> float:
    if units not in UNITS:
        raise StatsError(f"units={units!r} is not one of {', '.join(map(repr, UNITS))}")
    return UNITS[units]


def _checked(pred: xr.DataArray, schema: ClassSchema | None) -> tuple[xr.DataArray, ClassSchema]:
    """The prediction as (time, y, x) with its class schema, or a clear error."""
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    if not isinstance(pred, xr.DataArray):
        raise StatsError(
            f"expected a DataArray of class ids, got {type(pred).__name__}; for a cube Dataset "
            "segment it first (minecube.segment), for a Zarr store use open_predictions"
        )
    extra = set(pred.dims) - {"time", "y", "x"}
    if extra or not {"y", "x"} <= set(pred.dims):
        raise StatsError(
            f"expected a class-id raster with dims (time, y, x) or (y, x), got {pred.dims}; "
            "probabilities need .argmax('class') and a schema's ids first"
        )
    if pred.rio.crs is None:
        raise StatsError(
            f"the prediction {pred.name!r} has no CRS, so pixel areas are unknown; write one with "
            "pred.rio.write_crs(...) or read predictions with minecube.segment.open_predictions"
        )
    if schema is None:
        try:
            schema = ClassSchema.from_cf_attrs(pred.attrs, nodata=_nodata(pred))
        except ValueError as e:
            raise StatsError(str(e)) from None
    if "time" not in pred.dims:
        pred = pred.expand_dims(time=[np.datetime64("NaT", "ns")])
    return pred.transpose("time", "y", "x"), schema


def _nodata(pred: xr.DataArray) -> int:
    """The raster's nodata value, encoded or not (0 when it declares none)."""
    for value in (pred.encoding.get("_FillValue"), pred.attrs.get("_FillValue")):
        if value is not None and not np.isnan(value):
            return int(value)
    return 0


def _site(pred: xr.DataArray, site_id: str | None) -> str:
    return str(site_id or pred.attrs.get("site_id") or pred.name or "")


def _each(pred, schema):
    """(site_id, (time, y, x) prediction, schema) for one prediction or a mapping of sites."""
    if isinstance(pred, Mapping):
        if not pred:
            raise StatsError("got an empty mapping of predictions")
        return [(str(site), *_checked(p, schema)) for site, p in pred.items()]
    checked = _checked(pred, schema)
    return [(_site(pred, None), *checked)]


def _class_ids(names: Sequence[str] | None, schema: ClassSchema, what: str) -> list[int]:
    if names is None:
        return [c.id for c in schema.mining]
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in schema.names]
    if unknown:
        raise StatsError(
            f"{what} names unknown classes {unknown}; the prediction's classes are "
            f"{', '.join(schema.names)}"
        )
    return [schema[n].id for n in names]


# -- pixel areas -------------------------------------------------------------------------------


def _authalic(phi: np.ndarray, e: float) -> np.ndarray:
    """q(φ) of the authalic latitude: the area between the equator and φ, up to a factor."""
    s = np.sin(phi)
    if e == 0:
        return 2 * s
    return s / (1 - (e * s) ** 2) + np.log((1 + e * s) / (1 - e * s)) / (2 * e)


def pixel_area(pred: xr.DataArray, *, units: Units = "m2") -> xr.DataArray:
    """The area of each pixel of a raster, from its CRS and grid.

    Parameters
    ----------
    pred
        Any DataArray with ``y``/``x`` coordinates and a CRS (``spatial_ref``).
    units
        ``"m2"``, ``"ha"`` or ``"km2"``.

    Returns
    -------
    xarray.DataArray
        For a projected CRS, a 0-d array: the pixel's area on the map plane, in the CRS's linear
        unit converted to metres. For a geographic CRS, one value per row (``y``): the exact
        area on the CRS's ellipsoid of a cell bounded by its two parallels and two meridians.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> grid = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"),
    ...                     coords={"y": [7_000_015.0, 7_000_005], "x": [5.0, 15]})
    >>> float(pixel_area(grid.rio.write_crs("EPSG:32750"), units="ha"))
    0.01
    >>> lonlat = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"),
    ...                       coords={"y": [60.15, 60.05], "x": [0.05, 0.15]})  # 0.1° cells
    >>> pixel_area(lonlat.rio.write_crs("EPSG:4326"), units="km2").round(2).values
    array([61.89, 62.07])
    """
    import pyproj
    import rioxarray  # noqa: F401
    import xarray as xr

    scale = _check_units(units)
    if pred.rio.crs is None:
        raise StatsError("the raster has no CRS, so its pixel areas are unknown; write one first")
    crs = pyproj.CRS.from_user_input(pred.rio.crs.to_wkt())
    if min(pred.sizes.get("y", 0), pred.sizes.get("x", 0)) >= 2:
        transform = pred.rio.transform(recalc=True)
    elif "GeoTransform" in pred.coords.get(pred.rio.grid_mapping, pred).attrs:
        transform = pred.rio.transform()
    else:
        raise StatsError(
            f"cannot tell the pixel size of a {dict(pred.sizes)} raster from its coordinates; "
            "write its transform with .rio.write_transform(...)"
        )
    if transform.b or transform.d:
        raise StatsError("rotated grids are not supported; reproject to a north-up grid first")
    attrs = {"long_name": "pixel area", "units": _unit_label(units)}
    if crs.is_projected:
        name, factor = crs.axis_info[0].unit_name, crs.axis_info[0].unit_conversion_factor
        if not factor:
            raise StatsError(f"the CRS's linear unit {name!r} has no conversion to metres")
        area = abs(transform.a * transform.e) * factor**2 / scale
        return xr.DataArray(area, name="pixel_area", attrs=attrs)
    if crs.is_geographic:
        ellipsoid = crs.ellipsoid
        a, inv_f = ellipsoid.semi_major_metre, ellipsoid.inverse_flattening
        f = 1 / inv_f if inv_f else 0.0
        e = np.sqrt(f * (2 - f))
        half = abs(transform.e) / 2
        lat = np.asarray(pred.y.values, dtype="float64")
        top = np.radians(np.clip(lat + half, -90, 90))
        bottom = np.radians(np.clip(lat - half, -90, 90))
        band = np.abs(_authalic(top, e) - _authalic(bottom, e)) * a**2 * (1 - e**2) / 2
        area = band * np.radians(abs(transform.a)) / scale
        return xr.DataArray(area, dims="y", coords={"y": pred.y}, name="pixel_area", attrs=attrs)
    raise StatsError(f"cannot measure areas in CRS {crs.name!r}: neither projected nor geographic")


# -- tallies -----------------------------------------------------------------------------------


def _codes(pred: xr.DataArray, schema: ClassSchema) -> xr.DataArray:
    """Class ids → 0 … n-1, nodata → n, anything else → 255 (an unknown value)."""
    lut = np.full(256, 255, dtype=np.uint8)
    lut[schema.ids] = np.arange(len(schema), dtype=np.uint8)
    lut[schema.nodata] = len(schema)

    def lookup(block):
        return lut[np.asarray(block).astype(np.uint8, copy=False)]

    return pred.copy(
        data=pred.data.map_blocks(lookup, dtype=np.uint8) if pred.chunks else lookup(pred.values)
    )


def degraded_periods(pred: xr.DataArray) -> dict[str, dict[str, str]]:
    """The periods of ``pred`` built without some of their source items.

    Parameters
    ----------
    pred
        A prediction of :func:`minecube.segment.segment`, which carries its cube's record.

    Returns
    -------
    dict
        By period start (``YYYY-MM-DD``): the items skipped and why. Empty when every period
        was built whole.

    Examples
    --------
    >>> import xarray as xr
    >>> pred = xr.DataArray([1], attrs={"degraded_periods": '{"2022-04-01": {"S2A_1": "404"}}'})
    >>> degraded_periods(pred)
    {'2022-04-01': {'S2A_1': '404'}}
    """
    import json

    record = pred.attrs.get("degraded_periods") or "{}"
    return json.loads(record) if isinstance(record, str) else dict(record)


def _degraded_rows(pred: xr.DataArray) -> np.ndarray:
    """Whether each period of ``pred`` is degraded."""
    bad = degraded_periods(pred)
    return np.array([str(np.datetime64(t, "D")) in bad for t in pred.time.values], dtype=bool)


def _tally(codes: xr.DataArray, weights: xr.DataArray, groups: int) -> xr.DataArray:
    """Weighted count of each code 0 … groups-1 per time step (lazy)."""
    from flox.xarray import xarray_reduce

    weight = (weights * _ones(codes)).rename("area")
    return xarray_reduce(
        weight,
        codes.rename("code"),
        func="sum",
        expected_groups=np.arange(groups),
        dim=("y", "x"),
        fill_value=0.0,
    )


def _ones(like: xr.DataArray) -> xr.DataArray:
    import xarray as xr

    return xr.ones_like(like, dtype="float64")


def _raise_unknown(site: str, arrays: Sequence[xr.DataArray], schema: ClassSchema):
    values = set().union(*(np.unique(np.asarray(a.values)).tolist() for a in arrays))
    unknown = sorted(values - {*schema.ids, schema.nodata})
    raise StatsError(
        f"site {site!r}: the raster holds values {unknown} that are neither classes "
        f"{schema.ids} nor nodata {schema.nodata}; pass the schema it was made with (schema=)"
    )


def class_areas(
    pred: xr.DataArray | Mapping[str, xr.DataArray],
    *,
    units: Units = "ha",
    schema: ClassSchema | None = None,
) -> pd.DataFrame:
    """Area of each class, and the unobserved area, per site and period.

    Parameters
    ----------
    pred
        Class ids, (time, y, x) or (y, x), with a CRS; or a mapping of site id → such arrays.
        A single array's site is its ``site_id`` attribute (predictions carry their cube's).
    units
        ``"ha"``, ``"km2"`` or ``"m2"``; the area columns are named after it.
    schema
        Class schema; default: the one in the raster's ``flag_*`` attributes.

    Returns
    -------
    pandas.DataFrame
        One row per site, period and class: ``site_id``, ``time``, ``class``, ``class_id``,
        ``is_mining``, ``area_<units>``, ``unobserved_<units>`` (the site's area without a
        valid observation in that period, repeated on each of its rows) and ``degraded``
        (the period's cube was built without some of its items: see
        :func:`degraded_periods`). ``attrs["units"]`` holds the unit.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> pred = xr.DataArray(np.array([[1, 1], [6, 0]], "uint8"), dims=("y", "x"),
    ...                     coords={"y": [15.0, 5], "x": [5.0, 15]},
    ...                     attrs=DEFAULT_CLASSES.cf_attrs()).rio.write_crs("EPSG:32756")
    >>> table = class_areas(pred, units="m2")
    >>> table.loc[[0, 5], ["class", "area_m2", "unobserved_m2"]]
            class  area_m2  unobserved_m2
    0    open_pit    200.0          100.0
    5  vegetation    100.0          100.0
    """
    import dask
    import pandas as pd

    _check_units(units)
    jobs = []
    for site, p, s in _each(pred, schema):
        n = len(s)
        weights = pixel_area(p)  # m², so that sums of whole pixels stay exact
        tally = _tally(_codes(p, s), weights, n + 1)
        full = (weights * _ones(p)).sum(("y", "x"))
        jobs.append((site, p, s, tally, full))
    computed = dask.compute(*[(tally, full) for *_, tally, full in jobs])
    frames = []
    for (site, p, s, _, _), (tally, full) in zip(jobs, computed, strict=True):
        values = np.asarray(tally.transpose("time", "code").values)
        if not np.allclose(values.sum(axis=1), np.asarray(full.values), rtol=1e-9):
            _raise_unknown(site, [p], s)
        values = values / UNITS[units]
        degraded = _degraded_rows(p)
        for k, t in enumerate(p.time.values):
            frames.append(
                pd.DataFrame(
                    {
                        "site_id": site,
                        "time": t,
                        "class": s.names,
                        "class_id": s.ids,
                        "is_mining": [c.is_mining for c in s],
                        f"area_{units}": values[k, : len(s)],
                        f"unobserved_{units}": values[k, len(s)],
                        "degraded": degraded[k],
                    }
                )
            )
    table = pd.concat(frames, ignore_index=True)
    table.attrs["units"] = units
    return table


def _table_units(table: pd.DataFrame, prefix: str) -> str:
    """The area unit of a table made here: its ``attrs``, else its ``<prefix>_<units>`` column."""
    if table.attrs.get("units") in UNITS:
        return table.attrs["units"]
    for units in UNITS:
        if f"{prefix}_{units}" in table.columns:
            return units
    raise StatsError(
        f"the table has no {prefix}_<units> column (columns: {list(table.columns)}); give a "
        "table made by minecube.stats"
    )


def _unit_label(units: str) -> str:
    """``km2`` → ``km²``, for axis labels and headings."""
    return units.replace("2", "²")


# -- expansion ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expansion:
    """Mining footprint over time; see :func:`expansion`."""

    table: pd.DataFrame
    """Per site and period: ``mining_<units>``, ``unobserved_<units>``, ``observed_pct``,
    ``reliable``, ``change_<units>``, ``change_pct`` and ``growth_pct_per_year`` (the last three
    against the site's previous reliable period)."""
    summary: pd.DataFrame
    """Per site: first and last reliable period, their footprints, the change between them and
    the compound annual growth rate; and the footprint's robust trend over every reliable
    period (Theil–Sen): ``trend_<units>_per_year`` with its 95 % interval
    (``trend_low_…``, ``trend_high_…``) and ``trend_pct_per_year`` (of the median footprint),
    which one misclassified period cannot swing, unlike two neighbouring periods' change."""
    disturbance: dict[str, xr.DataArray]
    """Per site: the date of the first period each pixel became mining (NaT: never)."""


def _first_mining(mining: np.ndarray, observed: np.ndarray, persistence: int) -> np.ndarray:
    """Index of the first period each pixel became mining for good, or -1.

    ``mining``/``observed``: bool arrays (..., time). A pixel becomes mining at period t when it
    is observed mining at t and at its next ``persistence - 1`` observations (or at all of
    them, near the end of the series); unobserved periods are skipped, not counted.
    """
    nt = mining.shape[-1]
    run = np.zeros(mining.shape[:-1], dtype=np.int32)  # mining observations in a row from t on
    left = np.zeros_like(run)  # observations from t on
    first = np.full(mining.shape[:-1], -1, dtype=np.int32)
    for t in range(nt - 1, -1, -1):
        seen, mine = observed[..., t], mining[..., t] & observed[..., t]
        run = np.where(seen, np.where(mine, run + 1, 0), run)
        left = left + seen
        ok = mine & ((run >= persistence) | (run == left))
        first = np.where(ok, t, first)
    return first


def _pick(index: np.ndarray, values: np.ndarray) -> np.ndarray:
    return values[index]


def expansion(
    pred: xr.DataArray | Mapping[str, xr.DataArray],
    *,
    mining_classes: Sequence[str] | None = None,
    units: Units = "ha",
    min_observed: float = 0.8,
    persistence: int = 2,
    schema: ClassSchema | None = None,
) -> Expansion:
    """How the mining footprint grows: area per period, change, growth rate, disturbance date.

    Parameters
    ----------
    pred
        Class ids (time, y, x) with a CRS, or a mapping of site id → such arrays.
    mining_classes
        Names of the classes that make up the footprint; default: the schema's mining classes.
    units
        Area unit: ``"ha"``, ``"km2"`` or ``"m2"``.
    min_observed
        Share (0–1) of a site that must be observed in a period for the period to be
        *reliable*. Changes and growth rates compare reliable periods only: a cloudy period
        hides part of the footprint and would read as shrinkage.
    persistence
        Observed periods in a row a pixel must be mining for its disturbance date to be set
        (fewer at the end of the series); 1 takes the first mining observation, which lets
        single misclassifications through.
    schema
        Class schema; default: the one in the raster's attributes.

    Returns
    -------
    Expansion
        ``table`` per site and period (``mining_<units>``, ``unobserved_<units>``,
        ``observed_pct``, ``reliable``, ``degraded``, changes), ``summary`` per site and
        ``disturbance`` rasters
        (datetime64, NaT where never mining; pixels already mining at the first observation get
        the first period).

    Examples
    --------
    >>> import numpy as np, pandas as pd, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> ids = np.array([[[6, 6]] * 2, [[1, 6]] * 2, [[1, 1]] * 2], "uint8")  # a growing pit
    >>> pred = xr.DataArray(ids, dims=("time", "y", "x"), attrs=DEFAULT_CLASSES.cf_attrs(),
    ...     coords={"time": pd.date_range("2022", periods=3, freq="YS"), "y": [15.0, 5],
    ...             "x": [5.0, 15]}).rio.write_crs("EPSG:32750")
    >>> result = expansion(pred, units="m2", persistence=1)
    >>> result.table[["time", "mining_m2", "change_m2"]]
            time  mining_m2  change_m2
    0 2022-01-01        0.0        NaN
    1 2023-01-01      200.0      200.0
    2 2024-01-01      400.0      200.0
    >>> result.disturbance[""].dt.year.values
    array([[2023, 2024],
           [2023, 2024]])
    """
    import pandas as pd
    import xarray as xr

    _check_units(units)
    if not 0 <= min_observed <= 1:
        raise StatsError(f"min_observed={min_observed!r} must be a share between 0 and 1")
    if int(persistence) < 1:
        raise StatsError(f"persistence={persistence!r} must be at least 1 period")
    rows, summaries, disturbance = [], [], {}
    for site, p, s in _each(pred, schema):
        ids = _class_ids(mining_classes, s, "mining_classes")
        areas = class_areas(p, units=units, schema=s)
        mining = areas[areas.class_id.isin(ids)].groupby("time", sort=False)[f"area_{units}"]
        frame = pd.DataFrame({"site_id": site, "time": p.time.values})
        frame[f"mining_{units}"] = mining.sum().reindex(p.time.values).to_numpy()
        unobserved = areas.groupby("time", sort=False)[f"unobserved_{units}"].first()
        frame[f"unobserved_{units}"] = unobserved.reindex(p.time.values).to_numpy()
        total = areas.groupby("time", sort=False)[f"area_{units}"].sum().reindex(p.time.values)
        observed = total.to_numpy() / (total.to_numpy() + frame[f"unobserved_{units}"])
        frame["observed_pct"] = 100 * observed
        frame["reliable"] = observed >= min_observed
        frame["degraded"] = _degraded_rows(p)
        _changes(frame, units)
        rows.append(frame)
        summaries.append(_summary(frame, site, units))
        mine = p.isin(ids)
        seen = p != s.nodata
        first = xr.apply_ufunc(
            _first_mining,
            mine.chunk({"time": -1}) if p.chunks else mine,
            seen.chunk({"time": -1}) if p.chunks else seen,
            kwargs={"persistence": int(persistence)},
            input_core_dims=[["time"], ["time"]],
            dask="parallelized",
            output_dtypes=[np.int32],
        )
        dates = np.append(p.time.values.astype("datetime64[ns]"), np.datetime64("NaT", "ns"))
        if first.chunks:
            date = first.copy(data=first.data.map_blocks(_pick, dates, dtype=dates.dtype))
        else:
            date = first.copy(data=dates[first.values])
        date = date.rename("disturbance_date").assign_attrs(
            long_name="first period the pixel became mining",
            mining_classes=" ".join(s.names[s.ids.index(i)] for i in ids),
            persistence=int(persistence),
        )
        disturbance[site] = date.rio.write_crs(p.rio.crs)
    table = pd.concat(rows, ignore_index=True)
    table.attrs["units"] = units
    summary = pd.DataFrame(summaries)
    summary.attrs["units"] = units
    return Expansion(table, summary, disturbance)


def _changes(frame: pd.DataFrame, units: str) -> None:
    """Change against the previous reliable period, absolute, relative and annualised."""
    area = frame[f"mining_{units}"].where(frame.reliable)
    previous = area.ffill().shift(1)
    when = frame.time.where(frame.reliable).ffill().shift(1)
    years = (frame.time - when).dt.days / 365.25
    frame[f"change_{units}"] = area - previous
    frame["change_pct"] = 100 * (area / previous - 1)
    frame["growth_pct_per_year"] = 100 * ((area / previous) ** (1 / years) - 1)
    for column in (f"change_{units}", "change_pct", "growth_pct_per_year"):
        frame.loc[np.isinf(frame[column]), column] = np.nan


def _summary(frame: pd.DataFrame, site: str, units: str) -> dict[str, Any]:
    import pandas as pd

    kept = frame[frame.reliable]
    row: dict[str, Any] = {"site_id": site, "reliable_periods": len(kept)}
    if len(kept) < 2:  # every column, empty: one period or none has no change to show
        empty = [f"first_{units}", f"last_{units}", f"change_{units}", "change_pct",
                 "growth_pct_per_year"]  # fmt: skip
        return {**row, "first": pd.NaT, "last": pd.NaT, **dict.fromkeys(empty, np.nan),
                **_trend(kept, units)}  # fmt: skip
    first, last = kept.iloc[0], kept.iloc[-1]
    years = (last.time - first.time).days / 365.25
    a0, a1 = first[f"mining_{units}"], last[f"mining_{units}"]
    row.update(
        {
            "first": first.time,
            "last": last.time,
            f"first_{units}": a0,
            f"last_{units}": a1,
            f"change_{units}": a1 - a0,
            "change_pct": 100 * (a1 / a0 - 1) if a0 else np.nan,
            "growth_pct_per_year": 100 * ((a1 / a0) ** (1 / years) - 1) if a0 else np.nan,
        }
    )
    row.update(_trend(kept, units))
    return row


def _trend(kept: pd.DataFrame, units: str) -> dict[str, float]:
    """The footprint's Theil–Sen trend over the reliable periods (median of the pairwise
    slopes, robust to a misclassified period) with its 95 % interval, per year, in area and
    in percent of the median footprint; NaN with fewer than three reliable periods."""
    from scipy.stats import theilslopes

    names = [f"trend_{units}_per_year", f"trend_low_{units}_per_year",
             f"trend_high_{units}_per_year", "trend_pct_per_year"]  # fmt: skip
    if len(kept) < 3:
        return dict.fromkeys(names, np.nan)
    years = (kept.time - kept.time.iloc[0]).dt.days.to_numpy() / 365.25
    area = kept[f"mining_{units}"].to_numpy(float)
    slope, _, low, high = theilslopes(area, years, alpha=0.95)
    middle = np.median(area)
    pct = 100 * slope / middle if middle else np.nan
    return dict(zip(names, (slope, low, high, pct), strict=True))


# -- transitions and comparisons ---------------------------------------------------------------


def _period(pred: xr.DataArray, t, name: str) -> xr.DataArray:
    """One period of a (time, y, x) array, by position or by label."""
    import pandas as pd

    times = [str(v)[:10] for v in pred.time.values]
    if isinstance(t, int | np.integer):
        if not -len(times) <= t < len(times):
            raise StatsError(f"{name}={t} is out of range for {len(times)} periods {times}")
        return pred.isel(time=int(t))
    try:
        stamp = pd.Timestamp(t)
    except (ValueError, TypeError):
        stamp = None
    if stamp is None or stamp.to_datetime64() not in pred.time.values:
        raise StatsError(
            f"{name}={t!r} is not one of the prediction's periods {times}; give one of them "
            "or a position"
        )
    return pred.sel(time=stamp)


def _cross(
    a: xr.DataArray, b: xr.DataArray, schema: ClassSchema, units: str, site: str
) -> np.ndarray:
    """(n+1) × (n+1) areas of class pairs of two aligned (y, x) rasters; row/col n: nodata."""
    n = len(schema) + 1
    codes_a, codes_b = _codes(a, schema), _codes(b, schema)
    pair = (codes_a.astype("int32") * n + codes_b).where((codes_a < n) & (codes_b < n), n * n)
    tally = _tally(pair, pixel_area(a), n * n + 1).compute()  # m²: whole pixels stay exact
    values = np.asarray(tally.values)
    if values[-1] > 0:
        _raise_unknown(site, [a, b], schema)
    return values[:-1].reshape(n, n) / UNITS[units]


def transitions(
    pred: xr.DataArray,
    t0: int | str,
    t1: int | str,
    *,
    units: Units = "ha",
    schema: ClassSchema | None = None,
) -> pd.DataFrame:
    """From-class × to-class area matrix between two periods (e.g. vegetation → open pit).

    Parameters
    ----------
    pred
        Class ids (time, y, x) with a CRS.
    t0, t1
        The two periods: positions (``0``, ``-1``) or dates of the ``time`` coordinate.
    units
        ``"ha"``, ``"km2"`` or ``"m2"``.
    schema
        Class schema; default: the one in the raster's attributes.

    Returns
    -------
    pandas.DataFrame
        Rows: the class at ``t0`` (index ``from``), columns: the class at ``t1`` (``to``), with an
        ``unobserved`` row and column for pixels without a valid observation in either period.
        ``attrs`` holds ``units``, ``t0`` and ``t1``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> ids = np.array([[[6, 6, 2]] * 2, [[1, 6, 2]] * 2], "uint8")
    >>> pred = xr.DataArray(ids, dims=("time", "y", "x"), attrs=DEFAULT_CLASSES.cf_attrs(),
    ...     coords={"time": pd.date_range("2022", periods=2, freq="YS"), "y": [15.0, 5],
    ...             "x": [5.0, 15, 25]}).rio.write_crs("EPSG:32750")
    >>> m = transitions(pred, 0, 1, units="m2")
    >>> m.loc["vegetation", ["open_pit", "vegetation"]].tolist()
    [200.0, 200.0]
    """
    import pandas as pd

    _check_units(units)
    ((site, p, s),) = _each(pred, schema)
    a, b = _period(p, t0, "t0"), _period(p, t1, "t1")
    matrix = _cross(a, b, s, units, site)
    names = [*s.names, "unobserved"]
    table = pd.DataFrame(
        matrix, index=pd.Index(names, name="from"), columns=pd.Index(names, name="to")
    )
    table.attrs.update(units=units, t0=str(a.time.values)[:10], t1=str(b.time.values)[:10])
    return table


def compare_areas(
    pred: xr.DataArray | Mapping[str, xr.DataArray],
    truth: xr.DataArray | Mapping[str, xr.DataArray],
    *,
    units: Units = "ha",
    schema: ClassSchema | None = None,
) -> pd.DataFrame:
    """Predicted against true class areas over the pixels both observe and label.

    Parameters
    ----------
    pred
        Predicted class ids (time, y, x), or a mapping of site id → such arrays.
    truth
        True class ids on the same grid and periods (e.g. :func:`minecube.labels.rasterize`
        with ``time_column=``), or a mapping with the same site ids.
    units
        ``"ha"``, ``"km2"`` or ``"m2"``.
    schema
        Class schema; default: the one in the prediction's attributes.

    Returns
    -------
    pandas.DataFrame
        Per site, period and class: ``predicted_<units>``, ``truth_<units>``,
        ``error_<units>`` (predicted − truth), ``error_pct`` (of truth) and ``compared_pct``,
        the share of the site both observed and labelled. Pixels unobserved in the prediction
        or unlabelled in the truth are left out of both areas.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> def grid(ids):
    ...     return xr.DataArray(np.array([ids, ids], "uint8"), dims=("y", "x"),
    ...         coords={"y": [15.0, 5], "x": [5.0, 15, 25, 35]},
    ...         attrs=DEFAULT_CLASSES.cf_attrs()).rio.write_crs("EPSG:32750")
    >>> table = compare_areas(grid([1, 1, 6, 0]), grid([1, 6, 6, 1]), units="m2")
    >>> table.set_index("class").loc["open_pit", ["predicted_m2", "truth_m2", "error_pct"]]
    predicted_m2    400.0
    truth_m2        200.0
    error_pct       100.0
    Name: open_pit, dtype: object
    """
    import pandas as pd

    _check_units(units)
    preds = pred if isinstance(pred, Mapping) else {_site(pred, None): pred}
    truths = truth if isinstance(truth, Mapping) else {next(iter(preds)): truth}
    missing, extra = sorted(set(preds) - set(truths)), sorted(set(truths) - set(preds))
    if missing or extra:
        raise StatsError(
            f"predictions and truth cover different sites: no truth for {missing}, no "
            f"prediction for {extra}; give both mappings the same site ids"
        )
    frames = []
    for site, p in preds.items():
        ((_, p, s),) = _each(p, schema)
        t = truths[site]
        t = t.expand_dims(time=p.time.values) if "time" not in t.dims else t
        t = t.transpose("time", "y", "x")
        same_time = pd.Index(t.time.values).equals(pd.Index(p.time.values))
        same_grid = t.shape == p.shape and np.allclose(t.y, p.y) and np.allclose(t.x, p.x)
        if not (same_time and same_grid):
            raise StatsError(
                f"site {site!r}: truth {dict(t.sizes)} is not on the prediction's grid and periods "
                f"{dict(p.sizes)}; rasterize the labels onto the prediction "
                "(minecube.labels.rasterize(labels, pred, time_column=...))"
            )
        total = float((pixel_area(p, units=units) * _ones(p.isel(time=0))).sum())
        for k, when in enumerate(p.time.values):
            m = _cross(p.isel(time=k), t.isel(time=k).rio.write_crs(p.rio.crs), s, units, site)
            both = m[:-1, :-1]
            frame = pd.DataFrame(
                {
                    "site_id": site,
                    "time": when,
                    "class": s.names,
                    "class_id": s.ids,
                    "is_mining": [c.is_mining for c in s],
                    f"predicted_{units}": both.sum(axis=1),
                    f"truth_{units}": both.sum(axis=0),
                }
            )
            frame[f"error_{units}"] = frame[f"predicted_{units}"] - frame[f"truth_{units}"]
            with np.errstate(divide="ignore", invalid="ignore"):
                frame["error_pct"] = 100 * frame[f"error_{units}"] / frame[f"truth_{units}"]
            frame["compared_pct"] = 100 * both.sum() / total
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table.attrs["units"] = units
    return table


# -- aggregation -------------------------------------------------------------------------------


def aggregate(
    table: pd.DataFrame,
    sites: pd.DataFrame,
    *,
    by: str | Sequence[str] = "commodity",
) -> pd.DataFrame:
    """Sum a per-site area table over the sites of each commodity, climate, or any site column.

    Parameters
    ----------
    table
        A table of :func:`class_areas`, :func:`expansion` (``.table``) or :func:`compare_areas`.
    sites
        The site table (:func:`minecube.sites.read_sites`) with ``site_id`` and the ``by``
        columns.
    by
        Site column(s) to group by: ``"commodity"``, ``"climate"``, ``["climate", "commodity"]``.

    Returns
    -------
    pandas.DataFrame
        The area columns (``*_<units>``, except the ``change_*`` columns, which compare each
        site with its own previous period) summed per group, period and class (where the table
        has them), with ``sites``, the number of sites summed (and ``degraded_sites``, how
        many of them are degraded in that period, where the table says); ``error_pct`` is recomputed
        from the summed errors and truths, not averaged.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"site_id": ["a", "b", "c"], "time": pd.Timestamp("2024"),
    ...                       "mining_ha": [10.0, 20.0, 5.0], "unobserved_ha": 0.0})
    >>> sites = pd.DataFrame({"site_id": ["a", "b", "c"], "commodity": ["gold", "gold", "coal"]})
    >>> aggregate(table, sites)[["commodity", "mining_ha", "sites"]]
      commodity  mining_ha  sites
    0      coal        5.0      1
    1      gold       30.0      2
    """
    import pandas as pd

    keys = [by] if isinstance(by, str) else list(by)
    if "site_id" not in table.columns:
        raise StatsError(f"the table has no site_id column (columns: {list(table.columns)})")
    missing = [k for k in ["site_id", *keys] if k not in sites.columns]
    if missing:
        raise StatsError(
            f"the site table has no column(s) {missing}; its columns are {list(sites.columns)}"
        )
    unknown = sorted(set(table.site_id) - set(sites.site_id))
    if unknown:
        raise StatsError(
            f"the table has sites {unknown} that are not in the site table "
            f"({sorted(sites.site_id)}); pass the site table the predictions were made for"
        )
    merged = table.merge(pd.DataFrame(sites)[["site_id", *keys]], on="site_id", how="left")
    group = keys + [c for c in ("time", "class", "class_id", "is_mining") if c in table.columns]
    # stocks add up across sites; changes against each site's own previous period do not
    areas = [
        c for c in table.columns if c.rsplit("_", 1)[-1] in UNITS and not c.startswith("change_")
    ]
    degraded = {"degraded_sites": ("degraded", "sum")} if "degraded" in table.columns else {}
    out = merged.groupby(group, dropna=False, sort=True).agg(
        **{c: (c, "sum") for c in areas}, sites=("site_id", "nunique"), **degraded
    )
    out = out.reset_index()
    units = table.attrs.get("units") or next(c.rsplit("_", 1)[-1] for c in areas)
    if f"predicted_{units}" in out and f"truth_{units}" in out:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["error_pct"] = 100 * out[f"error_{units}"] / out[f"truth_{units}"]
    out.attrs["units"] = units
    return out


# -- good-practice area estimation (Olofsson et al. 2014) --------------------------------------

Allocation = Literal["proportional", "equal", "neyman"]
_Z95 = 1.959963984540054
"""Standard normal quantile of a two-sided 95 % interval."""


def _pixel_areas(p: xr.DataArray) -> np.ndarray:
    """Area in m² of every pixel of a (time, y, x) raster's grid, as (y, x)."""
    area = np.asarray(pixel_area(p), "float64")
    shape = (p.sizes["y"], p.sizes["x"])
    return np.broadcast_to(area[:, None] if area.ndim == 1 else area, shape)


def _seed(seed: int, site: str, k: int) -> np.random.Generator:
    import zlib

    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(site.encode()), k]))


def _allocate(n: int, counts: np.ndarray, allocation, users_accuracy, names, minimum: int):
    """Sample size per stratum (map class) of one map: ``n`` shared by ``allocation``, each
    stratum at least ``minimum`` (or all its pixels)."""
    present = counts > 0
    if isinstance(allocation, Mapping):
        unknown = sorted(set(allocation) - set(names))
        if unknown:
            raise StatsError(f"allocation names unknown classes {unknown}; classes are {names}")
        share = np.array([allocation.get(c, 0) for c in names], "float64")
    elif allocation == "proportional":
        share = n * counts / counts.sum()
    elif allocation == "equal":
        share = np.where(present, n / max(present.sum(), 1), 0.0)
    elif allocation == "neyman":
        u = np.array([(users_accuracy or {}).get(c, 0.8) for c in names], "float64")
        weight = counts * np.sqrt(u * (1 - u))
        share = n * weight / weight.sum() if weight.sum() else n * counts / counts.sum()
    else:
        raise StatsError(
            f"allocation={allocation!r} is not 'proportional', 'equal', 'neyman' or a "
            "mapping of class name → sample size"
        )
    sizes = np.floor(share).astype(int)
    if not isinstance(allocation, Mapping):  # largest remainders make the total exactly n
        extra = round(float(share.sum())) - int(sizes.sum())
        order = np.argsort(sizes - share)
        sizes[order[: max(extra, 0)]] += 1
    sizes = np.where(present, np.maximum(sizes, minimum), 0)
    return np.minimum(sizes, counts)


CHANGE = ("stable non-mining", "mining gain", "mining loss", "stable mining")
"""Strata of a change sample (``strata="change"``), ids 0–3: the mining footprint between two
periods."""


@dataclass(frozen=True)
class _Map:
    """One map to sample or estimate: a site's classes in a period, or its change between two."""

    site: str
    time: Any
    time0: Any  # the first period of a change map; None for a class map
    names: tuple[str, ...]
    ids: np.ndarray
    mining: tuple[bool, ...]
    codes: np.ndarray  # (y, x); pixels outside ``ids`` are unobserved
    grid: xr.DataArray  # a (y, x) layer of the prediction: coordinates and CRS


def _change_codes(first: np.ndarray, last: np.ndarray, ids, mining_ids) -> np.ndarray:
    """:data:`CHANGE` codes of pixels with class ids ``first`` then ``last``: 0 stable
    non-mining, 1 gain, 2 loss, 3 stable mining; -1 where either is not a class (unobserved)."""
    observed = np.isin(first, ids) & np.isin(last, ids)
    was, now = np.isin(first, mining_ids), np.isin(last, mining_ids)
    return np.where(observed, np.select([was & now, now, was], [3, 1, 2], 0), -1)


def _maps(pred, schema, periods=None, mining_classes=None):
    """Every map of the predictions: each site and period, or (``periods=(t0, t1)``) each
    site's mining change between two periods, as :data:`CHANGE` codes."""
    import pandas as pd

    for site, p, s in _each(pred, schema):
        mining_ids = _class_ids(mining_classes, s, "mining_classes")
        if periods is None:
            mining = tuple(c in mining_ids for c in s.ids)
            for k, t in enumerate(p.time.values):
                yield _Map(site, t, None, tuple(s.names), np.asarray(s.ids), mining,
                           np.asarray(p.isel(time=k)), p.isel(time=k))  # fmt: skip
            continue
        try:
            first, last = (p.sel(time=pd.Timestamp(t).to_datetime64()) for t in periods)
        except KeyError:
            raise StatsError(
                f"periods {periods} are not both periods of site {site!r}: "
                f"{[str(t)[:10] for t in p.time.values]}"
            ) from None
        codes = _change_codes(np.asarray(first), np.asarray(last), s.ids, mining_ids)
        yield _Map(site, last.time.values, first.time.values, CHANGE, np.arange(4),
                   (False, True, False, True), codes, last)  # fmt: skip


def sample(
    pred: xr.DataArray | Mapping[str, xr.DataArray],
    *,
    n: int,
    allocation: Allocation | Mapping[str, int] = "proportional",
    min_per_stratum: int = 0,
    users_accuracy: Mapping[str, float] | None = None,
    strata: Literal["classes", "change"] = "classes",
    periods: tuple[Any, Any] | None = None,
    mining_classes: Sequence[str] | None = None,
    seed: int = 0,
    schema: ClassSchema | None = None,
):
    """A stratified random sample of a map's pixels to label, for area estimation.

    Each map (a site's prediction in one period) is stratified by its classes; each stratum
    gets its share of ``n`` and its points are drawn without replacement from its observed
    pixels. Label the ``reference`` column (by eye on imagery, or from field data) and pass the
    table to :func:`adjusted_areas`.

    Parameters
    ----------
    pred
        Class ids (time, y, x) with a CRS, or a mapping of site id → such arrays.
    n
        Sample size of each map (site and period).
    allocation
        ``"proportional"`` to the mapped areas, ``"equal"`` per class, ``"neyman"`` (by mapped
        area × the expected standard deviation of each class's user's accuracy, from
        ``users_accuracy``), or a mapping of class name → sample size.
    min_per_stratum
        Raise every class present to at least this many points (Olofsson et al. recommend
        about 50 for rare classes such as mine water).
    users_accuracy
        Expected user's accuracy per class name, for ``"neyman"`` (default 0.8 each).
    strata
        ``"classes"``: each period's map, stratified by class. ``"change"``: the mining
        footprint's change between ``periods`` (:data:`CHANGE`: stable non-mining, mining
        gain, mining loss, stable mining), one map per site, for estimating the area mined
        or restored between two dates; each point has ``time0`` and ``time``, and its
        reference is the change it truly saw.
    periods
        The two periods (dates) of a change sample.
    mining_classes
        The classes that make up the footprint of a change sample (default: the schema's).
    seed
        Random seed; the same seed and map give the same sample.
    schema
        Class schema; default: the one in the raster's attributes.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per point: ``site_id``, ``time``, ``x``, ``y`` (map CRS, pixel centre),
        ``epsg``, ``lon``, ``lat``, ``map_class``, ``map_class_id``, ``stratum``,
        ``stratum_pixels``, ``stratum_sample``, ``weight`` (pixels each point stands for) and
        an empty ``reference``; points in lon/lat. Write it with ``.to_file("sample.gpkg")``
        to label in QGIS.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> ids = np.where(np.arange(100)[:, None] < 20, 1, 6).repeat(100, 1).astype("uint8")
    >>> pred = xr.DataArray(ids, dims=("y", "x"), attrs=DEFAULT_CLASSES.cf_attrs(),
    ...     coords={"y": np.arange(100.0)[::-1] * 10, "x": np.arange(100.0) * 10},
    ... ).rio.write_crs("EPSG:32756")
    >>> points = sample({"pit": pred}, n=50, seed=1)
    >>> points.groupby("map_class").size().to_dict()
    {'open_pit': 10, 'vegetation': 40}
    """
    import geopandas as gpd
    import pandas as pd
    from pyproj import Transformer

    if n < 1:
        raise StatsError(f"n={n} must be at least 1 point per map")
    if (strata == "change") != (periods is not None):
        raise StatsError('give periods=(first, last) with strata="change", and only then')
    frames = []
    transformers: dict[Any, Any] = {}
    for k, m in enumerate(_maps(pred, schema, periods, mining_classes)):
        crs = m.grid.rio.crs
        if crs not in transformers:
            transformers[crs] = Transformer.from_crs(crs, 4326, always_xy=True).transform
        xs, ys = np.asarray(m.grid.x), np.asarray(m.grid.y)
        flat = m.codes.ravel()
        counts = np.array([(flat == c).sum() for c in m.ids])
        if not counts.sum():
            continue  # nothing observed in this period
        sizes = _allocate(n, counts, allocation, users_accuracy, m.names, min_per_stratum)
        rng = _seed(seed, m.site, k)
        for c, name, size, total in zip(m.ids, m.names, sizes, counts, strict=True):
            if not size:
                continue
            where = np.flatnonzero(flat == c)
            chosen = np.sort(rng.choice(where, size=size, replace=False))
            row, col = np.divmod(chosen, m.codes.shape[1])
            lon, lat = transformers[crs](xs[col], ys[row])
            frames.append(pd.DataFrame({
                "site_id": m.site, **({"time0": m.time0} if periods else {}), "time": m.time,
                "x": xs[col], "y": ys[row], "epsg": crs.to_epsg(), "lon": lon, "lat": lat,
                "map_class": name, "map_class_id": int(c), "stratum": name,
                "stratum_pixels": int(total), "stratum_sample": int(size),
                "weight": total / size, "reference": None,
            }))  # fmt: skip
    if not frames:
        raise StatsError("no observed pixel to sample: every map is nodata")
    table = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(table.lon, table.lat), crs=4326)


def sample_size(
    mapped: Mapping[str, float],
    users_accuracy: Mapping[str, float],
    *,
    target_se: float = 0.01,
    margin: float | None = None,
) -> int:
    """The sample size of a map for a target standard error of its overall accuracy.

    Olofsson et al. (2014), eq. 13: ``n = (Σ W_i S_i / S(Ô))²`` with ``W_i`` the mapped share
    of class ``i`` and ``S_i = sqrt(U_i (1 − U_i))`` from its expected user's accuracy. Draw
    at least :data:`MIN_STRATUM` points in every class too (``sample(min_per_stratum=...)``):
    a stratum with fewer cannot show its errors, and :func:`adjusted_areas` warns of it.

    Parameters
    ----------
    mapped
        Mapped area (any unit) or share per class name.
    users_accuracy
        Expected user's accuracy per class name (default 0.8 for a class not given).
    target_se
        Standard error wanted for the overall accuracy (0.01 = one percentage point).
    margin
        Or the margin of error wanted instead: the half-width of its 95 % interval
        (0.02 = ± two percentage points), ``target_se = margin / 1.96``.

    Examples
    --------
    Mapped shares 0.2, 0.3, 0.5 at expected user's accuracies 0.7, 0.6, 0.9, for an overall
    accuracy known to ±1 percentage point (one standard error):

    >>> sample_size({"a": 0.2, "b": 0.3, "c": 0.5}, {"a": 0.7, "b": 0.6, "c": 0.9})
    1511

    For ± 2 percentage points at 95 %:

    >>> sample_size({"a": 0.2, "b": 0.3, "c": 0.5}, {"a": 0.7, "b": 0.6, "c": 0.9}, margin=0.02)
    1451
    """
    if margin is not None:
        if margin <= 0:
            raise StatsError(f"margin={margin!r} must be a positive share (0.02 = ± 2 points)")
        target_se = margin / _Z95
    total = sum(mapped.values())
    if total <= 0 or target_se <= 0:
        raise StatsError("give positive mapped areas and a positive target_se")
    s = sum(
        a / total * np.sqrt(users_accuracy.get(c, 0.8) * (1 - users_accuracy.get(c, 0.8)))
        for c, a in mapped.items()
    )
    return int(np.ceil((s / target_se) ** 2))


def reference_from(sample_points, truth: Mapping[str, xr.DataArray], *, schema=None):
    """Fill a sample's ``reference`` column from reference rasters (e.g. labels rasterised with
    :func:`minecube.labels.rasterize`, or the demo world's truth), at each point's pixel and
    period; points on unlabelled pixels (0, nodata) get no reference.

    Examples
    --------
    ``reference_from(sample(pred, n=300), {"hunter-coal": truth})``
    """
    import xarray as xr

    out = sample_points.copy()
    reference = np.full(len(out), None, dtype=object)
    change = "time0" in out.columns
    for site, rows in out.groupby("site_id").groups.items():
        if site not in truth:
            continue
        t, s = _checked(truth[site], schema)
        names = dict(zip(s.ids, s.names, strict=True))
        mining = [c.id for c in s.mining]
        part = out.loc[rows]
        xs, ys = (xr.DataArray(part[c].to_numpy(), dims="p") for c in ("x", "y"))

        def at(when, t=t, xs=xs, ys=ys):
            layer = t.isel(time=0) if t.sizes["time"] == 1 else t.sel(time=when)
            return np.asarray(layer.sel(x=xs, y=ys, method="nearest"))

        got = np.full(len(part), None, dtype=object)
        if change:
            for (t0, t1), idx in part.groupby(["time0", "time"]).groups.items():
                k = part.index.get_indexer(idx)
                code = _change_codes(at(np.datetime64(t0))[k], at(np.datetime64(t1))[k],
                                     s.ids, mining)  # fmt: skip
                got[k] = [CHANGE[c] if c >= 0 else None for c in code]
        else:
            for when, idx in part.groupby("time").groups.items():
                k = part.index.get_indexer(idx)
                got[k] = [names.get(int(v)) for v in at(np.datetime64(when))[k]]
        reference[out.index.get_indexer(rows)] = got
    out["reference"] = reference
    return out


def adjusted_areas(
    pred: xr.DataArray | Mapping[str, xr.DataArray],
    sample_points,
    *,
    reference: str = "reference",
    units: Units = "ha",
    method: Method = "jeffreys",
    schema: ClassSchema | None = None,
) -> pd.DataFrame:
    """Error-adjusted class areas with standard errors and 95 % intervals, from a labelled
    stratified sample (Olofsson et al. 2014, Remote Sensing of Environment 148, 42–57).

    For each map (site and period), the error matrix of the sample gives the estimated share
    ``p̂_ij = W_i n_ij / n_i·`` of the area mapped as ``i`` that is truly ``j``; the adjusted
    area of ``j`` is the observed area times ``Σ_i p̂_ij``, with standard error
    ``sqrt(Σ_i W_i² (n_ij/n_i·)(1 − n_ij/n_i·)/(n_i· − 1))`` of the share (eq. 10), and user's,
    producer's and overall accuracy with theirs (eqs. 5–7).

    The 95 % interval is, by default (``method="jeffreys"``), the equal-tailed interval of the
    estimate's posterior when each stratum's share of a class has a Beta prior: one Jeffreys
    prior, Beta(½, ½), shared by the strata mapped as the class and one by the other strata,
    each split among its strata by their sample sizes. Where a stratum's points show no error —
    the common case with a good map and a few hundred points — the normal interval of eq. 10
    counts the stratum as certain and holds the truth far less often than 95 % (73 % for the
    demo's mining footprint at 300 points per map); this one keeps its coverage
    (docs/analytics.md gives the simulations). ``method="olofsson"`` gives the normal
    interval, for comparison with published work. The estimates are the same.

    Parameters
    ----------
    pred
        The map(s) the sample was drawn from (:func:`sample`).
    sample_points
        The sample with its reference labels (class names or ids); rows without one are left
        out.
    reference
        Column of the reference classes.
    units
        Area unit: ``"ha"``, ``"km2"`` or ``"m2"``.
    method
        ``"jeffreys"`` (default) or ``"olofsson"``: how the interval is drawn (above).
    schema
        Class schema; default: the one in the raster's attributes.

    Returns
    -------
    pandas.DataFrame
        One row per site, period and class: ``mapped_<u>``, ``adjusted_<u>``, ``se_<u>``,
        ``ci_low_<u>``, ``ci_high_<u>`` (95 %), ``users_accuracy``, ``users_se``,
        ``producers_accuracy``, ``producers_se``, ``overall_accuracy``, ``overall_se``,
        ``n_sample`` (points mapped as the class) and ``n_reference`` (points labelled as it).
        ``se_<u>`` is the posterior's standard deviation with ``"jeffreys"``. A class mapped
        but not sampled is taken as mapped, with no error, and flagged in ``unsampled``; a
        map (site and period) no labelled point falls on gets no rows (and a warning).

    Raises
    ------
    StatsError
        A sample with no label, or with points of sites or periods not in ``pred``, outside
        its grid, or whose ``map_class_id`` is not the map's class at their pixel (drawn from
        another map); reference classes not in the schema.

    Warns
    -----
    SampleSizeWarning
        Strata with fewer than :data:`MIN_STRATUM` points, naming them and how many to add.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> ids = np.where(np.arange(100)[:, None] < 20, 1, 6).repeat(100, 1).astype("uint8")
    >>> pred = xr.DataArray(ids, dims=("y", "x"), attrs=DEFAULT_CLASSES.cf_attrs(),
    ...     coords={"y": np.arange(100.0)[::-1] * 10, "x": np.arange(100.0) * 10},
    ... ).rio.write_crs("EPSG:32756")
    >>> points = sample({"pit": pred}, n=50, allocation="equal", seed=1)
    >>> points["reference"] = points.map_class  # every point labelled as mapped...
    >>> points.loc[:4, "reference"] = "vegetation"  # ...but five of the pit's points
    >>> table = adjusted_areas({"pit": pred}, points, units="ha", method="olofsson")
    >>> rows = table.set_index("class").loc[["open_pit", "vegetation"]]
    >>> rows[["mapped_ha", "adjusted_ha", "se_ha", "users_accuracy"]].round(2).values.tolist()
    [[20.0, 16.0, 1.63, 0.8], [80.0, 84.0, 1.63, 1.0]]

    No vegetation point is a pit, so the normal interval claims no pit hides in the 80 ha of
    vegetation; Jeffreys' allows for some:

    >>> for method in ("olofsson", "jeffreys"):
    ...     table = adjusted_areas({"pit": pred}, points, method=method)
    ...     pit = table.set_index("class").loc["open_pit"]
    ...     print(method, round(pit.ci_low_ha, 1), round(pit.ci_high_ha, 1))
    olofsson 12.8 19.2
    jeffreys 13.0 23.9
    """
    import pandas as pd

    per_unit = _check_units(units)
    _check_method(method)
    frames = []
    for m, mapped, counts in _error_matrices(pred, sample_points, reference, schema):
        frames.append(_olofsson(m, mapped, counts, per_unit, units, method))
    table = pd.concat(frames, ignore_index=True)
    table.attrs["units"] = units
    return table


def adjusted_mining_area(
    pred: xr.DataArray | Mapping[str, xr.DataArray],
    sample_points,
    *,
    mining_classes: Sequence[str] | None = None,
    reference: str = "reference",
    units: Units = "ha",
    method: Method = "jeffreys",
    schema: ClassSchema | None = None,
) -> pd.DataFrame:
    """The error-adjusted area of the mining footprint (the union of the mining classes) per
    site and period, with its standard error and 95 % interval, from the same sample as
    :func:`adjusted_areas`.

    The union is estimated as one class (each stratum's share of points truly mining), not by
    adding the classes' intervals, which would ignore that their errors offset each other. From
    a change sample (``sample(strata="change")``) it is the footprint at the later period.
    ``method``, the refusals and the warnings are those of :func:`adjusted_areas`.

    Returns
    -------
    pandas.DataFrame
        ``site_id``, ``time``, ``mapped_<u>``, ``adjusted_<u>``, ``se_<u>``, ``ci_low_<u>``,
        ``ci_high_<u>``.

    Examples
    --------
    ``adjusted_mining_area(preds, labelled_sample, units="km2")``
    """
    import pandas as pd

    per_unit = _check_units(units)
    _check_method(method)
    rows = []
    matrices = _error_matrices(pred, sample_points, reference, schema, mining_classes)
    for m, mapped, counts in matrices:
        cols = [i for i, is_mining in enumerate(m.mining) if is_mining]
        # one reference column, "truly mining"; a stratum not sampled is taken as mapped
        n_i = counts.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            truly = np.where(n_i > 0, counts[:, cols].sum(axis=1) / n_i, np.array(m.mining))
        own = np.array(m.mining)[:, None]  # the mining strata
        found = _interval(mapped / mapped.sum(), truly[:, None], n_i, method, _map_rng(m), own)
        area, se, low, high = (mapped.sum() * v[0] / per_unit for v in found)
        rows.append({
            "site_id": m.site, "time": m.time, f"mapped_{units}": mapped[cols].sum() / per_unit,
            f"adjusted_{units}": area, f"se_{units}": se,
            f"ci_low_{units}": low, f"ci_high_{units}": high,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table.attrs["units"] = units
    return table


def _adjusted_tables(pred, sample_points, *, units: Units = "ha") -> dict[str, pd.DataFrame]:
    """``adjusted_areas``, ``adjusted_mining`` and ``adjusted_trend`` of one sample, warning
    of it only once."""
    import warnings

    tables = {"adjusted_areas": adjusted_areas(pred, sample_points, units=units)}
    with warnings.catch_warnings():  # the same maps and strata: said once above
        warnings.simplefilter("ignore", SampleSizeWarning)
        tables["adjusted_mining"] = adjusted_mining_area(pred, sample_points, units=units)
    tables["adjusted_trend"] = adjusted_trend(tables["adjusted_mining"])
    return tables


def adjusted_trend(footprint: pd.DataFrame, *, min_periods: int = 3) -> pd.DataFrame:
    """The Theil–Sen trend of each site's error-adjusted mining footprint, with a 95 %
    interval that carries both the scatter of the series and each period's own interval.

    Two sources of doubt add up: the periods scatter about the trend (Theil–Sen's own
    interval, on the adjusted areas) and each area is only estimated (the spread of the slope
    when each period's area is drawn from its interval: a normal on each side of the estimate,
    scaled to that side's half-width). The interval's half-width on each side is the two
    combined in quadrature.

    Parameters
    ----------
    footprint
        :func:`adjusted_mining_area`'s table.
    min_periods
        Sites with fewer periods get no trend (NaN).

    Returns
    -------
    pandas.DataFrame
        Per site: ``periods``, ``trend_<u>_per_year``, ``trend_low_<u>_per_year``,
        ``trend_high_<u>_per_year`` and ``trend_pct_per_year`` (of the median footprint).

    Examples
    --------
    >>> import pandas as pd
    >>> years = pd.date_range("2020", periods=5, freq="YS")
    >>> footprint = pd.DataFrame({"site_id": "pit", "time": years,
    ...     "adjusted_ha": [10.0, 12, 14, 16, 18], "ci_low_ha": [9.0, 11, 13, 15, 17],
    ...     "ci_high_ha": [11.0, 13, 15, 17, 19]})
    >>> footprint.attrs["units"] = "ha"
    >>> row = adjusted_trend(footprint).iloc[0]
    >>> print(f"{row.trend_ha_per_year:.1f} ha/yr, {row.trend_low_ha_per_year:.2f}–"
    ...       f"{row.trend_high_ha_per_year:.2f}")
    2.0 ha/yr, 1.66–2.34
    """
    import pandas as pd
    from scipy.stats import theilslopes

    units = _table_units(footprint, "adjusted")
    names = [f"trend_{units}_per_year", f"trend_low_{units}_per_year",
             f"trend_high_{units}_per_year", "trend_pct_per_year"]  # fmt: skip
    rows = []
    for site, part in footprint.sort_values("time").groupby("site_id", sort=True):
        row = {"site_id": site, "periods": len(part), **dict.fromkeys(names, np.nan)}
        if len(part) >= min_periods:
            years = (pd.to_datetime(part.time) - pd.to_datetime(part.time).iloc[0]).dt.days
            years = years.to_numpy() / 365.25
            area, low, high = (part[f"{c}_{units}"].to_numpy(float)
                               for c in ("adjusted", "ci_low", "ci_high"))  # fmt: skip
            slope, _, ts_low, ts_high = theilslopes(area, years, alpha=0.95)
            drawn = _drawn_slopes(years, area, low, high, _seed(0, str(site), 0))
            below, above = np.quantile(drawn, [0.025, 0.975]) - np.median(drawn)
            row[names[0]] = slope
            row[names[1]] = slope - np.hypot(slope - ts_low, below)
            row[names[2]] = slope + np.hypot(ts_high - slope, above)
            row[names[3]] = 100 * slope / np.median(area) if np.median(area) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["units"] = units
    return table


def _drawn_slopes(years, area, low, high, rng, draws: int = 4000) -> np.ndarray:
    """Theil–Sen slopes of ``draws`` series, each period's area drawn from its interval."""
    z = rng.standard_normal((draws, len(area)))
    side = np.where(z > 0, high - area, area - low) / _Z95
    series = area + z * side
    i, j = np.triu_indices(len(years), k=1)
    dt = years[j] - years[i]
    keep = dt > 0
    return np.median((series[:, j[keep]] - series[:, i[keep]]) / dt[keep], axis=1)


def _check_method(method: str) -> None:
    if method not in ("jeffreys", "olofsson"):
        raise StatsError(f"method={method!r} is not 'jeffreys' or 'olofsson'")


def _error_matrices(pred, sample_points, reference: str, schema, mining_classes=None):
    """(map, mapped area of each class in m², sample error matrix with map classes as rows and
    reference classes as columns) of every map with observed pixels and labelled points; a
    change sample's maps are the change between its two periods. Refuses a sample that does
    not fit the maps (:func:`adjusted_areas`), warns of maps and strata sampled too little."""
    labelled = _labelled(sample_points, reference)
    periods = None
    if "time0" in labelled.columns:  # a change sample: one pair of periods
        pairs = labelled[["time0", "time"]].drop_duplicates()
        if len(pairs) != 1:
            raise StatsError(f"a change sample must be of one pair of periods, not {len(pairs)}")
        periods = tuple(pairs.iloc[0])
    sites = sorted({site for site, _, _ in _each(pred, schema)})
    foreign = sorted(set(labelled.site_id.astype(str)) - set(sites))
    if foreign:
        raise StatsError(
            f"the sample has points of sites {foreign} that are not among the predictions' "
            f"{sites}: was it drawn from other predictions? Pass those sites' maps too"
        )
    used = np.zeros(len(labelled), bool)
    unsampled, small = [], []
    for m in _maps(pred, schema, periods, mining_classes):
        areas = _pixel_areas(m.grid)
        strata = [m.codes == c for c in m.ids]
        mapped = np.array([areas[stratum].sum() for stratum in strata])
        if not mapped.sum():
            continue
        on_map = _on_map(labelled, m)
        used |= on_map
        if not on_map.any():  # an interval from no point would claim no error at all
            unsampled.append(_map_name(m))
            continue
        counts = _counts(labelled[on_map], m, reference)
        pixels = np.array([stratum.sum() for stratum in strata])
        n_i = counts.sum(axis=1)
        for name, n, need in zip(m.names, n_i, np.minimum(MIN_STRATUM, pixels), strict=True):
            if n < need:  # a stratum smaller than MIN_STRATUM pixels is sampled whole
                small.append(f"{_map_name(m)} {name}: {n:.0f} (add {need - n:.0f})")
        yield m, mapped, counts
    _refuse_points_off_the_maps(labelled[~used])
    _warn_sampled_too_little(unsampled, small)


def _labelled(sample_points, reference: str):
    """The rows of a sample that carry a reference label, or a StatsError if none does."""
    if reference not in sample_points.columns:
        raise StatsError(
            f"the sample has no {reference!r} column: label it first (sample()[{reference!r}])"
        )
    labelled = sample_points[sample_points[reference].notna()]
    if labelled.empty:
        raise StatsError(
            f"none of the sample's {len(sample_points)} points has a {reference!r} label, so "
            "there is nothing to estimate errors from: label the points (by hand, or with "
            "reference_from(sample, truth)) before computing adjusted areas"
        )
    return labelled


def _map_name(m: _Map) -> str:
    import pandas as pd

    when = "" if m.time is None or pd.isna(m.time) else f" {str(m.time)[:10]}"
    return f"site {m.site!r}{when}"


def _on_map(labelled, m: _Map) -> np.ndarray:
    """Which labelled points belong to map ``m``; a StatsError for those of its site and period
    that lie outside its grid or whose ``map_class_id`` is not the map's class at their pixel."""
    import pandas as pd

    same = (labelled.site_id.astype(str) == m.site).to_numpy()
    same &= ((labelled.time == m.time) | (labelled.time.isna() & bool(pd.isna(m.time)))).to_numpy()
    if not same.any() or not {"x", "y"} <= set(labelled.columns):
        return same  # a table of counts only (a published error matrix): nothing to locate
    here = labelled[same]
    row, col, inside = _pixel_of(m.grid, here.x.to_numpy(float), here.y.to_numpy(float))
    if not inside.all():
        bad = here[~inside].iloc[0]
        raise StatsError(
            f"{(~inside).sum()} sample points of {_map_name(m)} lie outside its grid (the first "
            f"at x={bad.x}, y={bad.y}); were they moved, or drawn from another grid? Draw the "
            "sample from these predictions (sample(pred, ...))"
        )
    mapped = m.codes[row, col]
    wrong = mapped != here.map_class_id.to_numpy(int)
    if wrong.any():
        raise StatsError(
            f"{wrong.sum()} of the {len(here)} sample points of {_map_name(m)} say another class "
            "than the map has at their pixel (map_class_id): the sample was drawn from another "
            "map (an earlier prediction?). Draw a new sample from these predictions"
        )
    return same


def _pixel_of(grid: xr.DataArray, x: np.ndarray, y: np.ndarray):
    """(row, column) of the pixel nearest each point, as ``reference_from`` reads it, and
    whether the point lies on that pixel (within half a pixel of its centre)."""
    found = []
    for dim, values in (("y", y), ("x", x)):
        centres = grid.indexes[dim]
        index = centres.get_indexer(values, method="nearest")
        half = abs(centres[1] - centres[0]) / 2 if len(centres) > 1 else 0.5
        found.append((index, np.abs(np.asarray(centres[index]) - values) <= half))
    (row, on_row), (col, on_col) = found
    return row, col, on_row & on_col


def _counts(here, m: _Map, reference: str) -> np.ndarray:
    """The error matrix of a map's points: mapped classes as rows, reference classes as columns."""
    index = {int(c): i for i, c in enumerate(m.ids)}
    by_name = dict(zip(m.names, m.ids.tolist(), strict=True))
    refs = [by_name.get(r, r) for r in here[reference]]
    unknown = sorted({str(r) for r in refs if r not in index})
    if unknown:
        raise StatsError(
            f"reference classes {unknown} of {_map_name(m)} are not in the map's classes "
            f"{list(m.names)}"
        )
    counts = np.zeros((len(m.ids), len(m.ids)))
    np.add.at(counts, ([index[int(c)] for c in here.map_class_id],
                       [index[int(r)] for r in refs]), 1)  # fmt: skip
    return counts


def _refuse_points_off_the_maps(left) -> None:
    """A StatsError for labelled points of no map: periods the predictions do not have."""
    if left.empty:
        return
    periods = sorted({f"{s} {str(t)[:10]}" for s, t in zip(left.site_id, left.time, strict=True)})
    raise StatsError(
        f"{len(left)} labelled points are of periods the predictions do not have (or that are "
        f"all unobserved): {', '.join(periods[:6])}{' …' if len(periods) > 6 else ''}. Pass "
        "the predictions the sample was drawn from"
    )


def _warn_sampled_too_little(unsampled: list[str], small: list[str]) -> None:
    import warnings

    def listed(items):
        return ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")

    if unsampled:
        warnings.warn(
            f"no labelled sample point falls on {listed(unsampled)}: no estimate for "
            f"{'it' if len(unsampled) == 1 else 'them'}. Draw and label a sample of those maps",
            SampleSizeWarning, stacklevel=find_stack_level(),
        )  # fmt: skip
    if small:
        warnings.warn(
            f"strata with fewer than {MIN_STRATUM} labelled points, too few to estimate their "
            f"errors (labelled points per stratum, and how many to add): {listed(small)}. "
            f"Sample with min_per_stratum={MIN_STRATUM} or more, or label more points there",
            SampleSizeWarning, stacklevel=find_stack_level(),
        )  # fmt: skip


def _stratified(w: np.ndarray, rows: np.ndarray, n_i: np.ndarray):
    """Olofsson et al.'s stratified estimator: from each stratum's area weight ``w`` and the
    shares of its sample in each reference class ``rows`` (strata × classes), the estimated
    area share of each class and its standard error (eq. 10)."""
    dof = np.where(n_i > 1, n_i - 1, np.inf)[:, None]
    share = (w[:, None] * rows).sum(axis=0)
    se = np.sqrt((w[:, None] ** 2 * rows * (1 - rows) / dof).sum(axis=0))
    return share, se


_DRAWS = 20_000
"""Posterior draws per map for the Jeffreys intervals: the Monte Carlo error of a 95 % bound
is then well under 1 % of the interval's width."""
_OWN_PRIOR = 0.5
"""Each parameter of the Beta prior shared by a class's own strata: Jeffreys' ½, as for the
other strata. ``benchmarks/bench_intervals.py --prior`` measures what a weaker one does
to coverage (docs/analytics.md: the mining classes' coverage falls to 75–80 % at 0.05)."""


def _interval(w, rows, n_i, method: Method, rng, own=None):
    """The estimated area share of each reference class (the columns of ``rows``, each
    stratum's shares of points), its standard error and its 95 % bounds.

    ``"olofsson"``: the stratified estimator's normal interval (Olofsson et al. 2014, eq. 10).
    ``"jeffreys"``: the same estimate, with the equal-tailed interval of its posterior when
    the share of a class in each stratum has a Beta prior. The strata *of* the class (``own``:
    those mapped as it; for the footprint, the mining strata) share one Jeffreys prior, Beta(½,
    ½), split among them by their sample sizes, and so do the other strata: a stratum whose
    points show no error keeps a plausible error rate, where the normal interval gives it none,
    while the prior weighs, in all, as one point per side (a Jeffreys prior on each stratum
    instead adds half a point of error to every one, which at a few dozen points per stratum
    overstates a good map's errors: docs/analytics.md). A stratum not sampled is taken as
    mapped in the estimate, as in Olofsson's, but its bounds allow it any share of each class
    (Jeffreys' prior alone): a stratum nobody looked at is not known to be right.
    """
    share, se = _stratified(w, rows, n_i)
    if method == "olofsson":
        return share, se, share - _Z95 * se, share + _Z95 * se
    if own is None:
        own = np.eye(*rows.shape, dtype=bool)
    n = np.broadcast_to(n_i[:, None], rows.shape).astype(float)
    sampled = n > 0
    group = np.where(own, (n * own).sum(axis=0), (n * ~own).sum(axis=0))  # points per group
    mass = np.where(own, _OWN_PRIOR, 0.5)  # Beta(½, ½) per group, split by points
    prior = mass * n / np.where(group > 0, group, 1.0)
    k = rows * n
    # a stratum not sampled may hold any share of a class: its prior alone, Jeffreys'
    a, b = np.where(sampled, k + prior, 0.5), np.where(sampled, n - k + prior, 0.5)
    draws = rng.beta(a, b, size=(_DRAWS, *rows.shape))
    total = np.einsum("i,dij->dj", w, draws)
    low, high = np.quantile(total, [0.025, 0.975], axis=0)
    # no point of the class at all: it may be absent (Brown, Cai & DasGupta 2001's rule for
    # Jeffreys' interval at x = 0); every point of it: it may be everything
    low = np.where(k.sum(axis=0) == 0, 0.0, low)
    high = np.where((n - k).sum(axis=0) == 0, 1.0, high)
    return share, total.std(axis=0), np.minimum(low, share), np.maximum(high, share)


def _map_rng(m: _Map) -> np.random.Generator:
    """The posterior draws' generator of one map: the same map and sample, the same bounds."""
    return _seed(0, f"{m.site}|{m.time0}|{m.time}", 0)


def _olofsson(m: _Map, mapped: np.ndarray, counts: np.ndarray, per_unit, units, method):
    """The estimates of one map from its mapped areas (m²) and sample error matrix."""
    import pandas as pd

    total = mapped.sum()
    w = mapped / total
    n_i = counts.sum(axis=1)
    sampled = n_i > 0
    unsampled = (~sampled) & (w > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = np.where(sampled[:, None], counts / n_i[:, None], np.eye(len(w)))
        p = w[:, None] * rows  # p̂_ij
        dof = np.where(n_i > 1, n_i - 1, np.inf)
        cell_var = rows * (1 - rows) / dof[:, None]  # per stratum and reference class
        share, share_se, low, high = _interval(w, rows, n_i, method, _map_rng(m))
        users = np.where(sampled, np.diag(rows), np.nan)
        users_se = np.sqrt(np.where(sampled, users * (1 - users) / dof, np.nan))
        producers = np.diag(p) / share
        n_hat = mapped[:, None] / np.where(sampled, n_i, np.nan)[:, None] * counts  # N̂_ij
        col = np.nansum(n_hat, axis=0)
        producers_var = np.empty(len(w))
        for j in range(len(w)):
            others = [i for i in range(len(w)) if i != j and sampled[i]]
            term = sum(mapped[i] ** 2 * cell_var[i, j] for i in others)
            own = mapped[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / dof[j]
            producers_var[j] = (np.nan_to_num(own) + producers[j] ** 2 * term) / col[j] ** 2
        overall = np.trace(p)
        overall_se = np.sqrt(np.nansum(w**2 * np.nan_to_num(users * (1 - users)) / dof))
    area, se, low, high = (total * v / per_unit for v in (share, share_se, low, high))
    return pd.DataFrame({
        "site_id": m.site, **({"time0": m.time0} if m.time0 is not None else {}),
        "time": m.time, "class": list(m.names), "class_id": m.ids, "is_mining": list(m.mining),
        f"mapped_{units}": mapped / per_unit, f"adjusted_{units}": area, f"se_{units}": se,
        f"ci_low_{units}": low, f"ci_high_{units}": high,
        "users_accuracy": users, "users_se": users_se,
        "producers_accuracy": producers, "producers_se": np.sqrt(producers_var),
        "overall_accuracy": overall, "overall_se": overall_se,
        "n_sample": n_i.astype(int), "n_reference": counts.sum(axis=0).astype(int),
        "unsampled": unsampled,
    })  # fmt: skip
