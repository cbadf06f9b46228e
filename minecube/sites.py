"""Mine sites: a validated table of where to look, what is mined there, and in what climate."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from minecube.errors import MinecubeError, find_stack_level

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

__all__ = [
    "CLIMATES",
    "MAX_BUFFER_M",
    "MAX_GRID_PIXELS",
    "SITE_ID",
    "SiteGridWarning",
    "SiteTableError",
    "check_grid",
    "check_site_id",
    "describe_sites",
    "from_items",
    "read_sites",
    "site_geometry",
    "site_zone",
    "suggest_site_id",
    "utm_epsg",
]

REQUIRED = ("site_id", "name", "commodity", "climate")
MAX_BUFFER_M = 50_000.0
"""Largest half-width (metres) of the square drawn around a point site."""
WARN_GRID_PIXELS = 25_000_000
"""Grids larger than this (5000 × 5000 px, 50 km square at 10 m) are built with a warning."""
MAX_GRID_PIXELS = 400_000_000
"""Grids larger than this (20 000 × 20 000 px) are refused: one period of four float32 bands
would need 6.4 GB. Split such a site into several."""
MIN_GRID_FILL = 0.05
"""A site of several parts covering less of its grid than this (far-apart parts) is built
with a warning."""
MIN_WARN_PIXELS = 250_000
"""Grids up to this size (500 × 500 px) are never warned about for being mostly empty."""
CLIMATES = ("tropical", "arid", "temperate", "continental", "polar")
"""Köppen climate groups (A, B, C, D, E)."""
UNKNOWN = "unknown"
"""The commodity or climate of a site nobody has described yet (:func:`from_items`); such
sites form their own group in summaries."""


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone (north or south) that contains a point.

    >>> utm_epsg(118.6, -22.7), utm_epsg(-81.2, 46.6)
    (32750, 32617)
    """
    zone = int((lon + 180) // 6) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


class SiteGridWarning(UserWarning):
    """A site's grid is unusually large, mostly empty, or spans two UTM zones."""


def _crosses_antimeridian(geom) -> bool:
    """A lon/lat geometry drawn across ±180° (parts near both edges, or one ring wrapping)."""
    minx, _, maxx, _ = geom.bounds
    return maxx - minx > 180


def _unwrapped(geom):
    """The geometry with western longitudes moved past +180° so it is contiguous."""
    import numpy as np
    import shapely

    return shapely.transform(geom, lambda xy: np.column_stack([xy[:, 0] % 360, xy[:, 1]]))


def site_zone(geom, *, site_id: str | None = None):
    """The UTM zone (EPSG) for a lon/lat site geometry, and the geometry to project into it
    (unwrapped across the antimeridian where needed).

    The zone is the one that holds most of the site's area, not only its centroid's; a site
    over two zones is warned about (:class:`SiteGridWarning`). A site drawn across the
    antimeridian is unwrapped first, so it gets zone 1 or 60, not the zone of a centroid on the
    other side of the globe.

    >>> from shapely.geometry import box
    >>> site_zone(box(179.6, -16.8, 180.0, -16.7) | box(-180.0, -16.8, -179.999, -16.7))[0]
    32760
    """
    import numpy as np
    import shapely

    label = f"site {site_id!r}" if site_id else "the site"
    if _crosses_antimeridian(geom):
        geom = _unwrapped(geom)
    minx, miny, maxx, maxy = geom.bounds
    first, last = int((minx + 180) // 6), int((maxx + 180 - 1e-9) // 6)
    shares = {}
    for z in range(first, last + 1):
        lon0 = -180 + 6 * z
        part = geom.intersection(shapely.box(lon0, miny - 1, lon0 + 6, maxy + 1))
        if not part.is_empty:
            lat = part.centroid.y
            shares[z % 60 + 1] = part.area * np.cos(np.radians(lat))
    total = sum(shares.values()) or 1.0
    zone = max(shares, key=shares.get)
    if len(shares) > 1 and min(shares.values()) / total > 0.01:
        split = ", ".join(f"{z}: {a / total:.0%}" for z, a in sorted(shares.items()))
        warnings.warn(
            f"{label} spans UTM zones ({split} of its area); using zone {zone}, which holds "
            "most of it; scenes of the other zone are reprojected onto that grid",
            SiteGridWarning,
            stacklevel=find_stack_level(),
        )
    epsg = (32600 if geom.centroid.y >= 0 else 32700) + zone
    return epsg, geom


def check_grid(shape: tuple[int, int], site_pixels: float, *, site_id=None, parts: int = 1) -> None:
    """Warn about a grid much larger than its site, refuse one over :data:`MAX_GRID_PIXELS`.

    A grid mostly empty is worth a warning only when the site has several parts (they lie far
    apart) and the grid is larger than :data:`MIN_WARN_PIXELS`: a small or thin single polygon
    costs nothing."""
    pixels = shape[0] * shape[1]
    label = f"site {site_id!r}" if site_id else "the site"
    memory = pixels * 4 * 4 / 1e9  # four float32 bands, one period
    fill = site_pixels / max(pixels, 1)
    where = f"its grid is {shape[0]} × {shape[1]} = {pixels / 1e6:.1f} M px"
    if pixels > MAX_GRID_PIXELS:
        raise SiteTableError(
            f"{label} is too large: {where} ({memory:.1f} GB per period for four bands), over "
            f"the limit of {MAX_GRID_PIXELS / 1e6:.0f} M px; split it into several sites or "
            "build at a coarser resolution="
        )
    apart = parts > 1 and fill < MIN_GRID_FILL and pixels > MIN_WARN_PIXELS
    if pixels > WARN_GRID_PIXELS or apart:
        warnings.warn(
            f"{label}: {where} ({memory:.2f} GB per period for four bands), of which the site "
            f"covers {fill:.2%}"
            + (
                f"; its {parts} parts lie far apart: give each part its own site id"
                if apart
                else ""
            ),
            SiteGridWarning,
            stacklevel=find_stack_level(),
        )


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


SITE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""The site id rule: letters, digits, ``-``, ``_`` and ``.``, starting with a letter or digit,
at most 128 characters. Ids name Zarr groups, files and HTML anchors, so nothing else is safe."""


def suggest_site_id(value: object) -> str:
    """A site id that follows :data:`SITE_ID`, made from ``value`` (``"Mt Whaleback #2"`` →
    ``"Mt-Whaleback-2"``)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-._")
    return (text or "site")[:128]


_RESERVED = frozenset({"zarr.json"})
"""Names a Zarr group or array keeps for itself: never a site's group."""


def check_site_id(value: object, *, what: str = "site id") -> str:
    """Return ``value`` if it is a string that follows :data:`SITE_ID`, else raise
    :class:`SiteTableError` naming it and a suggested id.

    Examples
    --------
    >>> check_site_id("hunter-coal")
    'hunter-coal'
    """
    if isinstance(value, str) and value.lower() in _RESERVED:
        raise SiteTableError(
            f"{what} {value!r} is not allowed: Zarr uses that name for its own metadata; try "
            f"{'site-' + value.replace('.', '-')!r}"
        )
    if not isinstance(value, str) or not SITE_ID.fullmatch(value):
        raise SiteTableError(
            f"{what} {value!r} is not allowed: ids use letters, digits, '-', '_' and '.', start "
            f"with a letter or digit, and are at most 128 characters; try "
            f"{suggest_site_id(value)!r}"
        )
    return value


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
            # ids and names are text as written: "007", "NA" and "nan" stay themselves
            numbers = {c: ["", "nan", "NaN", "NA"] for c in ("lon", "lat", "buffer_m")}
            table = pd.read_csv(path, dtype={"site_id": str}, keep_default_na=False,
                                na_values=numbers)  # fmt: skip
            missing = [c for c in ("lon", "lat") if c not in table.columns]
            if missing:
                raise SiteTableError(
                    f"CSV site table {where!r} needs 'lon' and 'lat' columns (WGS84 degrees); "
                    f"missing {missing}, found {list(table.columns)}"
                )
            points = gpd.points_from_xy(table["lon"], table["lat"])
            points[(table["lon"].isna() | table["lat"].isna()).to_numpy()] = None  # not NaN, NaN
            frame = gpd.GeoDataFrame(table.drop(columns=["lon", "lat"]), geometry=points, crs=4326)
        else:
            frame = gpd.read_file(path, engine="pyogrio")
            if "site_id" in frame.columns and frame["site_id"].dtype.kind in "iuf":
                raise SiteTableError(
                    f"site table {where} stores site_id as numbers ({frame['site_id'].dtype}), "
                    "which loses leading zeros (007 → 7); store the column as text"
                )
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
    _check_lonlat(frame, where)
    _validate_rows(frame, where)
    frame["geometry"] = [_buffered(row, buffer_m, where) for row in frame.itertuples()]
    frame = frame.set_geometry("geometry")
    extra = [c for c in frame.columns if c not in (*REQUIRED, "geometry")]
    return frame[[*REQUIRED, "geometry", *extra]]


def from_items(
    items,
    *,
    commodity: str | Mapping[str, str] = UNKNOWN,
    climate: str | Mapping[str, str] = UNKNOWN,
) -> gpd.GeoDataFrame:
    """A site table with one site per item: its footprint, named by the item's id.

    For labelled patches (an Earth Engine export, a benchmark's tiles) each patch is a site:
    build each site's cube from its own item, and split overlapping patches with
    ``split_sites(..., buffer_m=0)`` so neighbours never land on both sides of a split.

    Parameters
    ----------
    items
        STAC items (:func:`minecube.stac.items_from_files`, a search) with footprints.
    commodity, climate
        One value for every site, or a mapping of item id to value (a Köppen group of
        :data:`CLIMATES`); :data:`UNKNOWN` where not given.

    Examples
    --------
    >>> import datetime, pystac
    >>> from shapely.geometry import box, mapping
    >>> patch = box(27.80, -26.20, 27.83, -26.17)
    >>> item = pystac.Item("patch-007", mapping(patch), list(patch.bounds),
    ...                    datetime.datetime(2023, 6, 1), {})
    >>> from_items([item], commodity="gold")[["site_id", "commodity", "climate"]].to_dict("records")
    [{'site_id': 'patch-007', 'commodity': 'gold', 'climate': 'unknown'}]
    """
    import geopandas as gpd
    import shapely.geometry

    def value(v, item_id):
        return v.get(item_id, UNKNOWN) if isinstance(v, Mapping) else v

    rows = [
        {
            "site_id": check_site_id(item.id, what="item id"),
            "name": item.id,
            "commodity": value(commodity, item.id),
            "climate": value(climate, item.id),
            "geometry": shapely.geometry.shape(item.geometry),
        }
        for item in items
    ]
    if not rows:
        raise SiteTableError("no items: from_items needs at least one item with a footprint")
    return read_sites(gpd.GeoDataFrame(rows, crs=4326))


def describe_sites(sites: gpd.GeoDataFrame) -> pd.DataFrame:
    """Each site's id, commodity, climate, UTM zone (the one its cubes are built in) and area.

    Examples
    --------
    >>> import geopandas as gpd
    >>> from shapely.geometry import box
    >>> table = gpd.GeoDataFrame({"site_id": ["pit"], "commodity": ["gold"],
    ...     "climate": ["arid"]}, geometry=[box(118.60, -22.72, 118.62, -22.70)], crs=4326)
    >>> describe_sites(table).round(2).to_dict("records")
    [{'site_id': 'pit', 'commodity': 'gold', 'climate': 'arid', 'epsg': 32750, 'area_km2': 4.55}]
    """
    import pandas as pd

    rows = []
    for row in sites.itertuples():
        epsg, geometry = site_zone(row.geometry, site_id=row.site_id)
        area = _area_m2(geometry, epsg)
        rows.append({"site_id": row.site_id, "commodity": row.commodity,
                     "climate": row.climate, "epsg": epsg, "area_km2": area / 1e6})  # fmt: skip
    return pd.DataFrame(rows)


def _area_m2(geometry, epsg: int) -> float:
    """Area in m² of a lon/lat geometry projected to ``epsg``."""
    import geopandas as gpd

    return float(gpd.GeoSeries([geometry], crs=4326).to_crs(epsg).area.iloc[0])


def _validate_rows(frame, where: str) -> None:
    for i, sid in frame["site_id"].items():
        try:
            check_site_id(sid)
        except SiteTableError as e:
            raise SiteTableError(f"row {i} of {where}: {e}") from None
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
        if str(row.climate).lower() not in (*CLIMATES, UNKNOWN):
            raise SiteTableError(
                f"row {i} ({row.site_id!r}) of {where} has climate {row.climate!r}; "
                f"expected one of {list(CLIMATES)} (Köppen groups) or {UNKNOWN!r}"
            )
    frame["climate"] = frame["climate"].str.lower()


def _check_lonlat(frame, where: str) -> None:
    """Coordinates must be lon/lat degrees: metres without a CRS and swapped columns are errors."""
    for i, geom in enumerate(frame.geometry):
        if geom is None or geom.is_empty:
            continue
        minx, miny, maxx, maxy = geom.bounds
        if minx >= -180 and maxx <= 180 and miny >= -90 and maxy <= 90:
            continue
        site = frame["site_id"].iloc[i]
        x, y = geom.representative_point().coords[0] if geom.is_valid else (minx, miny)
        if abs(y) > 90 and abs(x) <= 90 and abs(y) <= 180:
            raise SiteTableError(
                f"row {i} ({site!r}) of {where} has lat={y:g}, which is not a latitude, and "
                f"lon={x:g}: longitude and latitude look swapped; swap the 'lon' and 'lat' "
                "columns (or the x/y order of the geometry)"
            )
        if 100_000 <= abs(x) <= 900_000 and abs(y) <= 10_000_000:
            guess = "UTM metres (EPSG:326xx north / 327xx south)"
        elif max(abs(x), abs(y)) <= 20_037_509:
            guess = "projected metres, e.g. Web Mercator (EPSG:3857) or a UTM zone"
        else:
            guess = "a projected CRS"
        raise SiteTableError(
            f"row {i} ({site!r}) of {where} has coordinates ({x:.6g}, {y:.6g}) outside the "
            f"lon/lat ranges (±180, ±90): they look like {guess}. Declare the table's CRS "
            "(a GeoJSON without a 'crs' member is read as lon/lat; use GeoPackage, or "
            "frame.set_crs(EPSG) before read_sites) or reproject it to EPSG:4326"
        )


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
    if half > MAX_BUFFER_M:
        raise SiteTableError(
            f"row {row.Index} ({row.site_id!r}) of {where} has buffer_m={half:g}, a square "
            f"{2 * half / 1000:g} km wide; the limit is {MAX_BUFFER_M:g} m. buffer_m is the "
            "half-width in metres (a large mine is a few km across); draw larger areas as polygons"
        )
    import shapely
    import shapely.affinity
    from pyproj import Transformer

    epsg = utm_epsg(geom.x, geom.y)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True).transform
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True).transform
    x, y = to_utm(geom.x, geom.y)
    square = shapely.box(x - half, y - half, x + half, y + half).segmentize(half / 10)
    lonlat = shapely.transform(square, to_lonlat, interleaved=False)
    if not _crosses_antimeridian(lonlat):
        return lonlat
    # split at 180° into two parts, as RFC 7946 asks of a polygon across the antimeridian
    unwrapped = _unwrapped(lonlat)
    east = unwrapped.intersection(shapely.box(0, -90, 180, 90))
    west = shapely.affinity.translate(
        unwrapped.intersection(shapely.box(180, -90, 360, 90)), xoff=-360
    )
    return shapely.MultiPolygon([east, west])
