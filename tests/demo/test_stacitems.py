"""STAC items and collection of the demo world: valid STAC, Earth-Search-shaped."""

from __future__ import annotations

import json

import pystac
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from pystac.validation.stac_validator import JsonSchemaSTACValidator

from minecube.demo import stacitems


def test_tile_code_is_mgrs_like():
    assert stacitems.tile_code(32750, -22.7, 3, 5) == "50KDF"


def test_items_and_collection_validate_against_the_stac_schema(world):
    # The core STAC 1.1 schemas ship with pystac; extension schemas need the internet, so
    # the extension fields are checked through pystac's extension classes instead.
    validator = JsonSchemaSTACValidator()
    items = world.items()
    for item in items[::10]:
        validator.validate_core(item, pystac.STACObjectType.ITEM, "1.1.0", item["id"])
    collection = json.loads(world.collection_path.read_text())
    validator.validate_core(collection, pystac.STACObjectType.COLLECTION, "1.1.0")
    item = pystac.Item.from_dict(items[0])
    assert ProjectionExtension.ext(item).code == item.properties["proj:code"]
    assert 0 <= EOExtension.ext(item).cloud_cover <= 100
    band = RasterExtension.ext(item.assets["nir"]).bands[0]
    assert (band.scale, band.offset, band.nodata) == (0.0001, -0.1, 0)
    assert EOExtension.ext(item.assets["nir"]).bands[0].common_name == "nir"
    assert item.id == f"S2{item.properties['platform'][-1].upper()}_" + (
        f"{item.properties['grid:code'][5:]}_{item.datetime:%Y%m%d}_0_L2A"
    )
    bbox = collection["extent"]["spatial"]["bbox"][0]
    assert all(bbox[0] <= i["bbox"][0] and i["bbox"][2] <= bbox[2] for i in items)
