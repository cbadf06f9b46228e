"""The demo world: a synthetic Sentinel-2 L2A archive around fictional mines, served locally.

>>> from minecube import demo
>>> world = demo.generate("demo-world")              # doctest: +SKIP
>>> with demo.serve(world) as server:                  # doctest: +SKIP
...     print(server.stac_url)
"""

from minecube.demo.serve import DemoServer, serve
from minecube.demo.world import SITES, DemoSite, World, WorldSpec, generate, open_world

__all__ = [
    "SITES",
    "DemoServer",
    "DemoSite",
    "World",
    "WorldSpec",
    "generate",
    "open_world",
    "serve",
]
