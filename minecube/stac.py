"""Search a STAC API for a site's scenes, the same way on Earth Search, the Planetary Computer,
pgstac and the demo world. Band assets and their radiometry across catalogues live in
:mod:`minecube.sensors` (``band_assets`` is re-exported here)."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from minecube.errors import MinecubeError
from minecube.sensors import BANDS, BandAsset, band_assets
from minecube.sites import site_geometry

if TYPE_CHECKING:
    import pystac
    import pystac_client

__all__ = [
    "BANDS",
    "BandAsset",
    "NoItemsError",
    "band_assets",
    "item_order",
    "open_catalog",
    "redact",
    "search",
    "search_many",
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
    io = StacApiIO(max_retries=retry, timeout=timeout)
    return pystac_client.Client.open(catalog, stac_io=io, timeout=timeout)


def search(
    site,
    start: str | dt.date,
    end: str | dt.date,
    *,
    catalog: str | pystac_client.Client,
    collection: str = "sentinel-2-l2a",
    max_cloud: float | None = None,
    limit: int = 100,
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
    record["catalog"] = href
    if not items:
        raise NoItemsError(
            f"no {collection!r} items intersect the site between {start_s} and {end_s}"
            + (f" with eo:cloud_cover ≤ {max_cloud} %" if max_cloud is not None else "")
            + f" at {record['catalog']}; site bounds (lon/lat) {tuple(geometry.bounds)}. "
            "Widen the dates, raise max_cloud, or check the site's coordinates."
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
            params["filter"] = {
                "op": "<=",
                "args": [{"property": "eo:cloud_cover"}, max_cloud],
            }
            params["filter_lang"] = "cql2-json"
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
    start, end, catalog, collection, max_cloud, limit
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
            record = query | {
                "catalog": catalog_href,
                "intersects": shapely.geometry.mapping(geometry),
                "grouped_sites": len(members),
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


def redact(text: str) -> str:
    """``text`` with the credentials and query strings of every URL in it removed.

    Tokens (``?token=``, ``subscription-key=``, SAS and presigned signatures) travel in query
    strings and ``user:password@``; minecube stores and prints URLs only through this.

    Examples
    --------
    >>> redact("GET https://user:pw@example.com/a.tif?sig=abc&se=2026 failed")
    'GET https://example.com/a.tif failed'
    """
    return _URL.sub(lambda m: m["scheme"] + m["rest"], text)


def item_order(item: pystac.Item) -> tuple:
    """Sort key of items: time, then id (what :func:`search` returns and cubes are built in).

    >>> import datetime, pystac
    >>> items = [pystac.Item(i, None, None, datetime.datetime(2023, 1, d), {})
    ...          for i, d in (("b", 2), ("c", 1), ("a", 2))]
    >>> [i.id for i in sorted(items, key=item_order)]
    ['c', 'a', 'b']
    """
    return (item.datetime or dt.datetime.min.replace(tzinfo=dt.UTC), item.id)


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
