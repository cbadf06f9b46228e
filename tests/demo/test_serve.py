"""The demo world served like a public catalogue: a real STAC API and COGs over HTTP ranges."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import rasterio
from shapely.geometry import box, shape

from minecube.demo import serve
from minecube.errors import MissingDependencyError, PortInUseError


def _expected_ids(world, bbox, start, end):
    return sorted(
        i["id"]
        for i in world.items()
        if shape(i["geometry"]).intersects(box(*bbox))
        and start <= i["properties"]["datetime"][:10] <= end
    )


def test_search_by_bbox_and_datetime_matches_the_archive(world, catalog):
    year = world.spec.years[1]
    for site in world.sites.itertuples():
        bbox = site.geometry.bounds
        found = catalog.search(
            collections=["sentinel-2-l2a"], bbox=bbox, datetime=f"{year}-01-01/{year}-06-30"
        )
        ids = sorted(i.id for i in found.items())
        assert ids == _expected_ids(world, bbox, f"{year}-01-01", f"{year}-06-30"), site.site_id
        assert ids, site.site_id
        tiles = {i.split("_")[1] for i in ids}
        assert tiles <= set(site.tiles.split(",")), "a search reached another site's tiles"


def test_straddling_site_finds_both_tiles(world, catalog):
    site = next(s for s in world.sites.itertuples() if "," in s.tiles)
    found = catalog.search(collections=["sentinel-2-l2a"], bbox=site.geometry.bounds)
    assert {i.properties["grid:code"][5:] for i in found.items()} == set(site.tiles.split(","))


def test_search_pages_through_every_item(world, catalog):
    search = catalog.search(collections=["sentinel-2-l2a"], limit=7)
    pages = list(search.pages())
    assert len(pages) > 2
    assert sorted(i.id for page in pages for i in page) == sorted(i["id"] for i in world.items())


def test_served_items_point_at_the_cog_server(server, catalog):
    item = next(catalog.search(collections=["sentinel-2-l2a"], max_items=1).items())
    assert item.assets["red"].href.startswith(server.data_url + "/cogs/")
    assert item.get_collection().id == "sentinel-2-l2a"
    assert item.properties["proj:code"].startswith("EPSG:")


def test_gdal_reads_a_cog_window_over_http_with_range_requests(world, server, catalog):
    item = next(catalog.search(collections=["sentinel-2-l2a"], max_items=1).items())
    href = item.assets["nir"].href
    local = world.path / href.removeprefix(server.data_url + "/")
    window = ((100, 164), (200, 264))
    before = len(server.requests)
    with rasterio.open(href) as remote, rasterio.open(local) as disk:
        np.testing.assert_array_equal(remote.read(1, window=window), disk.read(1, window=window))
        size = local.stat().st_size
    mine = [r for r in server.requests[before:] if r[1].endswith(local.name)]
    gets = [r for r in mine if r[0] == "GET"]
    assert gets, "GDAL made no GET request"
    assert all(r[2] and r[2].startswith("bytes=") for r in gets), gets
    fetched = sum(int(b) - int(a) + 1 for _, _, rng in gets for a, b in [rng[6:].split("-")])
    assert fetched < size, "the whole file was fetched, not a window"


def _get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_range_semantics(world, server):
    href = world.items(base_url=server.data_url)[0]["assets"]["scl"]["href"]
    whole = (world.path / href.removeprefix(server.data_url + "/")).read_bytes()
    status, headers, body = _get(href)
    assert (status, body, headers["Accept-Ranges"]) == (200, whole, "bytes")
    status, headers, body = _get(href, {"Range": "bytes=10-109"})
    assert (status, body) == (206, whole[10:110])
    assert headers["Content-Range"] == f"bytes 10-109/{len(whole)}"
    status, _, body = _get(href, {"Range": "bytes=-50"})
    assert (status, body) == (206, whole[-50:])
    status, _, body = _get(href, {"Range": f"bytes={len(whole) - 5}-"})
    assert (status, body) == (206, whole[-5:])
    status, headers, _ = _get(href, {"Range": f"bytes={len(whole) + 10}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(whole)}"
    assert _get(f"{server.data_url}/cogs/nothing-here.tif")[0] == 404


def test_port_in_use_is_a_clear_error(world):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            serve(world, stac_port=port)
        with pytest.raises(PortInUseError, match="data_port"):
            serve(world, data_port=port)


def test_missing_server_program_is_a_clear_error(world):
    with pytest.raises(MissingDependencyError, match="pip install rustac"):
        serve(world, rustac="/nonexistent/bin/rustac")


def test_servers_stop_cleanly(world):
    with serve(world) as running:
        urls = [running.stac_url, f"{running.data_url}/world.json"]
        processes = [p for p, _ in running._processes]
        assert all(_get(u)[0] == 200 for u in urls)
    assert all(p.poll() is not None for p in processes)
    for url in urls:
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=2)
    running.close()  # a second close is harmless


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_demo_serve_stops_both_servers_when_signalled(world, how):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    def ignoring_ctrl_c():  # as `minecube demo serve &` from a script starts: SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    command = [str(Path(sys.executable).with_name("minecube")), "demo", "serve", str(world.path)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                             preexec_fn=ignoring_ctrl_c if how == "SIGINT" else None)  # fmt: skip
    lines = [child.stdout.readline() for _ in range(2)]
    urls = [line.split()[-1] for line in lines]
    assert lines[0].startswith("STAC API:"), lines
    assert lines[1].startswith("COGs:"), lines
    assert all(_get(u)[0] == 200 for u in (urls[0], f"{urls[1]}/world.json"))
    servers = _children(child.pid)
    assert len(servers) == 2  # rustac and the COG server
    child.send_signal(getattr(signal, how))
    assert child.wait(30) == 0  # stops: each server gets 5 s to exit
    assert "stopped" in child.stdout.read()
    for pid in servers:  # no server is left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for url in urls:
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=2)


def test_demo_serve_servers_die_with_a_killed_parent(world):
    """SIGKILL leaves no handler to run: the servers must go by themselves."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    command = [str(Path(sys.executable).with_name("minecube")), "demo", "serve", str(world.path)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().startswith("STAC API:")
    servers = _children(child.pid)
    assert len(servers) == 2
    child.send_signal(signal.SIGKILL)
    child.wait(15)
    deadline = time.monotonic() + 15  # bounded: the servers get SIGTERM from the kernel
    while any(map(_alive, servers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, servers)), [p for p in servers if _alive(p)]


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet is not)."""
    from pathlib import Path

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    from pathlib import Path

    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in found]


def test_a_just_closed_port_can_be_served_again(world):
    with serve(world) as first:
        ports = [int(u.rsplit(":", 1)[1]) for u in (first.stac_url, first.data_url)]
        assert _get(f"{first.data_url}/world.json")[0] == 200  # a connection: TIME_WAIT after
    with serve(world, stac_port=ports[0], data_port=ports[1]) as again:
        assert _get(f"{again.data_url}/world.json")[0] == 200
        assert again.stac_url.endswith(f":{ports[0]}")
