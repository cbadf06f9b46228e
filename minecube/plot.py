"""Figures: quicklooks of cubes (matplotlib is imported only when a figure is drawn)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "area_plot",
    "class_map",
    "disturbance_map",
    "footprint_series",
    "interactive_map",
    "quicklook",
    "site_map",
    "summary_chart",
]


def quicklook(
    cube: xr.Dataset,
    path: str | os.PathLike,
    *,
    columns: int = 4,
    vmax: float = 0.3,
    title: str | None = None,
) -> None:
    """Save a grid of true-colour composites, one panel per period, with valid-data shares.

    Pixels without a valid observation are shown in grey. Reflectance is stretched linearly
    from 0 to ``vmax``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> cube = xr.Dataset(
    ...     {"reflectance": (("time", "band", "y", "x"), np.full((2, 4, 8, 8), 0.1, "float32")),
    ...      "valid_count": (("time", "y", "x"), np.ones((2, 8, 8), "int16"))},
    ...     coords={"time": pd.date_range("2023-01-01", periods=2, freq="QS"),
    ...             "band": ["blue", "green", "red", "nir"]})
    >>> quicklook(cube, "/tmp/quicklook.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = cube.reflectance.sel(band=["red", "green", "blue"]).transpose("time", "y", "x", "band")
    rgb = np.asarray(rgb.values, dtype="float32")
    n = rgb.shape[0]
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.1 * rows), squeeze=False)
    valid = np.asarray(cube.valid_count.values) > 0
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        image = np.clip(rgb[k] / vmax, 0, 1)
        image[~valid[k]] = 0.5
        ax.imshow(image, interpolation="nearest")
        ax.set_title(
            f"{str(cube.time.values[k])[:10]} · valid {100 * valid[k].mean():.0f} %", fontsize=9
        )
    fig.suptitle(title or cube.attrs.get("site_id", ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _save(fig, path: str | os.PathLike | None, dpi: int = 90):
    if path is not None:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def _class_image(ids: np.ndarray, schema) -> np.ndarray:
    """RGB image of a class-id raster; nodata light grey."""
    from matplotlib.colors import to_rgb

    lut = np.full((256, 3), 0.85, dtype="float32")
    for c in schema:
        lut[c.id] = to_rgb(c.colour)
    return lut[np.asarray(ids).astype(np.uint8)]


def _legend(ax, schema, present: set[int]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c.colour, label=c.name) for c in schema if c.id in present]
    handles.append(Patch(color=(0.85, 0.85, 0.85), label="unobserved"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)


def class_map(
    pred: xr.DataArray,
    cube: xr.Dataset | None = None,
    *,
    times: list[int] | None = None,
    vmax: float = 0.3,
    path: str | os.PathLike | None = None,
):
    """The class map of chosen periods, each next to its true-colour composite.

    Parameters
    ----------
    pred
        Class ids (time, y, x) with the CF ``flag_*`` attributes of its schema.
    cube
        The cube it was predicted from; without it only the class maps are drawn.
    times
        Positions of the periods to draw (default: the first and the last).
    vmax
        Reflectance shown as white.
    path
        Also save the figure here (PNG).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> pred = xr.DataArray(np.ones((2, 8, 8), "uint8"), dims=("time", "y", "x"),
    ...     coords={"time": pd.date_range("2023", periods=2, freq="YS")},
    ...     attrs=DEFAULT_CLASSES.cf_attrs())
    >>> class_map(pred, path="/tmp/class-map.png").axes[0].get_title()
    '2023-01-01'
    """
    from matplotlib.figure import Figure

    from minecube.classes import ClassSchema

    schema = ClassSchema.from_cf_attrs(pred.attrs)
    if "time" not in pred.dims:
        pred = pred.expand_dims(time=[np.datetime64("NaT", "ns")])
    times = [0, pred.sizes["time"] - 1] if times is None else list(times)
    times = list(dict.fromkeys(t % pred.sizes["time"] for t in times))
    columns = 2 if cube is not None else 1
    fig = Figure(figsize=(4 * columns + 1.5, 3.8 * len(times)))
    axes = fig.subplots(len(times), columns, squeeze=False)
    present: set[int] = set()
    for row, t in zip(axes, times, strict=True):
        ids = np.asarray(pred.isel(time=t).values)
        present |= set(np.unique(ids).tolist())
        when = str(pred.time.values[t])[:10]
        if cube is not None:
            rgb = cube.reflectance.sel(band=["red", "green", "blue"]).isel(time=t)
            image = np.clip(np.asarray(rgb.transpose("y", "x", "band").values) / vmax, 0, 1)
            row[0].imshow(np.nan_to_num(image, nan=0.5), interpolation="nearest")
            row[0].set_title(f"{when} · true colour", fontsize=9)
        row[-1].imshow(_class_image(ids, schema), interpolation="nearest")
        row[-1].set_title(when if cube is None else f"{when} · classes", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    _legend(axes[0, -1], schema, present)
    fig.suptitle(pred.attrs.get("site_id", ""), fontsize=11)
    return _save(fig, path)


def area_plot(table, *, path: str | os.PathLike | None = None):
    """Stacked class areas over time, one panel per site, with the unobserved area on top and
    a dotted red line at each degraded period (built without some of its items).

    Parameters
    ----------
    table
        A :func:`minecube.stats.class_areas` table (one or more sites).
    path
        Also save the figure here (PNG).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"site_id": "a", "time": pd.to_datetime(["2023"] * 2 + ["2024"] * 2),
    ...     "class": ["open_pit", "vegetation"] * 2, "class_id": [1, 6] * 2,
    ...     "is_mining": [True, False] * 2, "area_ha": [1.0, 9, 2, 7],
    ...     "unobserved_ha": [0.0, 0, 1, 1]})
    >>> area_plot(table).axes[0].get_ylabel()
    'area (ha)'
    """
    from matplotlib.figure import Figure

    from minecube.classes import DEFAULT_CLASSES
    from minecube.stats import _table_units, _unit_label

    units = _table_units(table, "area")
    colours = {c.name: c.colour for c in DEFAULT_CLASSES}
    sites = list(dict.fromkeys(table.site_id))
    fig = Figure(figsize=(8, 2.8 * len(sites)))
    axes = fig.subplots(len(sites), 1, squeeze=False)[:, 0]
    for ax, site in zip(axes, sites, strict=True):
        part = table[table.site_id == site]
        wide = part.pivot_table(index="time", columns="class", values=f"area_{units}", sort=False)
        order = part.drop_duplicates("class").sort_values(
            ["is_mining", "class_id"], ascending=[False, True]
        )
        wide = wide[order["class"]]
        unobserved = part.groupby("time")[f"unobserved_{units}"].first()
        ax.stackplot(
            wide.index,
            *[wide[c] for c in wide],
            colors=[colours.get(c, "#808080") for c in wide],
            labels=list(wide),
        )
        ax.fill_between(
            wide.index,
            wide.sum(axis=1),
            wide.sum(axis=1) + unobserved,
            color="0.85",
            hatch="//",
            edgecolor="0.6",
            label="unobserved",
        )
        degraded = part.time[part.degraded] if "degraded" in part else []
        for k, t in enumerate(dict.fromkeys(degraded)):  # built without some of its items
            ax.axvline(t, color="#b00020", ls=":", lw=1.2, label=None if k else "degraded period")
        ax.set_ylabel(f"area ({_unit_label(units)})")
        ax.set_title(site, fontsize=10)
        ax.margins(x=0)
    axes[0].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def disturbance_map(date: xr.DataArray, *, path: str | os.PathLike | None = None):
    """Map of the period each pixel first became mining (:func:`minecube.stats.expansion`).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> date = xr.DataArray(np.array([["2023-01-01", "NaT"], ["2024-01-01", "2023-01-01"]],
    ...                              dtype="datetime64[ns]"), dims=("y", "x"))
    >>> len(disturbance_map(date).axes)  # the map and its colour bar
    2
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

    values = np.asarray(date.values)
    periods = np.unique(values[~np.isnat(values)])
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    index = np.searchsorted(periods, values).astype("float32")
    index[np.isnat(values)] = np.nan
    n = max(len(periods), 1)
    colours = ListedColormap([_viridis(k / max(n - 1, 1)) for k in range(n)])
    colours = colours.with_extremes(bad="0.9")
    image = ax.imshow(
        index, cmap=colours, norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), interpolation="nearest"
    )
    bar = fig.colorbar(image, ax=ax, ticks=np.arange(n))
    bar.ax.set_yticklabels([str(p)[:10] for p in periods], fontsize=7)
    bar.set_label("first period mined (grey: never)")
    ax.set_axis_off()
    ax.set_title(f"{date.attrs.get('site_id', '')} disturbance date".strip(), fontsize=10)
    return _save(fig, path)


def _viridis(x: float):
    from matplotlib import colormaps

    return colormaps["viridis"](x)


def summary_chart(
    summary,
    sites,
    *,
    by=("commodity", "climate"),
    units: str | None = None,
    path: str | os.PathLike | None = None,
):
    """Mining footprint at the first and last reliable period, summed by commodity and climate.

    Parameters
    ----------
    summary
        :attr:`minecube.stats.Expansion.summary` (one row per site).
    sites
        The site table, with ``site_id`` and the ``by`` columns.
    by
        Site columns, one panel each.
    path
        Also save the figure here (PNG).

    Examples
    --------
    >>> import pandas as pd
    >>> summary = pd.DataFrame({"site_id": ["a", "b"], "first_ha": [10.0, 4], "last_ha": [12.0, 8],
    ...     "first": pd.Timestamp("2022"), "last": pd.Timestamp("2024")})
    >>> sites = pd.DataFrame({"site_id": ["a", "b"], "commodity": ["gold", "coal"],
    ...                       "climate": ["arid", "arid"]})
    >>> len(summary_chart(summary, sites).axes)
    2
    """
    from matplotlib.figure import Figure

    from minecube.stats import _table_units, _unit_label, aggregate

    units = units or _table_units(summary, "first")
    fig = Figure(figsize=(5 * len(by), 3.6))
    axes = fig.subplots(1, len(by), squeeze=False)[0]
    for ax, key in zip(axes, by, strict=True):
        sums = aggregate(summary, sites, by=key).set_index(key)[[f"first_{units}", f"last_{units}"]]
        x = np.arange(len(sums))
        ax.bar(x - 0.2, sums[f"first_{units}"], 0.4, color="#d8b365", label="first reliable period")
        ax.bar(x + 0.2, sums[f"last_{units}"], 0.4, color="#8c510a", label="last reliable period")
        for k, (a0, a1) in enumerate(sums.to_numpy()):
            if a0 > 0:
                ax.annotate(
                    f"{100 * (a1 / a0 - 1):+.0f} %",
                    (k + 0.2, a1),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        ax.set_xticks(x, sums.index, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"mining footprint ({_unit_label(units)})")
        ax.set_title(f"by {key}", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def adjusted_plot(adjusted, *, truth=None, path: str | os.PathLike | None = None):
    """The mining footprint per period, mapped and error-adjusted with its 95 % interval (and
    the truth, where known), one panel per site.

    Parameters
    ----------
    adjusted
        A :func:`minecube.stats.adjusted_mining_area` table.
    truth
        Optional true footprint per site and period: a table with ``site_id``, ``time`` and
        ``truth_<units>`` (e.g. :func:`minecube.report.mining_series`).
    path
        Also save the figure here (PNG).

    Examples
    --------
    >>> import pandas as pd
    >>> adjusted = pd.DataFrame({"site_id": "a", "time": pd.to_datetime(["2023", "2024"]),
    ...     "mapped_ha": [12.0, 15], "adjusted_ha": [10.0, 13], "se_ha": [1.0, 1.5],
    ...     "ci_low_ha": [8.0, 10], "ci_high_ha": [12.0, 16]})
    >>> adjusted_plot(adjusted).axes[0].get_ylabel()
    'mining footprint (ha)'
    """
    from matplotlib.figure import Figure

    from minecube.stats import _table_units, _unit_label

    units = _table_units(adjusted, "adjusted")
    sites = list(dict.fromkeys(adjusted.site_id))
    fig = Figure(figsize=(8, 2.4 * len(sites)))
    axes = fig.subplots(len(sites), 1, squeeze=False)[:, 0]
    for ax, site in zip(axes, sites, strict=True):
        part = adjusted[adjusted.site_id == site].sort_values("time")
        t = _times(part.time)
        area = part[f"adjusted_{units}"]
        ax.plot(t, part[f"mapped_{units}"], "o--", color="0.5", label="mapped (pixel count)")
        ax.errorbar(
            t,
            area,
            yerr=[area - part[f"ci_low_{units}"], part[f"ci_high_{units}"] - area],
            fmt="o-",
            color="#8c510a",
            capsize=3,
            label="error-adjusted, 95 % interval",
        )
        if truth is not None and f"truth_{units}" in truth:
            known = truth[truth.site_id == site].sort_values("time")
            ax.plot(_times(known.time), known[f"truth_{units}"], "s", color="#1b7837",
                    label="truth")  # fmt: skip
        ax.set_ylabel(f"mining footprint ({_unit_label(units)})")
        ax.set_title(site, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _times(values):
    """Times as pandas timestamps (CSV round trips give strings)."""
    import pandas as pd

    return pd.to_datetime(values)


def _land():
    """The world's land outline shipped with minecube (Natural Earth 1:110m, public domain)."""
    import json
    from importlib.resources import files

    import shapely

    text = files("minecube").joinpath("data/land.geojson").read_text(encoding="utf-8")
    return shapely.from_geojson(json.dumps(json.loads(text)["features"][0]["geometry"]))


def _polygon_patches(geometry):
    """matplotlib paths of a (multi)polygon's rings, holes included."""
    import shapely
    from matplotlib.path import Path as MplPath

    paths = []
    for polygon in shapely.get_parts(geometry):
        rings = [polygon.exterior, *polygon.interiors]
        vertices = np.concatenate([np.asarray(r.coords)[:, :2] for r in rings])
        codes = np.concatenate([
            [MplPath.MOVETO, *[MplPath.LINETO] * (len(r.coords) - 2), MplPath.CLOSEPOLY]
            for r in rings
        ])  # fmt: skip
        paths.append(MplPath(vertices, codes))
    return paths


def site_map(sites, *, path: str | os.PathLike | None = None, label: bool = True):
    """The sites on a world map: a point per site, coloured by commodity, on the land outline
    that ships with minecube (no tiles or data are fetched).

    Parameters
    ----------
    sites
        The site table (:func:`minecube.sites.read_sites`): ``site_id``, a geometry and,
        optionally, ``commodity``.
    path
        Also save the figure here (PNG).
    label
        Write each site's id beside its point.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import geopandas as gpd
    >>> from shapely.geometry import Point
    >>> sites = gpd.GeoDataFrame({"site_id": ["a"], "commodity": ["gold"]},
    ...                          geometry=[Point(-1.7, 6.2).buffer(0.02)], crs="EPSG:4326")
    >>> site_map(sites, path="/tmp/site-map.png").axes[0].get_xlabel()
    'longitude (°)'
    """
    from matplotlib.collections import PathCollection
    from matplotlib.figure import Figure

    points = sites.to_crs("EPSG:4326").geometry.representative_point()
    fig = Figure(figsize=(10, 5.2))
    ax = fig.subplots()
    ax.add_collection(
        PathCollection(_polygon_patches(_land()), facecolor="#e6e2d8", edgecolor="#9a9486",
                       linewidth=0.4)
    )  # fmt: skip
    groups = sites["commodity"].fillna("—") if "commodity" in sites else None
    kinds = sorted(set(groups)) if groups is not None else ["site"]
    colours = dict(zip(kinds, _qualitative(len(kinds)), strict=True))
    for kind in kinds:
        at = (groups == kind).to_numpy() if groups is not None else np.ones(len(sites), bool)
        ax.scatter(points.x[at], points.y[at], s=36, color=colours[kind], edgecolor="black",
                   linewidth=0.6, zorder=3, label=kind)  # fmt: skip
    if label:
        for site_id, p in zip(sites.site_id, points, strict=True):
            ax.annotate(str(site_id), (p.x, p.y), xytext=(4, 3), textcoords="offset points",
                        fontsize=7, zorder=4)  # fmt: skip
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 85)
    ax.set_aspect("equal")
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_facecolor("#f4f8fb")
    if groups is not None:
        ax.legend(title="commodity", fontsize=8, title_fontsize=8, loc="lower left")
    ax.set_title(f"{len(sites)} sites", fontsize=10)
    return _save(fig, path)


def _qualitative(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def footprint_series(
    pred: xr.DataArray,
    *,
    columns: int = 6,
    path: str | os.PathLike | None = None,
):
    """Small multiples of a site's classes: one panel per period, with the share of the site
    observed in each title and one legend for all.

    Parameters
    ----------
    pred
        Class ids (time, y, x) with the CF ``flag_*`` attributes of its schema.
    columns
        Panels per row.
    path
        Also save the figure here (PNG).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> pred = xr.DataArray(np.ones((3, 8, 8), "uint8"), dims=("time", "y", "x"),
    ...     coords={"time": pd.date_range("2023", periods=3, freq="QS")},
    ...     attrs=DEFAULT_CLASSES.cf_attrs())
    >>> len(footprint_series(pred, path="/tmp/series.png").axes)
    3
    """
    from matplotlib.figure import Figure

    from minecube.classes import ClassSchema

    schema = ClassSchema.from_cf_attrs(pred.attrs)
    ids = np.asarray(pred.values)
    n = ids.shape[0]
    columns = min(columns, n)
    rows = -(-n // columns)
    aspect = ids.shape[1] / max(ids.shape[2], 1)
    fig = Figure(figsize=(1.9 * columns + 1.8, (1.9 * aspect + 0.35) * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    known = set(schema.ids)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(_class_image(ids[k], schema), interpolation="nearest")
        observed = 100 * np.isin(ids[k], list(known)).mean()
        ax.set_title(f"{str(pred.time.values[k])[:10]} · {observed:.0f} % seen", fontsize=7)
    _legend(axes[0, -1], schema, set(np.unique(ids).tolist()))
    fig.suptitle(f"{pred.attrs.get('site_id', '')} — classes per period", fontsize=10)
    return _save(fig, path, dpi=80)


def interactive_map(pred: xr.DataArray, *, time: int = -1, opacity: float = 0.8):
    """An interactive map of one period's classes for a notebook: the class polygons
    (:func:`minecube.export.to_polygons`) in their colours, pan and zoom, a class and its area
    on hover. The data travel inside the widget and no basemap tiles are requested, so it
    works offline. Needs ``lonboard`` (``pip install lonboard``, or minecube's ``maps`` extra).

    Examples
    --------
    ``interactive_map(pred)`` as a notebook cell's last line shows the latest period.
    """
    try:
        from lonboard import Map, SolidPolygonLayer
    except ImportError:
        raise ImportError(
            "interactive_map needs lonboard: pip install lonboard (or minecube[maps]); "
            "class_map and footprint_series draw static figures without it"
        ) from None
    from matplotlib.colors import to_rgb

    from minecube.classes import ClassSchema
    from minecube.export import to_polygons

    schema = ClassSchema.from_cf_attrs(pred.attrs)
    period = pred.isel(time=[time]) if "time" in pred.dims else pred
    shapes = to_polygons(period, schema=schema).to_crs("EPSG:4326")
    rgb = {c.name: [round(255 * v) for v in to_rgb(c.colour)] for c in schema}
    colours = np.array([rgb[name] for name in shapes["class"]], dtype=np.uint8)
    layer = SolidPolygonLayer.from_geopandas(
        shapes, get_fill_color=colours, opacity=opacity, pickable=True
    )
    return Map(layer, basemap=None)
