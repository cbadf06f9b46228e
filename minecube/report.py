"""A static HTML report of a run: tables, figures and exports of every site's predictions."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from markupsafe import Markup

from minecube import __version__
from minecube.stats import StatsError, Units, _table_units, _unit_label

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd
    import xarray as xr

__all__ = ["area_tables", "mining_series", "open_all_predictions", "write_report", "write_tables"]


def open_all_predictions(store: str | os.PathLike) -> dict[str, xr.DataArray]:
    """Every complete prediction in a Zarr store written by ``segment_to_zarr``, by site.

    Raises :class:`~minecube.segment.IncompletePredictionError` for an unfinished one, so a
    report never shows partial output.
    """
    from minecube.segment import _open_store, open_predictions
    from minecube.store import read_manifest

    root = _open_store(store)
    groups = sorted(
        k for k in root.group_keys() if (read_manifest(store, k) or {}).get("kind") == "predictions"
    )
    if not groups:
        raise StatsError(f"{os.fspath(store)!r} holds no predictions written by segment_to_zarr")
    return {g: open_predictions(store, g) for g in groups}


def mining_series(comparison: pd.DataFrame) -> pd.DataFrame:
    """Mining footprint per site and period, predicted against truth, from ``compare_areas``.

    Examples
    --------
    >>> import pandas as pd
    >>> comparison = pd.DataFrame({"site_id": "a", "time": pd.Timestamp("2024"),
    ...     "is_mining": [True, True, False], "predicted_ha": [2.0, 1, 5], "truth_ha": [2.0, 2, 4],
    ...     "error_ha": [0.0, -1, 1], "compared_pct": 90.0})
    >>> mining_series(comparison)[["predicted_ha", "truth_ha", "error_pct"]]
       predicted_ha  truth_ha  error_pct
    0           3.0       4.0      -25.0
    """
    units = _table_units(comparison, "predicted")
    mining = comparison[comparison.is_mining]
    out = mining.groupby(["site_id", "time"], sort=False).agg(
        compared_pct=("compared_pct", "first"),
        **{f"predicted_{units}": (f"predicted_{units}", "sum")},
        **{f"truth_{units}": (f"truth_{units}", "sum")},
    )
    out = out.reset_index()
    out[f"error_{units}"] = out[f"predicted_{units}"] - out[f"truth_{units}"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["error_pct"] = 100 * out[f"error_{units}"] / out[f"truth_{units}"]
    out.attrs["units"] = units
    return out


def area_tables(
    predictions: Mapping[str, xr.DataArray],
    *,
    sites: pd.DataFrame | None = None,
    truth: Mapping[str, xr.DataArray] | None = None,
    units: Units = "ha",
    min_observed: float = 0.8,
) -> dict[str, pd.DataFrame]:
    """Every table of a report: class areas, mine expansion, its summaries by commodity and
    climate (with ``sites``) and predicted against true areas (with ``truth``).

    Parameters
    ----------
    predictions
        Class-id predictions by site id.
    sites
        The site table: adds ``expansion_by_commodity`` and ``expansion_by_climate``.
    truth
        True class ids on each prediction's grid and periods: adds ``truth_comparison`` and
        ``mining_vs_truth``.
    units
        Area unit of every table: ``"ha"``, ``"km2"`` or ``"m2"``.
    min_observed
        Share of a site observed for a period to count in changes.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``class_areas``, ``expansion``, ``expansion_summary`` and the optional tables above.

    Examples
    --------
    >>> import numpy as np, pandas as pd, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> ids = np.array([[[6, 6], [6, 6]], [[1, 6], [1, 6]]], "uint8")
    >>> pred = xr.DataArray(ids, dims=("time", "y", "x"), attrs=DEFAULT_CLASSES.cf_attrs(),
    ...     coords={"time": pd.date_range("2022", periods=2, freq="YS"), "y": [15.0, 5],
    ...             "x": [5.0, 15]}).rio.write_crs("EPSG:32750")
    >>> sorted(area_tables({"tiny-pit": pred}))
    ['class_areas', 'expansion', 'expansion_summary']
    """
    from minecube import stats

    growth = stats.expansion(predictions, units=units, min_observed=min_observed)
    return _tables(predictions, growth, sites, truth, units)


def _tables(predictions, growth, sites, truth, units) -> dict[str, pd.DataFrame]:
    from minecube import stats

    tables = {
        "class_areas": stats.class_areas(predictions, units=units),
        "expansion": growth.table,
        "expansion_summary": growth.summary,
    }
    if sites is not None:
        for key in ("commodity", "climate"):
            if key in sites.columns:
                tables[f"expansion_by_{key}"] = stats.aggregate(growth.table, sites, by=key)
    if truth is not None:
        comparison = stats.compare_areas(predictions, truth, units=units)
        tables |= {"truth_comparison": comparison, "mining_vs_truth": mining_series(comparison)}
    return tables


def write_tables(
    tables: Mapping[str, pd.DataFrame], folder: str | os.PathLike, *, run_id: str | None = None
) -> Path:
    """Write each table as ``<folder>/<name>.csv`` and ``.parquet`` (each file whole or absent),
    with a ``run_id`` column when given. Returns the folder."""
    from minecube.export import write_table

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if run_id is not None:
            table = table.assign(run_id=run_id)
        for suffix in (".csv", ".parquet"):
            write_table(table, folder / f"{name}{suffix}")
    return folder


class _Table(Markup):
    """A table's HTML (safe to insert) and its number of rows."""

    rows: int = 0


def _table(frame: pd.DataFrame, digits: int = 2) -> Markup:
    """A table as HTML: pandas escapes every cell and header, so it is safe to insert."""
    shown = frame.copy()
    for column in shown.columns:
        if np.issubdtype(shown[column].dtype, np.datetime64):
            shown[column] = shown[column].dt.strftime("%Y-%m-%d")
    html = shown.to_html(
        index=False, border=0, float_format=lambda v: f"{v:,.{digits}f}", na_rep="—", escape=True
    )
    table = _Table(html)
    table.rows = len(frame)  # long tables fold (the template's ``folded``)
    return table


def write_report(
    predictions: Mapping[str, xr.DataArray] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    cubes: Mapping[str, xr.Dataset] | str | os.PathLike | None = None,
    sites: pd.DataFrame | str | os.PathLike | None = None,
    truth: Mapping[str, xr.DataArray] | None = None,
    units: Units = "ha",
    min_observed: float = 0.8,
    title: str = "minecube report",
    progress: bool = True,
    run_id: str | None = None,
    reference: pd.DataFrame | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a static HTML report: class areas, expansion, transitions, maps and exports.

    Parameters
    ----------
    predictions
        Class-id predictions by site id, or a Zarr store written by
        :func:`~minecube.segment.segment_to_zarr` (every complete site in it).
    out
        Folder for ``index.html``, ``figures/``, ``tables/`` (CSV and Parquet), ``cog/`` (the
        last reliable period of each site as Cloud-Optimised GeoTIFF) and ``polygons/``
        (class polygons per period as GeoPackage).
    cubes
        The cubes by site id, or their Zarr store: adds true-colour composites to the maps.
    sites
        The site table (or its file): adds the commodity and climate summaries.
    truth
        True class ids on each prediction's grid and periods, by site id: adds predicted
        against true areas per site, period and class.
    units
        Area unit of every table and figure: ``"ha"``, ``"km2"`` or ``"m2"``.
    min_observed
        Share of a site observed for a period to count in changes (see
        :func:`~minecube.stats.expansion`).
    title
        Title of the page.
    progress
        Show a progress bar over sites.
    run_id
        Stamped on every table row (a ``run_id`` column), so each number can be traced back
        to its run's record (:func:`minecube.pipeline.lineage`).
    reference
        A labelled stratified sample of the predictions (:func:`minecube.stats.sample` with
        its ``reference`` column filled): adds the error-adjusted areas and mining footprint
        with their 95 % intervals (:func:`minecube.stats.adjusted_areas`,
        :func:`minecube.stats.adjusted_mining_area`), as tables and a figure.
    overwrite
        Replace files in ``out`` that minecube did not write, or that were changed since
        (:mod:`minecube.outputs`); without it they are refused and nothing is written. Files
        of an earlier report that this one does not write (sites no longer reported) are
        removed; the user's are kept.

    Returns
    -------
    pathlib.Path
        The ``index.html`` written.

    Examples
    --------
    >>> import numpy as np, pandas as pd, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> ids = np.array([[[6, 6], [6, 6]], [[1, 6], [1, 6]]], "uint8")
    >>> pred = xr.DataArray(ids, dims=("time", "y", "x"), attrs=DEFAULT_CLASSES.cf_attrs(),
    ...     coords={"time": pd.date_range("2022", periods=2, freq="YS"), "y": [15.0, 5],
    ...             "x": [5.0, 15]}).rio.write_crs("EPSG:32750")
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "report"
    >>> write_report({"tiny-pit": pred}, out, progress=False).name
    'index.html'
    >>> write_report({"tiny-pit": pred}, out, progress=False).name  # its own files: replaced
    'index.html'
    """
    from minecube.outputs import staged
    from minecube.sites import check_site_id

    out = Path(out)
    preds = (
        dict(predictions) if isinstance(predictions, Mapping) else open_all_predictions(predictions)
    )
    if not preds:
        raise StatsError("no predictions to report; give at least one site")
    for site in preds:  # ids name the report's files and anchors
        check_site_id(site)
    if isinstance(cubes, str | os.PathLike):
        from minecube.cube import open_cube

        store = cubes
        cubes = {site: open_cube(store, site) for site in preds}
    if isinstance(sites, str | os.PathLike):
        from minecube.sites import read_sites

        sites = read_sites(sites)
    with staged(out, overwrite=overwrite, prune=True) as tmp:  # replaces only its own files
        _write_pages(preds, tmp, cubes=cubes, sites=sites, truth=truth, units=units,
                     min_observed=min_observed, title=title, progress=progress, run_id=run_id,
                     reference=reference)  # fmt: skip
    return out / "index.html"


def _write_pages(preds, out, *, cubes, sites, truth, units, min_observed, title, progress,
                 run_id, reference) -> None:  # fmt: skip
    """Every figure, table, export and the page of a report, into the folder ``out``."""
    from tqdm.auto import tqdm

    from minecube import plot, stats

    for folder in ("figures", "tables", "cog", "polygons"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    u = _unit_label(units)

    growth = stats.expansion(preds, units=units, min_observed=min_observed)
    tables = _tables(preds, growth, sites, truth, units)
    comparison, series = tables.get("truth_comparison"), tables.get("mining_vs_truth")
    sections = []
    context = {
        "title": title,
        "model": str(next(iter(preds.values())).attrs.get("model_spec", "—")),
        "unit": u,
        "min_observed_pct": f"{100 * min_observed:.0f}",
        "version": __version__,
        "stamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": _table(growth.summary),
        "summary_chart": None,
        "by_group": [],
        "series": _table(series) if series is not None else None,
        "adjusted": None,
        "sites": sections,
        "tables": tables,
        "degraded": [
            (site, period, ", ".join(f"{item} ({why})" for item, why in skipped.items()))
            for site, pred in preds.items()
            for period, skipped in stats.degraded_periods(pred).items()
        ],
    }
    context["site_map"] = "figures/sites.png"
    located = sites if sites is not None else _site_points(preds)
    plot.site_map(located, path=out / context["site_map"])
    if sites is not None:
        plot.summary_chart(growth.summary, sites, units=units, path=out / "figures/summary.png")
        context["summary_chart"] = "figures/summary.png"
        for key in ("commodity", "climate"):
            if key in sites.columns:
                sums = stats.aggregate(growth.summary, sites, by=key)
                sums["change_pct"] = 100 * (sums[f"last_{units}"] / sums[f"first_{units}"] - 1)
                context["by_group"].append((key, _table(sums)))
    if reference is not None:
        tables |= stats._adjusted_tables(preds, reference, units=units)
        adjusted = tables["adjusted_mining"]
        plot.adjusted_plot(adjusted, truth=series, path=out / "figures/adjusted.png")
        context["adjusted"] = _table(adjusted)
        context["adjusted_trend"] = _table(tables["adjusted_trend"])
        context["sample_points"] = int(reference["reference"].notna().sum())
    plot.area_plot(tables["class_areas"], path=out / "figures/class-areas.png")
    for site in tqdm(preds, desc="report", unit="site", disable=not progress):
        sections.append(_site_section(site, preds[site], cubes, growth, comparison, units, out))
    write_tables(tables, out / "tables", run_id=run_id)
    (out / "index.html").write_text(_template().render(context), encoding="utf-8")


def _site_points(preds) -> gpd.GeoDataFrame:
    """Each site's grid outline in lon/lat, for the site map of a report given no site table."""
    import geopandas as gpd
    from shapely.geometry import box

    bounds = [box(*p.rio.transform_bounds("EPSG:4326", densify_pts=21)) for p in preds.values()]
    return gpd.GeoDataFrame({"site_id": list(preds)}, geometry=bounds, crs="EPSG:4326")


def _template():
    """The report's Jinja2 template; every value is escaped unless it is :class:`Markup`."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("minecube", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html")


def _site_section(site, pred, cubes, growth, comparison, units, out) -> str:
    """The figures, tables and exports of one site."""
    from minecube import plot, stats
    from minecube.export import to_cog, to_polygons

    rows = growth.table[growth.table.site_id == site].reset_index(drop=True)
    reliable = np.flatnonzero(rows.reliable.to_numpy())
    if len(reliable) == 0:
        reliable = np.array([int(np.argmax(rows.observed_pct.to_numpy()))])
    first, last = int(reliable[0]), int(reliable[-1])
    cube = cubes.get(site) if cubes is not None else None
    plot.class_map(pred, cube, times=[first, last], path=out / f"figures/{site}-classes.png")
    plot.footprint_series(pred.assign_attrs(site_id=site), path=out / f"figures/{site}-series.png")
    plot.disturbance_map(
        growth.disturbance[site].assign_attrs(site_id=site),
        path=out / f"figures/{site}-disturbance.png",
    )
    to_cog(pred, out / "cog" / f"{site}.tif", time=last)
    to_polygons(pred, out / "polygons" / f"{site}.gpkg", units=units)
    matrix = stats.transitions(pred, first, last, units=units)
    matrix = matrix.loc[(matrix.sum(axis=1) > 0), (matrix.sum(axis=0) > 0)]
    section = {
        "id": site,
        "classes": f"figures/{site}-classes.png",
        "disturbance": f"figures/{site}-disturbance.png",
        "series": f"figures/{site}-series.png",
        "cog": f"cog/{site}.tif",
        "polygons": f"polygons/{site}.gpkg",
        "last": str(rows.time[last])[:10],
        "periods": _table(rows.drop(columns="site_id")),
        "t0": matrix.attrs["t0"],
        "t1": matrix.attrs["t1"],
        "transitions": _table(matrix.reset_index()),
        "truth": None,
    }
    if comparison is not None:
        part = comparison[(comparison.site_id == site) & (comparison.time == rows.time[last])]
        section["truth"] = _table(part.drop(columns=["site_id", "time", "class_id"]))
    return section
