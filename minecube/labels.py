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
from minecube.errors import MinecubeError, find_stack_level

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr

__all__ = ["LabelError", "MissingLabelsWarning", "from_raster", "rasterize", "read_mapping"]


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


def _class_ids(values, schema: ClassSchema, where: str):
    """The class id of each polygon from a column of names or ids (``where``: the column's
    name, or the parameter the values came from, such as ``"fill="``)."""
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
        what = where if where.endswith("=") else f"column {where!r}"
        raise LabelError(
            f"{what} holds classes {bad} that are not in the class schema {known}; "
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
    return rasterio.features.rasterize(shapes, transform=transform, out=out)  # burnt into out


def rasterize(
    labels,
    cube: xr.Dataset | xr.DataArray,
    *,
    column: str = "class",
    time_column: str | None = None,
    schema: ClassSchema | None = None,
    fill: str | None = None,
    mapping=None,
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
        Class schema of the labels; default :data:`DEFAULT_CLASSES`, or with ``mapping`` the
        classes it names (as :func:`from_raster`).
    mapping
        Code → class name (a dict or a CSV file, :func:`read_mapping`) for a ``column`` of a
        published scheme's codes; polygons of a code mapped to an empty name are left out,
        and codes the table lacks are refused by name.
    fill
        A class of ``schema`` for the pixels under no polygon (``"background"`` for a mask of
        one class: everything else is background); default they stay ``nodata``, unlabelled
        (partial labels: only the labelled pixels count in training and scores).

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
    table = None if mapping is None else read_mapping(mapping)
    schema = _schema_for(table, schema)
    if table is not None:
        frame = _mapped(frame, column, table)
    ids = _class_ids(frame[column], schema, column)
    empty = schema.nodata if fill is None else int(_class_ids([fill], schema, "fill=")[0])
    shape = (cube.sizes["y"], cube.sizes["x"])
    transform = cube.rio.transform(recalc=True)
    coords = {"y": cube.y, "x": cube.x}
    attrs = {"long_name": "class id", **schema.cf_attrs()}
    if time_column is None:
        data = _burn(frame, ids, shape, transform, empty)
        out = xr.DataArray(data, dims=("y", "x"), coords=coords, name="label", attrs=attrs)
    else:
        if "time" not in cube.dims:
            raise LabelError("time_column= needs a cube with a time dimension")
        label_years = _years(frame[time_column], time_column)
        years = cube.time.dt.year.values
        layers = {y: _burn(frame[label_years == y], ids[label_years == y], shape, transform,
                           empty if np.any(label_years == y) else schema.nodata)
                  for y in np.unique(years)}  # fmt: skip
        missing = sorted(int(y) for y in np.unique(years) if not np.any(label_years == y))
        if missing:
            warnings.warn(
                f"no label polygons for the years {missing}; those periods stay unlabelled "
                f"(labels cover {sorted(set(label_years.tolist()))})",
                MissingLabelsWarning,
                stacklevel=find_stack_level(),
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


def _schema_for(table: dict[int, str] | None, schema: ClassSchema | None) -> ClassSchema:
    """The schema given, else the classes a mapping names (default ids), else the default."""
    if schema is not None:
        return schema
    if table is None:
        return DEFAULT_CLASSES
    names = [n for n in dict.fromkeys(table.values()) if n]
    try:
        return DEFAULT_CLASSES.subset(names)
    except KeyError as e:
        raise LabelError(
            f"the mapping names a class minecube does not know ({e.args[0]}); pass schema= "
            "with the mapping's classes (minecube.classes.read_schema)"
        ) from None


def _mapped(frame, column: str, table: dict[int, str]):
    """The polygons with ``column`` mapped from codes to class names; unlabelled ones out."""
    import pandas as pd

    codes = pd.to_numeric(frame[column], errors="coerce")
    unknown = frame[column][codes.isna() | ~codes.isin(list(table))]
    if len(unknown):
        counts = unknown.astype(str).value_counts()
        raise LabelError(
            f"column {column!r} holds codes the mapping lacks: "
            + ", ".join(f"{c} ({n} polygons)" for c, n in counts.items())
            + "; map each to a class, or to no label (an empty class in the mapping)"
        )
    frame = frame.assign(**{column: codes.astype(int).map(table)})
    return frame[frame[column] != ""]


def read_mapping(source) -> dict[int, str]:
    """A table from a published scheme's codes to class names: a mapping, or a CSV file with
    ``code`` and ``class`` columns (a ``name`` or ``label`` column is allowed for ``class``).

    An empty ``class`` maps the code to no label (like ``ignore=``).

    >>> from pathlib import Path
    >>> _ = Path("/tmp/worldcover.csv").write_text("code,class\\n60,bare_land\\n80,water\\n0,\\n")
    >>> read_mapping("/tmp/worldcover.csv")
    {60: 'bare_land', 80: 'water', 0: ''}
    """
    import pandas as pd

    if isinstance(source, dict):
        return {int(k): ("" if v is None else str(v)) for k, v in source.items()}
    if not isinstance(source, str | os.PathLike) or not os.path.exists(source):
        raise FileNotFoundError(f"class mapping {source!r} is neither a dict nor a CSV file")
    table = pd.read_csv(source, dtype=str, keep_default_na=False)
    name = next((c for c in ("class", "name", "label") if c in table.columns), None)
    if "code" not in table.columns or name is None:
        raise LabelError(
            f"class mapping {str(source)!r} needs a 'code' and a 'class' column; it has "
            f"{list(table.columns)}"
        )
    try:
        return {int(float(c)): str(v).strip() for c, v in zip(table.code, table[name], strict=True)}
    except ValueError as e:
        raise LabelError(f"class mapping {str(source)!r}: a code is not a number ({e})") from None


def from_raster(
    raster,
    cube: xr.Dataset | xr.DataArray,
    *,
    mapping=None,
    schema: ClassSchema | None = None,
    ignore: int | list[int] | None = None,
) -> xr.DataArray:
    """A class raster (a mask, a published land-cover map) on a cube's grid, as labels.

    Codes are mapped to classes on the raster's own grid, then reprojected onto the cube's by
    nearest neighbour, so no code is ever blended with another.

    Parameters
    ----------
    raster
        A GeoTIFF path, or a DataArray with a CRS (rioxarray), of integer codes.
    cube
        The cube (or any DataArray) whose grid and CRS to use.
    mapping
        Code → class name, as a dict (``{1: "tailings", 0: "background"}``) or a CSV file
        (:func:`read_mapping`); an empty name means *no label*. Default: the raster holds
        ``schema``'s class ids.
    schema
        The labels' classes. Default with a mapping: the classes it names, with their default
        ids and colours (:meth:`ClassSchema.subset`; ``background`` and ``other`` become
        :data:`minecube.classes.BACKGROUND`); without: :data:`DEFAULT_CLASSES`.
    ignore
        Codes that mean *no label* (clouds, "unclassified"); the raster's own nodata is never
        a label either. Pixels outside the raster are unlabelled.

    Returns
    -------
    xarray.DataArray
        ``label``: uint8 class ids (y, x) on the cube's grid with CF ``flag_values``/
        ``flag_meanings``; unlabelled pixels hold ``schema.nodata`` and count nowhere
        (``attrs["labelled_fraction"]`` says how many are labelled).

    Raises
    ------
    LabelError
        A code in the raster is neither mapped nor ignored (named, with its pixel count), a
        mapped class is not in the schema, or the raster has no CRS.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> grid = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"),
    ...     coords={"y": [15.0, 5.0], "x": [5.0, 15.0, 25.0]}).rio.write_crs("EPSG:32633")
    >>> mask = xr.DataArray(np.array([[0, 1, 1], [0, 0, 9]], "uint8"), dims=("y", "x"),
    ...     coords=grid.coords).rio.write_crs("EPSG:32633")
    >>> labels = from_raster(mask, grid, mapping={1: "tailings", 0: "background"}, ignore=9)
    >>> labels.values, labels.attrs["flag_meanings"]
    (array([[11,  3,  3],
           [11, 11,  0]], dtype=uint8), 'tailings background')
    """
    import rioxarray
    import xarray as xr
    from rasterio.enums import Resampling

    if isinstance(raster, str | os.PathLike):
        if not os.path.exists(raster):
            raise FileNotFoundError(f"label raster {str(raster)!r} does not exist")
        raster = rioxarray.open_rasterio(raster, masked=False).squeeze("band", drop=True)
    if not isinstance(raster, xr.DataArray) or raster.ndim != 2:
        raise TypeError("raster must be a 2-D DataArray (y, x) with a CRS, or a GeoTIFF path")
    if raster.rio.crs is None or cube.rio.crs is None:
        raise LabelError("the label raster and the cube both need a CRS (rio.write_crs)")
    table = None if mapping is None else read_mapping(mapping)
    schema = _schema_for(table, schema)
    skip = {*np.atleast_1d(ignore if ignore is not None else []).astype(int).tolist(),
            *schema.ignore}  # fmt: skip
    if table is None:
        table = {c.id: c.name for c in schema}
        skip.add(schema.nodata)
    nodata = raster.rio.nodata
    if nodata is not None and nodata == nodata and int(nodata) not in table:  # a mapping wins
        skip.add(int(nodata))
    codes = np.asarray(raster.values)
    known = {c.name: c.id for c in schema}
    unknown_classes = sorted({n for n in table.values() if n and n not in known})
    if unknown_classes:
        raise LabelError(
            f"the mapping names classes {unknown_classes} that are not in the schema "
            f"({schema.describe()}); pass schema= with them, or map those codes to other classes"
        )
    present, counts = np.unique(codes, return_counts=True)
    unmapped = {int(c): int(n) for c, n in zip(present, counts, strict=True)
                if int(c) not in table and int(c) not in skip}  # fmt: skip
    if unmapped:
        listed = ", ".join(f"{c} ({n} px)" for c, n in unmapped.items())
        raise LabelError(
            f"the label raster holds codes that are neither mapped nor ignored: {listed}. Map "
            "each to a class (mapping=), or to no label (ignore=[…] or an empty class in the "
            "mapping)"
        )
    lut = np.full(max(int(present.max()) + 1, 256), schema.nodata, dtype=np.uint8)
    for code, name in table.items():
        if name and 0 <= code < len(lut) and code not in skip:
            lut[code] = known[name]
    ids = raster.copy(data=lut[np.clip(codes.astype(np.int64), 0, len(lut) - 1)])
    ids = ids.rio.write_nodata(schema.nodata)
    grid = cube if isinstance(cube, xr.DataArray) else cube[next(iter(cube.data_vars))]
    grid = grid.isel({d: 0 for d in grid.dims if d not in ("y", "x")})
    on_grid = ids.rio.reproject_match(grid, resampling=Resampling.nearest, nodata=schema.nodata)
    values = on_grid.values.astype(np.uint8)  # on the grid's own coordinates, below
    labelled = float((values != schema.nodata).mean())
    attrs = {"long_name": "class id", **schema.cf_attrs(), "labelled_fraction": labelled}
    out = xr.DataArray(values, dims=("y", "x"), coords={"y": grid.y, "x": grid.x},
                       name="label", attrs=attrs)  # fmt: skip
    return out.rio.write_crs(cube.rio.crs).rio.write_nodata(schema.nodata, encoded=True)
