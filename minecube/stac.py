"""Search a STAC API for a site's scenes, the same way on Earth Search, the Planetary Computer,
pgstac and the demo world, and name their band assets the same way whatever the catalogue."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minecube.errors import MinecubeError
from minecube.sites import site_geometry

if TYPE_CHECKING:
    import pystac
    import pystac_client

__all__ = ["BANDS", "BandAsset", "NoItemsError", "band_assets", "open_catalog", "search"]

BANDS = ("blue", "green", "red", "nir")
"""Reflectance bands minecube uses, by common name."""

# Asset keys by band across catalogues: Earth Search v1, Planetary Computer / Earth Search v0.
_ALIASES = {
    "blue": ("blue", "B02"),
    "green": ("green", "B03"),
    "red": ("red", "B04"),
    "nir": ("nir", "B08"),
    "scl": ("scl", "SCL"),
}


class NoItemsError(MinecubeError, LookupError):
    """A search matched no items; the message shows the query."""


@dataclass(frozen=True)
class BandAsset:
    """Where a band lives in an item and how its digital numbers become reflectance."""

    key: str
    """Asset key in the item (``red`` on Earth Search v1, ``B04`` on the Planetary Computer)."""
    scale: float
    offset: float
    nodata: float | None


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
    import shapely
    from pystac_client import ConformanceClasses

    client = open_catalog(catalog)
    geometry = site_geometry(site)
    start_s, end_s = _day(start, "start"), _day(end, "end")
    if start_s > end_s:
        raise ValueError(f"start {start_s} is after end {end_s}; swap them")
    _check_collection(client, collection)
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
    items.sort(key=lambda i: (i.datetime or dt.datetime.min.replace(tzinfo=dt.UTC), i.id))
    record = {
        "catalog": client.self_href or str(catalog),
        "collection": collection,
        "intersects": params["intersects"],
        "datetime": params["datetime"],
        "max_cloud": max_cloud,
        "cloud_filter": server_side,
    }
    if not items:
        raise NoItemsError(
            f"no {collection!r} items intersect the site between {start_s} and {end_s}"
            + (f" with eo:cloud_cover ≤ {max_cloud} %" if max_cloud is not None else "")
            + f" at {record['catalog']}; site bounds (lon/lat) {tuple(geometry.bounds)}. "
            "Widen the dates, raise max_cloud, or check the site's coordinates."
        )
    return pystac.ItemCollection(items, extra_fields={"minecube:search": record})


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


def band_assets(item: pystac.Item, bands=(*BANDS, "scl")) -> dict[str, BandAsset]:
    """Map minecube band names to an item's assets, with scale and offset to reflectance.

    Earth Search v1 names assets ``red``, ``nir``, ``scl`` and gives ``raster:bands`` scale and
    offset; the Planetary Computer names them ``B04``, ``B08``, ``SCL`` with no scaling in the
    item, so the L2A convention is applied: scale 0.0001, and offset −0.1 from processing
    baseline 04.00 (25 January 2022) on.

    Examples
    --------
    >>> import pystac, datetime
    >>> item = pystac.Item("x", None, None, datetime.datetime(2023, 1, 1),
    ...                    {"s2:processing_baseline": "05.09"})
    >>> for key in ("B02", "B03", "B04", "B08", "SCL"):
    ...     item.add_asset(key, pystac.Asset(f"{key}.tif"))
    >>> band_assets(item)["nir"]
    BandAsset(key='B08', scale=0.0001, offset=-0.1, nodata=0)
    """
    out = {}
    for band in bands:
        if band not in _ALIASES:
            raise ValueError(f"unknown band {band!r}; minecube reads {[*BANDS, 'scl']}")
        key = next((k for k in _ALIASES[band] if k in item.assets), None)
        if key is None:
            raise KeyError(
                f"item {item.id!r} has no asset for band {band!r} (looked for "
                f"{list(_ALIASES[band])}); its assets are {sorted(item.assets)}"
            )
        raster = (item.assets[key].extra_fields.get("raster:bands") or [{}])[0]
        if band == "scl":
            out[band] = BandAsset(key, 1.0, 0.0, raster.get("nodata", 0))
            continue
        scale = raster.get("scale")
        offset = raster.get("offset")
        if scale is None:
            baseline = str(item.properties.get("s2:processing_baseline", "99.99"))
            scale = 1e-4
            offset = -0.1 if baseline >= "04.00" else 0.0
        out[band] = BandAsset(key, float(scale), float(offset or 0.0), raster.get("nodata", 0))
    return out
