"""STAC search against the demo world's real STAC API, and band assets across catalogues."""

from __future__ import annotations

import datetime as dt

import pystac
import pytest
from shapely.geometry import box, shape

from minecube.sensors import UnknownSensorError
from minecube.stac import NoItemsError, band_assets, open_catalog, search, search_many


def _truth(world, site, start, end, max_cloud=None):
    return sorted(
        i["id"]
        for i in world.items()
        if shape(i["geometry"]).intersects(site.geometry)
        and start <= i["properties"]["datetime"][:10] <= end
        and (max_cloud is None or i["properties"]["eo:cloud_cover"] <= max_cloud)
    )


def test_search_returns_the_sites_items_sorted_by_time(world, server):
    for site in world.sites.itertuples():
        items = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
        assert sorted(i.id for i in items) == _truth(world, site, "2022-01-01", "2023-12-31")
        times = [(i.datetime, i.id) for i in items]
        assert times == sorted(times)


def test_cloud_filter_is_applied_on_the_client_when_the_server_cannot(world, server, catalog):
    site = next(world.sites.itertuples())
    items = search(site, "2022-01-01", "2024-12-31", catalog=catalog, max_cloud=20)
    assert items.extra_fields["minecube:search"]["cloud_filter"] == "client"  # rustac
    assert sorted(i.id for i in items) == _truth(world, site, "2022-01-01", "2024-12-31", 20)
    assert all(i.properties["eo:cloud_cover"] <= 20 for i in items)
    everything = search(site, "2022-01-01", "2024-12-31", catalog=catalog)
    assert len(items) < len(everything)


def test_search_records_its_query(world, server):
    site = world.sites.iloc[0]
    items = search(site, dt.date(2023, 1, 1), "2023-06-30", catalog=server.stac_url, max_cloud=50)
    record = items.extra_fields["minecube:search"]
    assert record["datetime"] == "2023-01-01T00:00:00Z/2023-06-30T23:59:59Z"
    assert record["collection"] == "sentinel-2-l2a"
    assert record["max_cloud"] == 50
    assert shape(record["intersects"]).equals(site.geometry)
    assert record["catalog"].startswith(server.stac_url)


def test_nothing_found_shows_the_query(server, catalog):
    far_away = box(-30.0, -50.0, -29.9, -49.9)  # South Atlantic
    with pytest.raises(NoItemsError, match=r"between 2023-01-01 and 2023-12-31 .* Widen"):
        search(far_away, "2023-01-01", "2023-12-31", catalog=catalog)


def test_bad_arguments_name_the_fix(world, catalog):
    site = world.sites.iloc[0]
    with pytest.raises(ValueError, match=r"collection 'landsat' is not in this catalogue; it has"):
        search(site, "2023-01-01", "2023-12-31", catalog=catalog, collection="landsat")
    with pytest.raises(ValueError, match="start 2023-12-31 is after end 2023-01-01; swap"):
        search(site, "2023-12-31", "2023-01-01", catalog=catalog)
    with pytest.raises(ValueError, match="end='last year' is not a date"):
        search(site, "2023-01-01", "last year", catalog=catalog)
    with pytest.raises(ValueError, match="give one site, not a table of"):
        search(world.sites, "2023-01-01", "2023-12-31", catalog=catalog)


def test_open_catalog_accepts_an_open_client(catalog):
    assert open_catalog(catalog) is catalog


def test_band_assets_of_the_demo_world_use_earth_search_keys_and_scaling(catalog):
    item = next(catalog.search(collections=["sentinel-2-l2a"], max_items=1).items())
    assets = band_assets(item)
    assert {b: a.key for b, a in assets.items()} == {
        "blue": "blue",
        "green": "green",
        "red": "red",
        "nir": "nir",
        "scl": "scl",
    }
    assert (assets["red"].scale, assets["red"].offset, assets["red"].nodata) == (1e-4, -0.1, 0)
    assert (assets["scl"].scale, assets["scl"].offset) == (1.0, 0.0)


def _planetary_computer_item(baseline: str) -> pystac.Item:
    item = pystac.Item(
        "S2A_MSIL2A_20210301", None, None, dt.datetime(2021, 3, 1), {}, collection="sentinel-2-l2a"
    )
    item.properties["s2:processing_baseline"] = baseline
    for key in ("B02", "B03", "B04", "B08", "SCL", "visual"):
        item.add_asset(key, pystac.Asset(f"https://example.com/{key}.tif"))
    return item


@pytest.mark.parametrize(("baseline", "offset"), [("05.09", -0.1), ("03.01", 0.0)])
def test_band_assets_of_planetary_computer_items(baseline, offset):
    assets = band_assets(_planetary_computer_item(baseline))
    assert [assets[b].key for b in ("blue", "green", "red", "nir", "scl")] == [
        "B02",
        "B03",
        "B04",
        "B08",
        "SCL",
    ]
    assert (assets["nir"].scale, assets["nir"].offset) == (1e-4, offset)


def test_band_assets_errors_list_what_is_there():
    item = _planetary_computer_item("05.09")
    del item.assets["B08"]
    with pytest.raises(UnknownSensorError, match=r"no asset for 'nir' .* its assets are \['B02'"):
        band_assets(item)
    with pytest.raises(ValueError, match=r"unknown band 'swir'; minecube reads"):
        band_assets(item, bands=("swir",))


def test_pgstac_filters_clouds_on_the_server_with_the_same_answer(world, pgstac_url, catalog):
    from pystac_client import Client, ConformanceClasses

    client = Client.open(pgstac_url)
    assert client.conforms_to(ConformanceClasses.QUERY) or client.conforms_to(
        ConformanceClasses.FILTER
    )
    for site in list(world.sites.itertuples())[:3]:
        on_server = search(site, "2022-01-01", "2024-12-31", catalog=client, max_cloud=20)
        assert on_server.extra_fields["minecube:search"]["cloud_filter"] in ("query", "filter")
        on_client = search(site, "2022-01-01", "2024-12-31", catalog=catalog, max_cloud=20)
        assert [i.id for i in on_server] == [i.id for i in on_client]
        assert sorted(i.id for i in on_server) == _truth(
            world, site, "2022-01-01", "2024-12-31", 20
        )


def test_pgstac_server_side_filter_is_really_applied(pgstac_url):
    """The server's own answer to a cloud query, before minecube checks it again."""
    from pystac_client import Client

    client = Client.open(pgstac_url)
    everything = list(client.search(collections=["sentinel-2-l2a"]).items())
    clear = list(
        client.search(collections=["sentinel-2-l2a"], query={"eo:cloud_cover": {"lte": 5}}).items()
    )
    assert 0 < len(clear) < len(everything)
    assert all(i.properties["eo:cloud_cover"] <= 5 for i in clear)


def test_search_retries_server_errors(world, server):
    """A proxy in front of the STAC API answers 503 twice; the search still succeeds."""
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    failures = {"left": 2, "seen": 0}

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _relay(self, method):
            if failures["left"] > 0:
                failures["left"] -= 1
                failures["seen"] += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            request = urllib.request.Request(
                server.stac_url + self.path,
                data=body,
                method=method,
                headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
            )
            with urllib.request.urlopen(request) as r:
                data = r.read().replace(server.stac_url.encode(), proxy_url.encode())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._relay("GET")

        def do_POST(self):
            self._relay("POST")

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        site = world.sites.iloc[0]
        items = search(site, "2022-01-01", "2022-12-31", catalog=proxy_url)
        failures["left"] = 2  # now fail in the middle of the search itself
        again = search(site, "2022-01-01", "2022-12-31", catalog=proxy_url)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert failures["seen"] == 4
    assert [i.id for i in again] == [i.id for i in items]
    assert sorted(i.id for i in items) == _truth(world, site, "2022-01-01", "2022-12-31")


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("https://example.com/v1/?token=s3cr3t", "https://example.com/v1/"),
        (
            "https://api.example.com/stac?subscription-key=s3cr3t&x=1",
            "https://api.example.com/stac",
        ),
        ("https://user:s3cr3t@example.com/a.tif", "https://example.com/a.tif"),
        (
            "read failed: '/vsicurl/https://acct.blob.core.windows.net/c/B04.tif?st=1&sig=s3cr3t'"
            " and s3://bucket/key.tif?X-Amz-Signature=s3cr3t#frag",
            "read failed: '/vsicurl/https://acct.blob.core.windows.net/c/B04.tif'"
            " and s3://bucket/key.tif",
        ),
    ],
)
def test_redact_strips_every_credential_and_query_string(text, kept):
    from minecube.stac import redact

    assert redact(text) == kept
    assert "s3cr3t" not in redact(text)


def _counted(url: str):
    """A client on ``url`` that counts the HTTP requests it sends."""
    sent = []
    client = open_catalog(url)
    client._stac_io.session.hooks["response"].append(lambda r, *a, **k: sent.append(r.url))
    return client, sent


def test_search_many_gives_each_site_what_search_gives_it_in_fewer_requests(
    many_world, many_server
):
    sites = many_world.sites
    client, sent = _counted(many_server.stac_url)
    grouped = search_many(sites, "2022-01-01", "2023-12-31", catalog=client, max_cloud=60)
    requests = len(sent)
    assert list(grouped) == list(sites.site_id)
    for site in sites.itertuples():
        alone = search(site, "2022-01-01", "2023-12-31", catalog=client, max_cloud=60)
        assert [i.id for i in grouped[site.site_id]] == [i.id for i in alone]
        record = grouped[site.site_id].extra_fields["minecube:search"]
        assert record["intersects"] == alone.extra_fields["minecube:search"]["intersects"]
        assert record["grouped_sites"] == 3  # the three mines of a district, one search
    per_site = (len(sent) - requests) / len(sites)
    assert requests / len(sites) < 0.5 * per_site  # grows with the districts, not the sites


def test_search_many_against_pgstac_matches_per_site_searches(world, pgstac_url):
    client = open_catalog(pgstac_url)
    # one group for the whole world: the union's answer is split back site by site
    grouped = search_many(world.sites, "2022-01-01", "2024-12-31", catalog=client, cell=720)
    for site in world.sites.itertuples():
        alone = search(site, "2022-01-01", "2024-12-31", catalog=client)
        assert [i.id for i in grouped[site.site_id]] == [i.id for i in alone]
        assert grouped[site.site_id].extra_fields["minecube:search"]["grouped_sites"] == 8
