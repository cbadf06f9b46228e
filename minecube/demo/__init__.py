"""The demo world: a synthetic Sentinel-2 L2A archive around fictional mines, served locally.

>>> import pystac_client
>>> from minecube import demo
>>> world = demo.generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
...                       dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
>>> with demo.serve(world) as server:
...     client = pystac_client.Client.open(server.stac_url)
...     items = list(client.search(bbox=world.sites.total_bounds, datetime="2023").items())
>>> sorted({item.properties["grid:code"] for item in items})
['MGRS-56HAE', 'MGRS-56HBE']
"""

from minecube.demo.serve import DemoServer, serve
from minecube.demo.world import (
    SITES,
    DemoSite,
    World,
    WorldSpec,
    generate,
    many_sites,
    open_world,
)

__all__ = [
    "SITES",
    "DemoServer",
    "DemoSite",
    "World",
    "WorldSpec",
    "generate",
    "many_sites",
    "open_world",
    "serve",
]
