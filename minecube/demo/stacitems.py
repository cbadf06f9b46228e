"""STAC Items and the Collection of the demo archive, shaped like Earth Search v1's.

Items follow Earth Search's ``sentinel-2-l2a`` collection: one item per MGRS tile and date, assets
``blue``, ``green``, ``red``, ``nir`` (10 m, uint16) and ``scl`` (20 m, uint8), ``raster:bands``
with ``scale`` 0.0001 and ``offset`` −0.1 (processing baseline ≥ 04.00), ``eo:cloud_cover``,
``s2:*`` and ``mgrs:*`` properties. They are written as STAC 1.1 with the projection extension
v2 (``proj:code``), as pystac ≥ 1.12 writes them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import shapely
from pyproj import Transformer
from shapely.geometry import mapping

COLLECTION_ID = "sentinel-2-l2a"
STAC_VERSION = "1.1.0"
EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
]
COG = "image/tiff; application=geotiff; profile=cloud-optimized"

# asset key → (file name, Earth Search title, eo:bands entry)
ASSETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "blue": (
        "B02",
        "Blue (band 2) - 10m",
        {
            "name": "B02",
            "common_name": "blue",
            "center_wavelength": 0.49,
            "full_width_half_max": 0.098,
        },
    ),
    "green": (
        "B03",
        "Green (band 3) - 10m",
        {
            "name": "B03",
            "common_name": "green",
            "center_wavelength": 0.56,
            "full_width_half_max": 0.045,
        },
    ),
    "red": (
        "B04",
        "Red (band 4) - 10m",
        {
            "name": "B04",
            "common_name": "red",
            "center_wavelength": 0.665,
            "full_width_half_max": 0.038,
        },
    ),
    "nir": (
        "B08",
        "NIR 1 (band 8) - 10m",
        {
            "name": "B08",
            "common_name": "nir",
            "center_wavelength": 0.842,
            "full_width_half_max": 0.145,
        },
    ),
    "scl": ("SCL", "Scene classification map (SCL)", {}),
}
SCALE, OFFSET = 0.0001, -0.1
_LATITUDE_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMN_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


def tile_code(epsg: int, lat: float, col: int, row: int) -> str:
    """MGRS-like tile code: UTM zone, latitude band, and two letters for the tile's column/row."""
    band = _LATITUDE_BANDS[min(max(int((lat + 80) // 8), 0), len(_LATITUDE_BANDS) - 1)]
    return f"{epsg % 100:02d}{band}{_COLUMN_LETTERS[col % 24]}{_ROW_LETTERS[row % 20]}"


def lonlat_geometry(geom, epsg: int):
    """A projected shapely geometry in lon/lat (EPSG:4326), densified so edges stay true."""
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True).transform
    dense = geom.segmentize(geom.length / 40 if geom.length else 1)
    return shapely.transform(dense, to_lonlat, interleaved=False)


def item_id(platform: str, tile: str, when: dt.datetime) -> str:
    """Earth Search v1 item id, e.g. ``S2B_50KPC_20220315_0_L2A``."""
    return f"S2{platform[-1].upper()}_{tile}_{when:%Y%m%d}_0_L2A"


def make_item(
    *,
    tile: str,
    epsg: int,
    bounds: tuple[float, float, float, float],
    footprint,
    shape: tuple[int, int],
    when: dt.datetime,
    platform: str,
    cloud_cover: float,
    nodata_percentage: float,
    hrefs: dict[str, str],
    sun: tuple[float, float],
) -> dict[str, Any]:
    """One Earth-Search-like Sentinel-2 L2A item as a JSON dict.

    ``footprint`` is the valid-data polygon in the tile's UTM CRS; ``hrefs`` maps asset keys to
    hrefs (relative to the world root, rewritten when served).
    """
    zone, band, square = tile[:2], tile[2], tile[3:]
    geometry = lonlat_geometry(footprint, epsg)
    h, w = shape
    x0, _, _, y1 = bounds
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    processed = (when + dt.timedelta(hours=9)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assets: dict[str, Any] = {}
    for key, (_, title, eo_band) in ASSETS.items():
        res = 20 if key == "scl" else 10
        raster_band: dict[str, Any] = {"nodata": 0, "spatial_resolution": res}
        if key == "scl":
            raster_band["data_type"] = "uint8"
        else:
            raster_band.update(data_type="uint16", bits_per_sample=15, scale=SCALE, offset=OFFSET)
        asset: dict[str, Any] = {
            "href": hrefs[key],
            "type": COG,
            "title": title,
            "proj:shape": [h * 10 // res, w * 10 // res],
            "proj:transform": [res, 0, x0, 0, -res, y1],
            "raster:bands": [raster_band],
            "roles": ["data", "reflectance"] if eo_band else ["data"],
        }
        if eo_band:
            asset["eo:bands"] = [eo_band]
            asset["gsd"] = 10
        assets[key] = asset
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS,
        "id": item_id(platform, tile, when),
        "collection": COLLECTION_ID,
        "geometry": mapping(geometry),
        "bbox": [round(v, 7) for v in geometry.bounds],
        "properties": {
            "datetime": stamp,
            "created": processed,
            "updated": processed,
            "platform": platform,
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": round(cloud_cover, 4),
            "proj:code": f"EPSG:{epsg}",
            "mgrs:utm_zone": int(zone),
            "mgrs:latitude_band": band,
            "mgrs:grid_square": square,
            "grid:code": f"MGRS-{tile}",
            "view:sun_azimuth": round(sun[0], 3),
            "view:sun_elevation": round(sun[1], 3),
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": "05.10",
            "s2:nodata_pixel_percentage": round(nodata_percentage, 4),
            "s2:degraded_msi_data_percentage": 0,
            "s2:datatake_type": "INS-NOBS",
        },
        "links": [{"rel": "collection", "href": "collection.json", "type": "application/json"}],
        "assets": assets,
    }


def make_collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``sentinel-2-l2a`` collection that holds the demo items."""
    west = min(i["bbox"][0] for i in items)
    south = min(i["bbox"][1] for i in items)
    east = max(i["bbox"][2] for i in items)
    north = max(i["bbox"][3] for i in items)
    times = sorted(i["properties"]["datetime"] for i in items)
    item_assets = {}
    for key, (_, title, eo_band) in ASSETS.items():
        item_assets[key] = {"type": COG, "title": title, "roles": ["data"]}
        if eo_band:
            item_assets[key]["eo:bands"] = [eo_band]
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        ],
        "id": COLLECTION_ID,
        "title": "Sentinel-2 Level-2A (minecube demo world)",
        "description": (
            "Synthetic Sentinel-2 L2A surface reflectance around fictional mines, generated by "
            "minecube.demo and laid out like Earth Search v1's sentinel-2-l2a collection."
        ),
        "keywords": ["sentinel", "copernicus", "esa", "msi", "synthetic", "mining"],
        "license": "CC-BY-4.0",
        "providers": [{"name": "minecube demo world", "roles": ["producer", "processor", "host"]}],
        "extent": {
            "spatial": {"bbox": [[west, south, east, north]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "summaries": {
            "platform": sorted({i["properties"]["platform"] for i in items}),
            "constellation": ["sentinel-2"],
            "instruments": ["msi"],
            "gsd": [10],
        },
        "item_assets": item_assets,
        "links": [],
    }
