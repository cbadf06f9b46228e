"""Search a STAC API for a site's scenes, the same way on Earth Search, the Planetary Computer,
pgstac and the demo world. Band assets and their radiometry across catalogues live in
:mod:`minecube.sensors` (``band_assets`` is re-exported here)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from minecube.errors import MinecubeError, find_stack_level
from minecube.sensors import BANDS, BandAsset, band_assets
from minecube.sites import site_geometry

if TYPE_CHECKING:
    import pystac
    import pystac_client

__all__ = [
    "BANDS",
    "BandAsset",
    "NoItemsError",
    "NotCOGWarning",
    "band_assets",
    "item_order",
    "items_from_files",
    "open_catalog",
    "redact",
    "search",
    "search_many",
    "select_items",
]


class NoItemsError(MinecubeError, LookupError):
    """A search matched no items; the message shows the query."""


def open_catalog(
    catalog: str | pystac_client.Client, *, retries: int = 4, timeout: float = 30.0
) -> pystac_client.Client:
    """Open a STAC API, retrying 5xx answers and timeouts with backoff.

    Examples
    --------
    >>> from minecube import demo
    >>> world = demo.generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                       dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> with demo.serve(world) as server:
    ...     client = open_catalog(server.stac_url)
    ...     [c.id for c in client.get_collections()]
    ['sentinel-2-l2a']

    The same call opens ``https://earth-search.aws.element84.com/v1`` or
    ``https://planetarycomputer.microsoft.com/api/stac/v1``.
    """
    import pystac_client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    if isinstance(catalog, pystac_client.Client):
        return catalog
    retry = Retry(
        total=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # POST searches too
    )
    return pystac_client.Client.open(catalog, stac_io=StacApiIO(max_retries=retry), timeout=timeout)


def search(
    site,
    start: str | dt.date,
    end: str | dt.date,
    *,
    catalog: str | pystac_client.Client,
    collection: str = "sentinel-2-l2a",
    max_cloud: float | None = None,
    limit: int = 100,
    cover: float | None = None,
    one_per: str | None = None,
) -> pystac.ItemCollection:
    """Find the scenes over a site between two dates.

    The cloud filter is sent to the server as ``query`` or CQL2 ``filter`` only where the API
    declares that it conforms to it, and is always checked again on the items, so servers that
    ignore it (rustac's in-memory backend) give the same answer as pgstac or Earth Search.

    Parameters
    ----------
    site
        A row of :func:`minecube.sites.read_sites`, a one-row GeoDataFrame, or a shapely
        geometry in lon/lat.
    start, end
        First and last day, inclusive (``"2023-01-01"`` or :class:`datetime.date`).
    catalog
        STAC API URL or an open :class:`pystac_client.Client`.
    collection
        Collection id.
    max_cloud
        Keep items whose ``eo:cloud_cover`` is at most this (percent).
    limit
        Page size asked of the server.
    cover, one_per
        Keep items covering at least this share of the site, and one item per acquisition
        (:func:`select_items`): a site's own patch among its overlapping neighbours.

    Returns
    -------
    pystac.ItemCollection
        Items sorted by time then id; ``extra_fields["minecube:search"]`` records the query.

    Raises
    ------
    NoItemsError
        Nothing matched; the message shows the query.
    ValueError
        The collection does not exist (the message lists those that do), or bad dates.

    Examples
    --------
    >>> from minecube import demo
    >>> from minecube.stac import search
    >>> world = demo.generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                       dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> with demo.serve(world) as server:
    ...     items = search(world.sites.iloc[0], "2023-01-01", "2023-12-31",
    ...                    catalog=server.stac_url)
    >>> len(items), items[0].properties["grid:code"]
    (4, 'MGRS-56HAE')
    """
    import pystac

    client, start_s, end_s, href = _open_search(catalog, start, end, collection)
    geometry = site_geometry(site)
    items, record = _query(client, geometry, start_s, end_s, collection, max_cloud, limit)
    found = len(items)
    items = select_items(items, geometry, cover=cover, one_per=one_per)
    record |= {"catalog": href, "cover": cover, "one_per": one_per}
    if not items:
        raise NoItemsError(
            f"no {collection!r} items intersect the site between {start_s} and {end_s}"
            + (f" with eo:cloud_cover ≤ {max_cloud} %" if max_cloud is not None else "")
            + f" at {record['catalog']}; site bounds (lon/lat) {tuple(geometry.bounds)}"
            + (
                f"; {found} items were found, none covering {cover:.0%} of the site (cover=)"
                if found
                else ""
            )
            + ". Widen the dates, raise max_cloud, lower cover, or check the site's coordinates."
        )
    return pystac.ItemCollection(items, extra_fields={"minecube:search": record})


def _open_search(catalog, start, end, collection: str):
    """What every search starts with: the open API, the first and last day (checked), the
    collection checked to exist, and the catalogue's URL as recorded (no secrets)."""
    client = open_catalog(catalog)
    start_s, end_s = _day(start, "start"), _day(end, "end")
    if start_s > end_s:
        raise ValueError(f"start {start_s} is after end {end_s}; swap them")
    _check_collection(client, collection)
    return client, start_s, end_s, redact(client.self_href or str(catalog))


def _query(client, geometry, start_s: str, end_s: str, collection: str, max_cloud, limit: int):
    """One search (all its pages) of items intersecting ``geometry``: (items sorted by
    :func:`item_order`, the record of the query)."""
    import shapely
    from pystac_client import ConformanceClasses

    params: dict[str, Any] = {
        "collections": [collection],
        "intersects": shapely.geometry.mapping(geometry),
        "datetime": f"{start_s}T00:00:00Z/{end_s}T23:59:59Z",
        "limit": limit,
    }
    server_side = "client"
    if max_cloud is not None:
        if client.conforms_to(ConformanceClasses.QUERY):
            params["query"] = {"eo:cloud_cover": {"lte": max_cloud}}
            server_side = "query"
        elif client.conforms_to(ConformanceClasses.FILTER):
            params["filter"] = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_cloud]}
            server_side = "filter"
    items = list(client.search(**params).items())
    if max_cloud is not None:
        items = [i for i in items if i.properties.get("eo:cloud_cover", 100.0) <= max_cloud]
    items.sort(key=item_order)
    record = {
        "collection": collection,
        "intersects": params["intersects"],
        "datetime": params["datetime"],
        "max_cloud": max_cloud,
        "cloud_filter": server_side,
    }
    return items, record


def search_many(
    sites,
    start: str | dt.date,
    end: str | dt.date,
    *,
    catalog: str | pystac_client.Client,
    collection: str = "sentinel-2-l2a",
    max_cloud: float | None = None,
    limit: int = 100,
    cell: float = 1.0,
    cover: float | None = None,
    one_per: str | None = None,
) -> dict[str, pystac.ItemCollection]:
    """Find the scenes over every site of a table with one search per group of nearby sites.

    Sites whose centres lie within a ``cell`` × ``cell`` degree square (about one Sentinel-2
    tile) are searched together, with the union of their geometries; each site then
    keeps the items whose footprint intersects its own geometry. So the requests grow with the
    area covered, not the number of sites, and every site gets the items :func:`search` would
    give it.

    Parameters
    ----------
    sites
        The site table (:func:`minecube.sites.read_sites`).
    start, end, catalog, collection, max_cloud, limit, cover, one_per
        As for :func:`search`.
    cell
        Side of the square a group of sites fits in, degrees.

    Returns
    -------
    dict of str to pystac.ItemCollection
        Each site's items, in the table's order; a site that no item intersects gets an empty
        collection (where :func:`search` raises :class:`NoItemsError`). Each records its own
        query, as :func:`search` does, with ``grouped_sites``.

    Examples
    --------
    >>> from minecube import demo
    >>> world = demo.generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                       dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> with demo.serve(world) as server:
    ...     found = search_many(world.sites, "2023-01-01", "2023-12-31", catalog=server.stac_url)
    >>> {site: len(items) for site, items in found.items()}
    {'hunter-coal': 4}
    """

    import pystac
    import shapely
    from shapely.ops import unary_union

    client, start_s, end_s, catalog_href = _open_search(catalog, start, end, collection)
    geometries = {row.site_id: site_geometry(row) for row in sites.itertuples()}
    found: dict[str, pystac.ItemCollection] = {}
    for members in _nearby(geometries, cell):
        union = unary_union([geometries[s] for s in members])
        items, query = _query(client, union, start_s, end_s, collection, max_cloud, limit)
        footprints = [shapely.geometry.shape(i.geometry) for i in items]
        for site_id in members:
            geometry = geometries[site_id]
            mine = [i for i, f in zip(items, footprints, strict=True) if f.intersects(geometry)]
            mine = select_items(mine, geometry, cover=cover, one_per=one_per)
            record = query | {
                "catalog": catalog_href,
                "intersects": shapely.geometry.mapping(geometry),
                "grouped_sites": len(members),
                "cover": cover,
                "one_per": one_per,
            }
            found[site_id] = pystac.ItemCollection(mine, extra_fields={"minecube:search": record})
    return {site_id: found[site_id] for site_id in geometries}


def _nearby(geometries: dict, cell: float) -> list[list[str]]:
    """Groups of sites whose centres lie within ``cell`` / 2 degrees (east and north) of their
    group's first site; each site looks only at the groups anchored in the 3 × 3 squares of
    side ``cell`` around it, so grouping the world's mines is linear in their number."""
    import math

    groups: list[list[str]] = []
    anchors: list[tuple[float, float]] = []
    buckets: dict[tuple[int, int], list[int]] = {}
    for site_id, geometry in geometries.items():
        x, y = geometry.centroid.x, geometry.centroid.y
        bx, by = math.floor(x / cell), math.floor(y / cell)
        near = (
            g for dx in (-1, 0, 1) for dy in (-1, 0, 1) for g in buckets.get((bx + dx, by + dy), ())
        )
        for g in near:
            if abs(anchors[g][0] - x) <= cell / 2 and abs(anchors[g][1] - y) <= cell / 2:
                groups[g].append(site_id)
                break
        else:
            buckets.setdefault((bx, by), []).append(len(groups))
            anchors.append((x, y))
            groups.append([site_id])
    return groups


_URL = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<auth>[^/@\s'\"]*@)?(?P<rest>[^\s'\"?#]*)(?P<query>[?#][^\s'\"]*)?"
)


def redact(text: T) -> T:
    """``text`` with the credentials, query strings and secret parameters of every URL removed.

    Tokens (``?token=``, ``subscription-key=``, SAS and presigned signatures) travel in query
    strings and ``user:password@``; minecube stores and prints URLs only through this. A query
    string without a scheme before it (``/search?token=…``) goes too, and a known secret
    parameter (``token=``, ``sig=``, ``password=``, ``X-Amz-Signature=``, …) anywhere in the
    text keeps its name only. A dict, list or tuple (the JSON minecube writes) is redacted in
    every string it holds, keys kept.

    GDAL's ``vrt://`` connection strings keep their ``bands=`` option: it picks the band an
    asset of :func:`items_from_files` reads, and holds no secret.

    Examples
    --------
    >>> redact("GET https://user:pw@example.com/a.tif?sig=abc&se=2026 failed")
    'GET https://example.com/a.tif failed'
    >>> redact("vrt:///data/patch.tif?bands=2&token=x")
    'vrt:///data/patch.tif?bands=2'
    >>> redact("url: /?token=SECRET123, s3://KEY:SECRET@bucket/cubes.zarr")
    'url: /, s3://bucket/cubes.zarr'
    >>> redact({"catalog": "https://a.b/v1?token=x", "n": 3})
    {'catalog': 'https://a.b/v1', 'n': 3}
    """
    if isinstance(text, dict):
        return {k: redact(v) for k, v in text.items()}
    if isinstance(text, list | tuple):
        return type(text)(redact(v) for v in text)
    if not isinstance(text, str):
        return text
    parts, last = [], 0
    for m in _URL.finditer(text):  # URLs with a scheme; between them, bare query strings
        parts += [_QUERY.sub("", text[last : m.start()]), _redacted(m)]
        last = m.end()
    text = "".join([*parts, _QUERY.sub("", text[last:])])
    return _SECRET.sub(lambda m: f"{m['name']}=<redacted>", text)


T = TypeVar("T")
_QUERY = re.compile(r"\?(?=[^\s'\"?,)]*=)[^\s'\",)]*")
"""A query string after a path without a scheme (``/search?token=…``)."""
_SECRET = re.compile(
    r"(?i)(?<![\w-])(?P<name>(?:access_|auth_|api_?|session_|security_|refresh_|id_)?token|"
    r"api_?key|apikey|subscription-key|sig|signature|password|passwd|pwd|secret"
    r"|(?:aws_)?secret_access_key|client_secret|x-amz-(?:signature|security-token|credential)"
    r")=(?!<redacted>)[^&\s'\",;]+"
)
"""A known secret parameter anywhere in a text (its value goes, its name stays)."""
_VRT_OPTIONS = ("bands",)


class _Redacting(logging.Filter):
    """Redact every record of the ``minecube`` logger (:func:`redact`), whatever handler
    prints it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


logging.getLogger("minecube").addFilter(_Redacting())


def _redacted(m: re.Match) -> str:
    kept = m["scheme"] + m["rest"]
    if m["scheme"].lower() == "vrt://" and m["query"]:
        options = [o for o in m["query"][1:].split("&") if o.split("=")[0] in _VRT_OPTIONS]
        kept += "?" + "&".join(options) if options else ""
    return kept


def item_order(item: pystac.Item) -> tuple:
    """Sort key of items: time, then id (what :func:`search` returns and cubes are built in).

    >>> import datetime, pystac
    >>> items = [pystac.Item(i, None, None, datetime.datetime(2023, 1, d), {})
    ...          for i, d in (("b", 2), ("c", 1), ("a", 2))]
    >>> [i.id for i in sorted(items, key=item_order)]
    ['c', 'a', 'b']
    """
    return (item.datetime or dt.datetime.min.replace(tzinfo=dt.UTC), item.id)


ONE_PER = ("date", "orbit")
"""How :func:`select_items` keeps one item among several of one acquisition:

- ``"date"``: one per day (the tiles of a day's pass that overlap the site, neighbouring
  patches of an export);
- ``"orbit"``: one per day, ``platform`` and ``sat:relative_orbit``, for archives with
  several passes a day (two satellites over one site).

The item kept covers most of the site; ties go to the lower ``eo:cloud_cover``, then the id.
"""


def _coverage(item, geometry) -> float:
    """The share of ``geometry``'s area inside the item's footprint (0–1)."""
    import shapely.geometry

    if geometry.area == 0:
        return 1.0 if shapely.geometry.shape(item.geometry).intersects(geometry) else 0.0
    footprint = shapely.geometry.shape(item.geometry) if item.geometry else shapely.box(*item.bbox)
    return float(footprint.intersection(geometry).area / geometry.area)


def select_items(
    items: Sequence[pystac.Item],
    site,
    *,
    cover: float | None = None,
    one_per: str | None = None,
) -> list[pystac.Item]:
    """The items a site's cube needs: those covering enough of it, one per acquisition.

    Parameters
    ----------
    items
        Items over the site (a search, :func:`items_from_files`).
    site
        A site row, one-row GeoDataFrame or a lon/lat geometry.
    cover
        Keep items whose footprint covers at least this share of the site (0–1; ``1`` keeps
        only items holding all of it: an exported patch's own scene, not its neighbours').
    one_per
        ``"date"`` or ``"orbit"``: keep one item per acquisition (:data:`ONE_PER`), the one
        covering most of the site, so a composite is not a median of overlapping copies.

    Examples
    --------
    >>> import datetime, pystac
    >>> from shapely.geometry import box, mapping
    >>> day = datetime.datetime(2023, 6, 1)
    >>> own, neighbour = box(0, 0, 1, 1), box(0.5, 0, 1.5, 1)
    >>> items = [pystac.Item(i, mapping(g), list(g.bounds), day, {})
    ...          for i, g in (("own", own), ("neighbour", neighbour))]
    >>> [i.id for i in select_items(items, own, cover=0.99)]
    ['own']
    >>> [i.id for i in select_items(items, own, one_per="date")]
    ['own']
    """
    geometry = site_geometry(site)
    if cover is not None and not 0 < cover <= 1:
        raise ValueError(f"cover={cover!r} must be a share of the site in (0, 1], e.g. 0.95")
    if one_per is not None and one_per not in ONE_PER:
        raise ValueError(f"one_per={one_per!r} is not one of {list(ONE_PER)} or None")
    shares = {item.id: _coverage(item, geometry) for item in items}
    kept = [i for i in items if cover is None or shares[i.id] >= cover - 1e-9]
    if one_per is not None:
        best: dict[tuple, tuple[tuple, pystac.Item]] = {}
        for item in kept:
            when = item.datetime or dt.datetime.fromisoformat(item.properties["start_datetime"])
            key: tuple = (when.date(),)
            if one_per == "orbit":
                p = item.properties
                key += (p.get("platform"), p.get("sat:relative_orbit", p.get("sat:orbit_state")))
            rank = (-shares[item.id], item.properties.get("eo:cloud_cover", 0.0), item.id)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, item)
        chosen = {id(v[1]) for v in best.values()}
        kept = [i for i in kept if id(i) in chosen]
    return kept


def _day(value: str | dt.date, name: str) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError as e:
        raise ValueError(f"{name}={value!r} is not a date like '2023-01-31'") from e


def _check_collection(client, collection: str) -> None:
    ids = [c.id for c in client.get_collections()]
    if collection not in ids:
        raise ValueError(f"collection {collection!r} is not in this catalogue; it has {ids}")


class NotCOGWarning(UserWarning):
    """A raster is not a Cloud-Optimised GeoTIFF: it reads, but slowly over a network."""


_DATE_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})-?(\d{2})-?(\d{2})(?!\d)")
_DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "DATETIME", "datetime",
              "system:time_start", "date")  # fmt: skip
_RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def _raster_paths(paths) -> list[str]:
    """Files of a glob, a folder (its rasters), a file or a list of those, sorted."""
    import glob

    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[str] = []
    for p in map(os.fspath, paths):
        if any(c in p for c in "*?["):
            out += glob.glob(p, recursive=True)
        elif os.path.isdir(p):
            out += [
                os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(_RASTER_SUFFIXES)
            ]
        elif os.path.exists(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"raster {p!r} does not exist")
    if not out:
        raise FileNotFoundError(f"no raster file matches {[os.fspath(p) for p in paths]}")
    return sorted({os.path.abspath(p) for p in out})


def _token(name: str) -> str:
    """A band or key name compared loosely: case folded, ``B4`` and ``B04`` alike."""
    return re.sub(r"^([a-z]+)0+(?=\d)", r"\1", name.strip().lower())


def _band_lookup(sensor, bands) -> dict[str, str]:
    """Loose name → band (or mask) name: the sensor's band names, their asset keys, its mask
    names and keys, then the user's mapping."""
    lookup = {}
    for table in (sensor.masks, sensor.bands):
        for name, keys in table.items():
            for k in (name, *keys):
                lookup[_token(k)] = name
    if isinstance(bands, Mapping):
        lookup.update({_token(str(k)): str(v) for k, v in bands.items()})
    return lookup


def _file_bands(path: str, src, sensor, bands, lookup, match) -> list[str]:
    """The band name of each of a file's bands: ``bands`` in order, the file's descriptions,
    the pattern's ``band`` group or a token of a single-band file's name."""
    n = src.count
    if bands is not None and not isinstance(bands, Mapping):
        names = [str(b) for b in bands]
        if len(names) != n:
            raise ValueError(
                f"{path}: bands={names} names {len(names)} bands, the file has {n}; give one "
                "name per band of the file, or a mapping from descriptions or file-name tokens"
            )
        return names
    described = [lookup.get(_token(d or "")) for d in src.descriptions]
    if all(described):
        return described
    if n == 1:  # the pattern's band group, else the name's last token that names a band
        tokens = re.split(r"[_\-.\s]+", os.path.splitext(os.path.basename(path))[0])[::-1]
        if match and match.groupdict().get("band"):
            tokens.insert(0, match["band"])
        for t in tokens:
            if _token(t) in lookup:
                return [lookup[_token(t)]]
    raise ValueError(
        f"{path}: cannot tell which band{'s' if n > 1 else ''} it holds (descriptions "
        f"{list(src.descriptions)}; {sensor.name!r} bands and asset keys: "
        f"{sorted(set(lookup))}). Pass bands= (a name per band, e.g. "
        f"{list(sensor.default_bands)[:n]}, "
        "or a mapping {description or file-name token: band}), a pattern with a (?P<band>…) "
        "group, or write band descriptions into the file"
    )


def _file_datetime(path: str, src, datetime, match) -> dt.datetime:
    """The acquisition time: ``datetime=``, the pattern's ``date`` group, a date tag, or a
    date (YYYYMMDD or YYYY-MM-DD) in the file name."""
    import pandas as pd

    value, where = None, None
    if isinstance(datetime, Mapping):
        base = os.path.basename(path)
        value = datetime.get(path, datetime.get(base, datetime.get(os.path.splitext(base)[0])))
        where = "datetime="
    elif datetime is not None:
        value, where = datetime, "datetime="
    if value is None and match and match.groupdict().get("date"):
        value, where = match["date"], "the pattern's date group"
    if value is None:
        tags = src.tags()
        if tags.get("system", "").startswith("time_start="):  # GDAL splits at the first ":"
            tags["system:time_start"] = tags["system"].split("=", 1)[1]
        for tag in _DATE_TAGS:
            if tags.get(tag):
                value, where = tags[tag], f"the tag {tag}"
                if tag == "system:time_start":  # Earth Engine: milliseconds since 1970
                    value = pd.Timestamp(int(float(value)), unit="ms")
                elif tag == "TIFFTAG_DATETIME":  # "YYYY:MM:DD HH:MM:SS"
                    value = value.replace(":", "-", 2)
                break
    if value is None:
        found = _DATE_IN_NAME.search(os.path.basename(path))
        if found:
            value, where = "-".join(found.groups()), "the file name"
    if value is None:
        raise ValueError(
            f"{path}: no acquisition date: none in its tags ({', '.join(_DATE_TAGS)}) or its "
            "name (YYYYMMDD or YYYY-MM-DD). Pass datetime= (one date, or a mapping of file "
            "name to date) or a pattern with a (?P<date>…) group"
        )
    try:
        when = pd.Timestamp(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {value!r} (from {where}) is not a date") from e
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    return when.to_pydatetime()


def _check_cog(path: str, src) -> None:
    import warnings

    tiled = src.block_shapes[0][1] < src.width or src.width <= 512
    overviews = bool(src.overviews(1)) or max(src.width, src.height) <= 1024
    if not (tiled and overviews):
        warnings.warn(
            f"{path} is not a Cloud-Optimised GeoTIFF ({'no tiles' if not tiled else ''}"
            f"{', ' if not (tiled or overviews) else ''}{'no overviews' if not overviews else ''}):"
            " it reads, but every read of it over a network fetches whole strips. Convert it "
            "with `rio cogeo create in.tif out.tif` (pip install rio-cogeo)",
            NotCOGWarning,
            stacklevel=find_stack_level(),
        )


def _asset(path: str, band_index: int, count: int, src, radiometry: dict) -> dict:
    """One band of a file as an asset: the file itself, or a GDAL ``vrt://`` view of one of
    its bands (every engine reads assets as single bands)."""
    import numpy as np

    href = path if count == 1 else f"vrt://{path}?bands={band_index + 1}"
    nodata = radiometry.get("nodata", src.nodata)
    band: dict[str, Any] = {"data_type": src.dtypes[band_index]}
    scale, offset = radiometry.get("scale"), radiometry.get("offset")
    if scale is None and src.scales[band_index] != 1.0:
        scale, offset = src.scales[band_index], src.offsets[band_index]
    if scale is None and np.dtype(src.dtypes[band_index]).kind == "f":
        scale = 1.0  # float rasters hold reflectance
    if scale is not None:
        band.update(scale=float(scale), offset=float(offset or 0.0))
    if nodata is not None and nodata == nodata:
        band["nodata"] = float(nodata)
    return {
        "href": href,
        "type": "image/tiff; application=geotiff",
        "roles": ["data"],
        "raster:bands": [band],
        "proj:code": src.crs.to_string(),  # files without a CRS are refused before
        "proj:shape": [src.height, src.width],
        "proj:transform": list(src.transform)[:6],
        "minecube:file": path,
    }


def _file_assets(path: str, src, sensor, names: list[str], declared: dict) -> dict[str, dict]:
    """The file's bands as assets, keyed by the sensor's first asset key of each band."""
    assets = {}
    for i, name in enumerate(names):
        if name not in sensor.masks:
            sensor.check_bands([name])  # a band the sensor lacks: names the fix
        table = sensor.masks if name in sensor.masks else sensor.bands
        assets[table[name][0]] = _asset(path, i, src.count, src, declared)
    return assets


def _scene_id(path: str, names: list[str], lookup: dict[str, str], match) -> str:
    """The scene a file belongs to: the pattern's ``scene`` group, a single-band file's name
    without the last token naming its band (``T33UWP_20230612_B04`` → ``T33UWP_20230612``),
    else its name."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if match and match.groupdict().get("scene"):
        return match["scene"]
    if len(names) != 1:
        return stem
    tokens = [t for t in re.split(r"[_\-.\s]+", stem) if lookup.get(_token(t)) == names[0]]
    if not tokens:
        return stem
    last = [*re.finditer(rf"(^|[_\-.\s]){re.escape(tokens[-1])}(?=$|[_\-.\s])", stem)][-1]
    return (stem[: last.start()] + stem[last.end() :]).strip("_-. ") or stem


def _scene_item(scene_id: str, scene: dict[str, Any], sensor) -> pystac.Item:
    import pystac

    geometry = scene["footprint"]
    item = pystac.Item(
        scene_id,
        geometry.__geo_interface__,
        list(geometry.bounds),
        scene["datetime"],
        {"proj:epsg": scene["epsg"], "minecube:source": "files"},
        collection=sensor.collections[0],
    )
    for key, asset in scene["assets"].items():
        fields = {k: v for k, v in asset.items() if k not in ("href", "type", "roles")}
        item.add_asset(
            key,
            pystac.Asset(
                asset["href"], media_type=asset["type"], roles=asset["roles"], extra_fields=fields
            ),
        )
    return item


def _footprint(src):
    import shapely.geometry
    from rasterio.warp import transform_geom

    box = shapely.geometry.box(*src.bounds).segmentize(
        max(src.bounds[2] - src.bounds[0], src.bounds[3] - src.bounds[1]) / 16
    )
    return shapely.geometry.shape(transform_geom(src.crs, "EPSG:4326", box.__geo_interface__))


def items_from_files(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    sensor: str = "sentinel-2-l2a",
    bands: Sequence[str] | Mapping[str, str] | None = None,
    datetime: str | dt.datetime | Mapping[str, Any] | None = None,
    pattern: str | None = None,
    scale: float | None = None,
    offset: float | None = None,
    nodata: float | None = None,
) -> pystac.ItemCollection:
    """STAC items, one per scene, from GeoTIFFs/COGs on disk: cubes build from them without a
    server.

    Each file may hold one band (a scene is then the files whose names differ only in the
    band) or several (a scene per file, each band an asset through GDAL's ``vrt://…?bands=N``),
    in any CRS. Items are made with rasterio and pystac rather than rio-stac: rio-stac makes one
    item per file, where a scene is often several files, and takes its date and band names
    from arguments alone, where exported files carry them in their tags, descriptions and
    names.

    Parameters
    ----------
    paths
        Files, folders (their ``.tif``/``.tiff``/``.vrt``/``.jp2`` files) or glob patterns.
    sensor
        The registered sensor the files come from (:data:`minecube.sensors.SENSORS`; register
        your own with :func:`minecube.sensors.read_sensors`). Its first asset key of each band
        names the assets.
    bands
        Band names: a list with one name per band of a file (``["blue", "green", "red"]``), or
        a mapping from band descriptions or file-name tokens to names (``{"B4": "red"}``).
        Default: the files' band descriptions, else a token of a single-band file's name,
        matched to the sensor's band names and asset keys (``B4``, ``B04`` and ``red`` alike).
    datetime
        The acquisition date of every file, or a mapping of file name (or stem) to date.
        Default: the pattern's ``date`` group, a date tag (``TIFFTAG_DATETIME``,
        ``system:time_start``…), else a ``YYYYMMDD`` / ``YYYY-MM-DD`` in the file name.
    pattern
        A regular expression searched in each file name, with optional named groups ``scene``
        (files of one item), ``date`` and ``band``.
    scale, offset, nodata
        Radiometry of every band, declared in ``raster:bands``. Default: the files' own scale,
        offset and nodata; float files are taken as reflectance (scale 1); integer files
        without a scale follow the sensor's rules (Sentinel-2: 0.0001, with the processing
        baseline's offset checked on the pixels).

    Returns
    -------
    pystac.ItemCollection
        Items sorted by time then id, collection the sensor's first, footprints in lon/lat,
        ``proj:*`` per asset, and the source files in each asset's ``minecube:file``.

    Raises
    ------
    FileNotFoundError
        No file matches.
    ValueError
        A file's bands or date cannot be told (the message names the argument that says it),
        files of one scene disagree, or the sensor is unknown.

    Examples
    --------
    >>> import numpy as np, rasterio
    >>> from rasterio.transform import from_origin
    >>> profile = dict(driver="GTiff", width=64, height=64, count=3, dtype="float32",
    ...                crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10))
    >>> with rasterio.open("/tmp/patch_20230612.tif", "w", **profile) as f:
    ...     f.write(np.full((3, 64, 64), 0.1, "float32"))
    ...     f.descriptions = ("B2", "B3", "B4")
    >>> items = items_from_files("/tmp/patch_20230612.tif")
    >>> sorted(items[0].assets), str(items[0].datetime.date())
    (['blue', 'green', 'red'], '2023-06-12')
    """
    import pystac
    import rasterio

    from minecube.sensors import SENSORS, UnknownSensorError

    if sensor not in SENSORS:
        raise UnknownSensorError(
            f"sensor {sensor!r} is not registered; known: {sorted(SENSORS)}. Register it with "
            "minecube.sensors.read_sensors (a YAML file) or register_sensor"
        )
    the_sensor = SENSORS[sensor]
    regex = re.compile(pattern) if pattern else None
    lookup = _band_lookup(the_sensor, bands)
    declared = {k: v for k, v in (("scale", scale), ("offset", offset), ("nodata", nodata))
                if v is not None}  # fmt: skip
    scenes: dict[str, dict[str, Any]] = {}
    files = _raster_paths(paths)
    for path in files:
        match = regex.search(os.path.basename(path)) if regex else None
        if regex and not match:
            raise ValueError(f"{path}: its name does not match pattern={pattern!r}")
        with rasterio.open(path) as src:
            if src.crs is None:
                raise ValueError(f"{path} has no CRS; write one (rio edit-info --crs EPSG:…)")
            names = _file_bands(path, src, the_sensor, bands, lookup, match)
            when = _file_datetime(path, src, datetime, match)
            _check_cog(path, src)
            assets = _file_assets(path, src, the_sensor, names, declared)
            footprint, epsg = _footprint(src), src.crs.to_epsg()
        scene_id = _scene_id(path, names, lookup, match)
        scene = scenes.setdefault(
            scene_id, {"datetime": when, "assets": {}, "footprint": footprint, "epsg": epsg}
        )
        clash = sorted(set(scene["assets"]) & set(assets))
        if clash or scene["datetime"] != when:
            raise ValueError(
                f"{path}: scene {scene_id!r} already has "
                + (f"the assets {clash}" if clash else f"the date {scene['datetime']:%Y-%m-%d}")
                + "; give each scene's files a common name part and pass pattern= with a "
                "(?P<scene>…) group"
            )
        scene["assets"].update(assets)
        scene["footprint"] = scene["footprint"].union(footprint)
    items = [_scene_item(scene_id, scene, the_sensor) for scene_id, scene in scenes.items()]
    items.sort(key=item_order)
    return pystac.ItemCollection(items, extra_fields={"minecube:search": {"files": len(files)}})
