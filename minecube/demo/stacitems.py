"""STAC Items and the Collection of the demo archive, shaped like Earth Search v1's.

Items follow Earth Search's ``sentinel-2-l2a`` collection: one item per MGRS tile and date, assets
``blue``, ``green``, ``red``, ``nir`` (10 m, uint16) and ``scl`` (20 m, uint8), ``raster:bands``
with ``scale`` 0.0001 and ``offset`` −0.1 for processing baseline ≥ 04.00 (from 25 January 2022;
DN carry +1000) and 0 before it (baseline 03.01, no offset), ``eo:cloud_cover``, ``s2:*`` and
``mgrs:*`` properties. They are written as STAC 1.1 with the projection extension v2
(``proj:code``), as pystac ≥ 1.12 writes them.

:func:`restyle` rewrites an item in another catalogue's style (the Planetary Computer, Earth
Search v0, the Copernicus Data Space), keeping its files; :func:`make_landsat_item` writes the
Landsat Collection 2 Level-2 items of a Landsat world (``landsat-c2-l2``, 30 m, ``qa_pixel``).
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
LANDSAT_COLLECTION = "landsat-c2-l2"
LANDSAT_SCALE, LANDSAT_OFFSET = 2.75e-5, -0.2
LANDSAT_ASSETS = {
    "blue": ("SR_B2", "Blue Band", {"name": "SR_B2", "common_name": "blue"}),
    "green": ("SR_B3", "Green Band", {"name": "SR_B3", "common_name": "green"}),
    "red": ("SR_B4", "Red Band", {"name": "SR_B4", "common_name": "red"}),
    "nir08": ("SR_B5", "Near Infrared Band 0.8", {"name": "SR_B5", "common_name": "nir08"}),
    "qa_pixel": ("QA_PIXEL", "Pixel Quality Assessment Band", {}),
}
STYLES = ("earth-search", "planetary-computer", "earth-search-v0", "cdse")
"""Catalogue styles a Sentinel-2 demo world can be served in (:func:`restyle`)."""
BASELINE_CHANGE = dt.datetime(2022, 1, 25, tzinfo=dt.UTC)
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
    baseline: str = "05.10",
) -> dict[str, Any]:
    """One Earth-Search-like Sentinel-2 L2A item as a JSON dict.

    ``footprint`` is the valid-data polygon in the tile's UTM CRS; ``hrefs`` maps asset keys to
    hrefs (relative to the world root, rewritten when served); ``baseline`` ≥ 04.00 declares
    offset −0.1 (the files' DN carry +1000), an older one offset 0.
    """
    offset = OFFSET if baseline >= "04.00" else 0.0
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
            raster_band.update(data_type="uint16", bits_per_sample=15, scale=SCALE, offset=offset)
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
            "s2:processing_baseline": baseline,
            "s2:product_uri": (
                f"S2{platform[-1].upper()}_MSIL2A_{when:%Y%m%dT%H%M%S}_N{baseline.replace('.', '')}"
                f"_R000_T{tile}_{when:%Y%m%dT%H%M%S}.SAFE"
            ),
            "earthsearch:boa_offset_applied": False,
            "s2:nodata_pixel_percentage": round(nodata_percentage, 4),
            "s2:degraded_msi_data_percentage": 0,
            "s2:datatake_type": "INS-NOBS",
        },
        "links": [{"rel": "collection", "href": "collection.json", "type": "application/json"}],
        "assets": assets,
    }


def make_collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The collection that holds the demo items (``sentinel-2-l2a`` or ``landsat-c2-l2``)."""
    west = min(i["bbox"][0] for i in items)
    south = min(i["bbox"][1] for i in items)
    east = max(i["bbox"][2] for i in items)
    north = max(i["bbox"][3] for i in items)
    times = sorted(i["properties"]["datetime"] for i in items)
    collection = items[0]["collection"]
    landsat = collection == LANDSAT_COLLECTION
    item_assets = {}
    for key, (_, title, eo_band) in (LANDSAT_ASSETS if landsat else ASSETS).items():
        item_assets[key] = {"type": COG, "title": title, "roles": ["data"]}
        if eo_band:
            item_assets[key]["eo:bands"] = [eo_band]
    sensor = "Landsat Collection 2 Level-2" if landsat else "Sentinel-2 Level-2A"
    layout = "Planetary Computer's landsat-c2-l2" if landsat else "Earth Search v1's sentinel-2-l2a"
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        ],
        "id": collection,
        "title": f"{sensor} (minecube demo world)",
        "description": (
            f"Synthetic {sensor} surface reflectance around fictional mines, generated by "
            f"minecube.demo and laid out like {layout} collection."
        ),
        "keywords": ["landsat" if landsat else "sentinel", "synthetic", "mining"],
        "license": "CC-BY-4.0",
        "providers": [{"name": "minecube demo world", "roles": ["producer", "processor", "host"]}],
        "extent": {
            "spatial": {"bbox": [[west, south, east, north]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "summaries": {
            "platform": sorted({i["properties"]["platform"] for i in items}),
            "gsd": [30 if landsat else 10],
        },
        "item_assets": item_assets,
        "links": [],
    }


def restyle(item: dict[str, Any], style: str) -> dict[str, Any]:
    """A copy of an Earth-Search-v1-style Sentinel-2 item in another catalogue's style.

    - ``"planetary-computer"``: assets ``B02 B03 B04 B08 SCL`` without ``raster:bands`` scaling
      (the Planetary Computer declares none), ``s2:processing_baseline`` and
      ``s2:product_uri`` kept, Planetary Computer item ids, ``proj:epsg``.
    - ``"earth-search-v0"``: collection ``sentinel-s2-l2a-cogs``, assets ``B02 … SCL`` without
      scaling; the baseline only in ``sentinel:product_id`` (``…_N0214_…``).
    - ``"cdse"``: Copernicus Data Space keys ``B02_10m … SCL_20m`` with asset-level
      ``raster:scale`` / ``raster:offset`` / ``nodata`` (STAC 1.1) and ``processing:version``.
    """
    import copy

    if style not in STYLES:
        raise ValueError(f"style={style!r} is not one of {list(STYLES)}")
    out = copy.deepcopy(item)
    if style == "earth-search":
        return out
    p = out["properties"]
    product = p["s2:product_uri"].removesuffix(".SAFE")
    keys = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "scl": "SCL"}
    if style == "cdse":
        keys = {k: f"{v}_{'20m' if k == 'scl' else '10m'}" for k, v in keys.items()}
    assets = {}
    for key, asset in out["assets"].items():
        band = asset.pop("raster:bands", [{}])[0]
        if style == "cdse":
            asset["nodata"] = band.get("nodata", 0)
            asset["data_type"] = band.get("data_type")
            if key != "scl":
                asset["raster:scale"] = band.get("scale")
                asset["raster:offset"] = band.get("offset")
        assets[keys[key]] = asset
    out["assets"] = assets
    baseline = p.pop("s2:processing_baseline")
    p.pop("earthsearch:boa_offset_applied", None)
    if style == "planetary-computer":
        head, _, orbit, tile, stamp = product.rsplit("_", 4)
        out["id"] = f"{head}_{orbit}_{tile}_{stamp}"  # S2B_MSIL2A_20240419T095549_R122_T47XML_…
        p["s2:processing_baseline"] = baseline
        p["proj:epsg"] = int(p.pop("proj:code").split(":")[1])
    elif style == "earth-search-v0":
        out["collection"] = "sentinel-s2-l2a-cogs"
        p["sentinel:product_id"] = product
        p.pop("s2:product_uri")
        p["proj:epsg"] = int(p.pop("proj:code").split(":")[1])
    else:  # cdse
        out["id"] = product
        p["processing:version"] = baseline
        p.pop("s2:product_uri")
    return out


def landsat_item_id(platform: str, tile: str, when: dt.datetime) -> str:
    """A Landsat Collection 2 Level-2 style id, e.g. ``LC08_L2SP_56HAE_20220315_02_T1``."""
    return f"LC0{platform[-1]}_L2SP_{tile}_{when:%Y%m%d}_02_T1"


def make_landsat_item(
    *,
    tile: str,
    epsg: int,
    bounds: tuple[float, float, float, float],
    footprint,
    shape: tuple[int, int],
    when: dt.datetime,
    platform: str,
    cloud_cover: float,
    hrefs: dict[str, str],
) -> dict[str, Any]:
    """One Landsat Collection 2 Level-2 item (Planetary Computer / Earth Search style): assets
    ``blue green red nir08`` (30 m uint16, scale 2.75e-5, offset −0.2) and ``qa_pixel``."""
    geometry = lonlat_geometry(footprint, epsg)
    h, w = shape
    x0, _, _, y1 = bounds
    assets: dict[str, Any] = {}
    for key, (_, title, eo_band) in LANDSAT_ASSETS.items():
        if key == "qa_pixel":
            band: dict[str, Any] = {"unit": "bit index", "nodata": 1, "data_type": "uint16"}
        else:
            band = {
                "scale": LANDSAT_SCALE,
                "offset": LANDSAT_OFFSET,
                "nodata": 0,
                "data_type": "uint16",
            }
        band["spatial_resolution"] = 30
        assets[key] = {
            "href": hrefs[key],
            "type": COG,
            "title": title,
            "proj:shape": [h, w],
            "proj:transform": [30, 0, x0, 0, -30, y1],
            "raster:bands": [band],
            "roles": ["data", "reflectance"] if eo_band else ["cloud", "cloud-shadow", "snow-ice"],
            **({"eo:bands": [eo_band]} if eo_band else {}),
        }
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS[:3],
        "id": landsat_item_id(platform, tile, when),
        "collection": LANDSAT_COLLECTION,
        "geometry": mapping(geometry),
        "bbox": [round(v, 7) for v in geometry.bounds],
        "properties": {
            "datetime": stamp,
            "platform": platform,
            "instruments": ["oli", "tirs"],
            "eo:cloud_cover": round(cloud_cover, 4),
            "proj:code": f"EPSG:{epsg}",
            "landsat:collection_category": "T1",
            "landsat:collection_number": "02",
            "landsat:correction": "L2SP",
        },
        "links": [{"rel": "collection", "href": "collection.json", "type": "application/json"}],
        "assets": assets,
    }
