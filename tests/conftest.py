"""Session-wide fixtures: the demo world on disk and served over loopback HTTP."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Small worlds for tests that generate their own (determinism, bad input).
TINY = {
    "sites": ["hunter-coal", "atacama-copper"],
    "years": [2022, 2023],
    "dates_per_year": 2,
    "tile_size": 128,
    "site_size": 80,
}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The default demo world, exactly as `make demo` generates it."""
    from minecube.demo import generate

    return generate(tmp_path_factory.mktemp("demo") / "world")


@pytest.fixture(scope="session")
def server(world):
    """The demo world served by a real STAC API (rustac) and a range-request COG server."""
    from minecube.demo import serve

    with serve(world) as running:
        yield running


@pytest.fixture(scope="session")
def catalog(server):
    """A pystac-client Client opened on the served STAC API."""
    import pystac_client

    return pystac_client.Client.open(server.stac_url)
