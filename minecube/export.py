"""Exports: tables as CSV or Parquet, prediction slices as Cloud-Optimised GeoTIFF, class
polygons per period as GeoPackage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minecube.stats import StatsError, _check_units, _checked, _period, _site, pixel_area

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd
    import xarray as xr

    from minecube.classes import ClassSchema

__all__ = ["safe_cells", "to_cog", "to_polygons", "write_table"]


_FORMULA = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a text cell as a formula (OWASP)."""


def safe_cells(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with text cells that a spreadsheet would run as formulas (``=HYPERLINK(…)``,
    ``+…``, ``-…``, ``@…``) prefixed with ``'``, so they open as text; numbers are left alone.

    >>> import pandas as pd
    >>> safe_cells(pd.DataFrame({"commodity": ["=HYPERLINK(1)", "gold"], "x": [-1.5, 2]}))
            commodity    x
    0  '=HYPERLINK(1) -1.5
    1            gold  2.0
    """
    import pandas as pd

    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA) else v
            )
    return out


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as CSV (``.csv``) or Parquet (``.parquet``), keeping its units.

    Parquet keeps ``table.attrs`` (the units) in its metadata; CSV keeps them in the column
    names (``area_ha``). In CSV, text cells that a spreadsheet would run as a formula are
    neutralised (:func:`safe_cells`); Parquet keeps every value as it is.

    Examples
    --------
    >>> import pandas as pd
    >>> write_table(pd.DataFrame({"area_ha": [1.5]}), "/tmp/areas.csv").name
    'areas.csv'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        safe_cells(table).to_csv(path, index=False, date_format="%Y-%m-%d")
    elif path.suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        raise StatsError(f"{str(path)!r}: write tables as .csv or .parquet")
    return path


def to_cog(
    pred: xr.DataArray,
    path: str | os.PathLike,
    *,
    time: int | str = -1,
    schema: ClassSchema | None = None,
) -> Path:
    """Write one period of a prediction as a Cloud-Optimised GeoTIFF with a colour table.

    Parameters
    ----------
    pred
        Class ids (time, y, x) with a CRS.
    path
        Output ``.tif``.
    time
        The period: a position or a date of the ``time`` coordinate (default: the last).
    schema
        Class schema; default: the one in the raster's attributes.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> pred = xr.DataArray(np.ones((2, 2), "uint8"), dims=("y", "x"),
    ...     coords={"y": [15.0, 5], "x": [5.0, 15]},
    ...     attrs=DEFAULT_CLASSES.cf_attrs()).rio.write_crs("EPSG:32750")
    >>> rioxarray.open_rasterio(to_cog(pred, "/tmp/pred.tif")).rio.crs.to_epsg()
    32750
    """
    import rasterio
    import rasterio.shutil
    from matplotlib.colors import to_rgb

    p, s = _checked(pred, schema)
    one = _period(p, time, "time").load()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = one.drop_vars("time").astype("uint8")
    out.attrs = {"flag_values": " ".join(map(str, s.ids)), "flag_meanings": " ".join(s.names)}
    out = out.rio.write_nodata(s.nodata, encoded=False)
    plain, partial = path.with_name(path.name + ".plain"), path.with_name(path.name + ".partial")
    try:
        out.rio.to_raster(plain, driver="GTiff", tiled=True)
        with rasterio.open(plain, "r+") as dst:
            colours = {c.id: tuple(round(255 * v) for v in to_rgb(c.colour)) for c in s}
            dst.write_colormap(1, colours)
            dst.update_tags(period=str(one.time.values)[:10], site_id=_site(pred, None))
        rasterio.shutil.copy(
            plain, partial, driver="COG", compress="DEFLATE", overview_resampling="mode"
        )
        os.replace(partial, path)  # never a half-written file under the final name
    finally:
        for leftover in (plain, partial):
            leftover.unlink(missing_ok=True)
    return path


def to_polygons(
    pred: xr.DataArray,
    path: str | os.PathLike | None = None,
    *,
    units: str = "ha",
    schema: ClassSchema | None = None,
) -> gpd.GeoDataFrame:
    """Class polygons of every period (4-connected pixels of one class), optionally as GeoPackage.

    Parameters
    ----------
    pred
        Class ids (time, y, x) with a CRS. Unobserved pixels give no polygon.
    path
        Write the polygons to this GeoPackage, layer ``classes``, replacing the file.
    units
        Unit of the ``area_<units>`` column.
    schema
        Class schema; default: the one in the raster's attributes.

    Returns
    -------
    geopandas.GeoDataFrame
        ``site_id``, ``time``, ``class``, ``class_id``, ``is_mining``, ``area_<units>`` and the
        polygon in the prediction's CRS.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> pred = xr.DataArray(np.array([[1, 1], [6, 0]], "uint8"), dims=("y", "x"),
    ...     coords={"y": [15.0, 5], "x": [5.0, 15]},
    ...     attrs=DEFAULT_CLASSES.cf_attrs()).rio.write_crs("EPSG:32750")
    >>> to_polygons(pred, units="m2")[["class", "area_m2"]]
            class  area_m2
    0    open_pit    200.0
    1  vegetation    100.0
    """
    import geopandas as gpd
    import rasterio.features
    from shapely.geometry import shape

    p, s = _checked(pred, schema)
    site = _site(pred, None)
    names = dict(zip(s.ids, s.names, strict=True))
    mining = {c.id: c.is_mining for c in s}
    if np.ndim(pixel_area(p)) != 0:
        raise StatsError("polygons are written for projected grids; reproject geographic ones")
    transform = p.rio.transform(recalc=True)
    rows = []
    for when in p.time.values:
        ids = np.asarray(p.sel(time=when).values).astype("uint8")
        for geom, value in rasterio.features.shapes(
            ids, mask=ids != s.nodata, connectivity=4, transform=transform
        ):
            v = int(value)
            rows.append(
                {
                    "site_id": site,
                    "time": when,
                    "class": names.get(v, str(v)),
                    "class_id": v,
                    "is_mining": mining.get(v, False),
                    "geometry": shape(geom),
                }
            )
    frame = gpd.GeoDataFrame(
        rows or None,
        columns=["site_id", "time", "class", "class_id", "is_mining", "geometry"],
        geometry="geometry",
        crs=p.rio.crs,
    )
    frame.insert(5, f"area_{units}", frame.geometry.area / _check_units(units))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_file(path, driver="GPKG", layer="classes", engine="pyogrio")
    return frame
