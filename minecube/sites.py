"""Mine sites: a validated table of where to look, what is mined there, and in what climate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from minecube.errors import MinecubeError

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["CLIMATES", "SiteTableError", "read_sites", "site_geometry", "utm_epsg"]

REQUIRED = ("site_id", "name", "commodity", "climate")
CLIMATES = ("tropical", "arid", "temperate", "continental", "polar")
"""Köppen climate groups (A, B, C, D, E)."""


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone (north or south) that contains a point.

    >>> utm_epsg(118.6, -22.7), utm_epsg(-81.2, 46.6)
    (32750, 32617)
    """
    zone = int((lon + 180) // 6) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def site_geometry(site):
    """The lon/lat geometry of a site row, a one-row GeoDataFrame or a shapely geometry.

    >>> from shapely.geometry import box
    >>> site_geometry(box(0, 0, 1, 1)).bounds
    (0.0, 0.0, 1.0, 1.0)
    """
    import geopandas as gpd

    if isinstance(site, gpd.GeoDataFrame):
        if len(site) != 1:
            raise ValueError(f"give one site, not a table of {len(site)}; loop over the table")
        site = site.iloc[0]
    geom = getattr(site, "geometry", site)
    if not hasattr(geom, "__geo_interface__"):
        raise TypeError(f"site must be a site row or a shapely geometry, got {type(site)!r}")
    return geom


class SiteTableError(MinecubeError, ValueError):
    """A site table is missing columns or has a bad row."""


def read_sites(
    source: str | os.PathLike | gpd.GeoDataFrame,
    *,
    buffer_m: float | None = None,
) -> gpd.GeoDataFrame:
    """Read and validate a site table.

    Parameters
    ----------
    source
        A GeoJSON or GeoPackage file of site polygons (or points), a CSV file with ``lon`` and
        ``lat`` columns (WGS84), or a GeoDataFrame.
    buffer_m
        Half-width in metres of the square drawn around point sites. CSV tables may carry it per
        row as ``buffer_m`` instead.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per site, in EPSG:4326, with ``site_id``, ``name``, ``commodity``, ``climate``
        and ``geometry`` first and any other columns kept after them.

    Raises
    ------
    SiteTableError
        A required column is missing, a site id repeats, a geometry is empty or invalid, a climate
        is not a Köppen group, or a point site has no buffer. The message names the row.

    Examples
    --------
    >>> from minecube.sites import read_sites
    >>> from minecube.demo import generate
    >>> world = generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                  dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> sites = read_sites(world.path / "sites.csv")
    >>> sites[["site_id", "commodity", "climate"]].to_dict("records")
    [{'site_id': 'hunter-coal', 'commodity': 'coal', 'climate': 'temperate'}]
    >>> round(float(sites.to_crs(32756).area.iloc[0]) / 1e6, 2)  # km²
    0.92
    """
    import geopandas as gpd
    import pandas as pd

    if isinstance(source, gpd.GeoDataFrame):
        frame, where = source.copy(), "the GeoDataFrame"
    else:
        path = Path(source)
        where = str(path)
        if not path.exists():
            raise FileNotFoundError(f"site table {where!r} does not exist")
        if path.suffix.lower() in (".csv", ".txt"):
            table = pd.read_csv(path)
            missing = [c for c in ("lon", "lat") if c not in table.columns]
            if missing:
                raise SiteTableError(
                    f"CSV site table {where!r} needs 'lon' and 'lat' columns (WGS84 degrees); "
                    f"missing {missing}, found {list(table.columns)}"
                )
            frame = gpd.GeoDataFrame(
                table.drop(columns=["lon", "lat"]),
                geometry=gpd.points_from_xy(table["lon"], table["lat"]),
                crs=4326,
            )
        else:
            frame = gpd.read_file(path, engine="pyogrio")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise SiteTableError(
            f"site table {where} lacks the columns {missing}; found {list(frame.columns)}. "
            f"Every site needs {list(REQUIRED)}."
        )
    if frame.crs is None:
        raise SiteTableError(f"site table {where} has no CRS; set one, e.g. frame.set_crs(4326)")
    frame = frame.to_crs(4326).reset_index(drop=True)
    frame["site_id"] = frame["site_id"].astype(str)
    _validate_rows(frame, where)
    frame["geometry"] = [_buffered(row, buffer_m, where) for row in frame.itertuples()]
    frame = frame.set_geometry("geometry")
    extra = [c for c in frame.columns if c not in (*REQUIRED, "geometry")]
    return frame[[*REQUIRED, "geometry", *extra]]


def _validate_rows(frame, where: str) -> None:
    duplicated = frame["site_id"][frame["site_id"].duplicated(keep=False)]
    if len(duplicated):
        rows = {sid: list(duplicated.index[duplicated == sid]) for sid in duplicated.unique()}
        raise SiteTableError(f"site ids repeat in {where}: {rows} (id: rows); make them unique")
    for i, row in frame.iterrows():
        geom = row.geometry
        if geom is None or geom.is_empty:
            raise SiteTableError(f"row {i} ({row.site_id!r}) of {where} has no geometry")
        if not geom.is_valid:
            from shapely.validation import explain_validity

            raise SiteTableError(
                f"row {i} ({row.site_id!r}) of {where} has an invalid geometry: "
                f"{explain_validity(geom)}; repair it (e.g. shapely.make_valid)"
            )
        if str(row.climate).lower() not in CLIMATES:
            raise SiteTableError(
                f"row {i} ({row.site_id!r}) of {where} has climate {row.climate!r}; "
                f"expected one of {list(CLIMATES)} (Köppen groups)"
            )
    frame["climate"] = frame["climate"].str.lower()


def _buffered(row, buffer_m: float | None, where: str):
    """Points become squares of half-width ``buffer_m`` drawn in their local UTM zone."""
    geom = row.geometry
    if geom.geom_type != "Point":
        return geom
    half = getattr(row, "buffer_m", None)
    half = buffer_m if half is None or half != half else half  # NaN → fall back
    if half is None or half <= 0:
        raise SiteTableError(
            f"row {row.Index} ({row.site_id!r}) of {where} is a point; give buffer_m= (metres) "
            "or a buffer_m column to make it an area"
        )
    import shapely
    from pyproj import Transformer

    epsg = utm_epsg(geom.x, geom.y)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True).transform
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True).transform
    x, y = to_utm(geom.x, geom.y)
    square = shapely.box(x - half, y - half, x + half, y + half).segmentize(half / 10)
    return shapely.transform(square, to_lonlat, interleaved=False)
