"""Label polygons → class-id rasters on a cube's own grid.

Labels come as polygons (GeoPackage, GeoJSON, or a GeoDataFrame) with a class column holding
class names or ids of a :class:`~minecube.classes.ClassSchema`, in any CRS. They are burnt onto
the cube's grid in the cube's CRS, pixel-centre rule, so that every label pixel sits under
exactly one cube pixel.

Overlaps: polygons are burnt from the largest to the smallest, so where two polygons overlap the
**smaller one wins** (a pond inside a tailings facility keeps its own class); polygons of equal
area are burnt in class-id order, the higher id winning. Pixels under no polygon get the
schema's ``nodata`` value and are ignored in training and evaluation.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from minecube.classes import DEFAULT_CLASSES, ClassSchema
from minecube.errors import MinecubeError

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr

__all__ = ["LabelError", "MissingLabelsWarning", "rasterize"]


class LabelError(MinecubeError, ValueError):
    """Label polygons that cannot be put on the cube's grid."""


class MissingLabelsWarning(UserWarning):
    """Some cube periods have no label polygons and are left unlabelled."""


def _read(labels) -> gpd.GeoDataFrame:
    import geopandas as gpd

    if isinstance(labels, gpd.GeoDataFrame):
        return labels
    if isinstance(labels, str | os.PathLike):
        if not os.path.exists(labels):
            raise FileNotFoundError(f"label file {str(labels)!r} does not exist")
        return gpd.read_file(labels, engine="pyogrio")
    raise TypeError(f"labels must be a GeoDataFrame or a file path, got {type(labels).__name__}")


def _class_ids(values, schema: ClassSchema, column: str):
    """The class id of each polygon from a column of names or ids."""
    import pandas as pd

    values = pd.Series(values)
    if pd.api.types.is_numeric_dtype(values):
        ids = values.astype(int)
        bad = sorted(set(ids) - set(schema.ids))
        known = schema.ids
    else:
        lookup = {c.name: c.id for c in schema}
        bad = sorted(set(values) - set(lookup))
        ids = values.map(lookup)
        known = schema.names
    if bad:
        raise LabelError(
            f"column {column!r} holds classes {bad} that are not in the class schema {known}; "
            "pass schema= with a schema that has them (minecube.classes.read_schema)"
        )
    return ids.to_numpy(dtype=np.uint8)


def _years(values, column: str) -> np.ndarray:
    """Years of a column of years, dates or timestamps."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy()
    try:
        return pd.to_datetime(values).dt.year.to_numpy()
    except (ValueError, TypeError) as e:
        raise LabelError(
            f"column {column!r} holds neither years nor dates (e.g. {values.iloc[0]!r})"
        ) from e


def _burn(frame, ids, shape, transform, nodata: int) -> np.ndarray:
    import rasterio.features

    out = np.full(shape, nodata, dtype=np.uint8)
    if len(frame) == 0:
        return out
    order = np.lexsort((ids, -frame.geometry.area.to_numpy()))  # largest first, then by id
    shapes = ((frame.geometry.iloc[i], int(ids[i])) for i in order)
    return rasterio.features.rasterize(
        shapes, out_shape=shape, transform=transform, fill=nodata, dtype="uint8", out=out
    )


def rasterize(
    labels,
    cube: xr.Dataset | xr.DataArray,
    *,
    column: str = "class",
    time_column: str | None = None,
    schema: ClassSchema = DEFAULT_CLASSES,
) -> xr.DataArray:
    """Burn label polygons onto a cube's grid.

    Parameters
    ----------
    labels
        A GeoDataFrame, or a GeoPackage / GeoJSON path, with a geometry CRS.
    cube
        The cube (or any DataArray) whose ``y``/``x`` grid and ``spatial_ref`` CRS to use.
    column
        Column with class names or class ids of ``schema``.
    time_column
        Column with the year (or a date in the year) each polygon describes. When given, the
        result has the cube's ``time`` axis and each period gets the polygons of its year;
        periods without polygons stay ``nodata`` (with a :class:`MissingLabelsWarning`).
        When ``None``, all polygons are burnt into one (y, x) raster.
    schema
        Class schema of the labels.

    Returns
    -------
    xarray.DataArray
        ``label``: uint8 class ids, (time, y, x) or (y, x), on the cube's coordinates, with the
        cube's ``spatial_ref`` and CF ``flag_values``/``flag_meanings``. Overlaps: the smaller
        polygon wins (see the module notes).

    Examples
    --------
    >>> import numpy as np, geopandas as gpd, rioxarray, xarray as xr
    >>> from shapely.geometry import box
    >>> grid = xr.DataArray(np.zeros((4, 4)), dims=("y", "x"),
    ...                     coords={"y": [35.0, 25, 15, 5], "x": [5.0, 15, 25, 35]})
    >>> grid = grid.rio.write_crs("EPSG:32756")
    >>> polygons = gpd.GeoDataFrame({"class": ["vegetation", "open_pit"]},
    ...     geometry=[box(0, 0, 40, 40), box(10, 10, 30, 30)], crs="EPSG:32756")
    >>> rasterize(polygons, grid).values
    array([[6, 6, 6, 6],
           [6, 1, 1, 6],
           [6, 1, 1, 6],
           [6, 6, 6, 6]], dtype=uint8)
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    frame = _read(labels)
    crs = cube.rio.crs
    if crs is None:
        raise LabelError(
            "the cube has no CRS; write one with cube.rio.write_crs(...) or build it with "
            "minecube.cube.build"
        )
    if frame.crs is None:
        raise LabelError(
            "the label polygons have no CRS; set one with frame.set_crs(...) before rasterizing"
        )
    for needed in filter(None, (column, time_column)):
        if needed not in frame.columns:
            raise LabelError(
                f"the labels have no column {needed!r}; columns are {list(frame.columns)}"
            )
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(crs)
    ids = _class_ids(frame[column], schema, column)
    shape = (cube.sizes["y"], cube.sizes["x"])
    transform = cube.rio.transform(recalc=True)
    coords = {"y": cube.y, "x": cube.x}
    attrs = {"long_name": "class id", **schema.cf_attrs()}
    if time_column is None:
        data = _burn(frame, ids, shape, transform, schema.nodata)
        out = xr.DataArray(data, dims=("y", "x"), coords=coords, name="label", attrs=attrs)
    else:
        if "time" not in cube.dims:
            raise LabelError("time_column= needs a cube with a time dimension")
        label_years = _years(frame[time_column], time_column)
        years = cube.time.dt.year.values
        layers = {y: _burn(frame[label_years == y], ids[label_years == y], shape, transform,
                           schema.nodata) for y in np.unique(years)}  # fmt: skip
        missing = sorted(int(y) for y in np.unique(years) if not np.any(label_years == y))
        if missing:
            warnings.warn(
                f"no label polygons for the years {missing}; those periods stay unlabelled "
                f"(labels cover {sorted(set(label_years.tolist()))})",
                MissingLabelsWarning,
                stacklevel=2,
            )
        data = np.stack([layers[y] for y in years])
        out = xr.DataArray(
            data,
            dims=("time", "y", "x"),
            coords={"time": cube.time, **coords},
            name="label",
            attrs=attrs,
        )
    return out.rio.write_crs(crs).rio.write_nodata(schema.nodata, encoded=True)
