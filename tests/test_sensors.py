"""Sensors and catalogues on recorded real metadata: band mapping, radiometry, masks, load plans.

The items under tests/data/stac are real catalogue responses (see tests/data/README.md). They are
loaded into a real STAC API (rustac) on loopback, searched with minecube.stac.search and turned
into load plans (minecube.cube.plan), which read no pixel.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pystac
import pytest
from shapely.geometry import box, shape

from minecube.cube import CubeError, plan
from minecube.sensors import (
    SENSORS,
    Sensor,
    UnknownSensorError,
    band_assets,
    dn_offset_evidence,
    mask_valid,
    radiometry,
    register_sensor,
    sensor_for,
)
from minecube.sites import utm_epsg
from minecube.stac import search

DATA = Path(__file__).parent / "data" / "stac"


def _features(name: str) -> list[dict]:
    d = json.loads((DATA / name).read_text())
    return d if isinstance(d, list) else d.get("features", [d])


def _items(name: str) -> list[pystac.Item]:
    return [pystac.Item.from_dict(f) for f in _features(name)]


# file → (sensor, asset keys for blue green red nir + mask, scale, offset, source, baseline)
RECORDED = {
    "earth-search-v1-sentinel-2-l2a.json": (
        "sentinel-2-l2a",
        ("blue", "green", "red", "nir", "scl"),
        1e-4,
        0.0,  # boa_offset_applied: true wins over raster:bands' −0.1
        "item",
        "05.09",
    ),
    "S2A_28QCH_20200714_0_L2A.json": (
        "sentinel-2-l2a",
        ("B02", "B03", "B04", "B08", "SCL"),
        1e-4,
        0.0,
        "baseline",
        "02.14",  # from sentinel:product_id …_N0214_…
    ),
    "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json": (
        "sentinel-2-l2a",
        ("B02", "B03", "B04", "B08", "SCL"),
        1e-4,
        0.0,
        "baseline",
        "02.12",
    ),
    "sentinel-2-l2a-pc.json": (
        "sentinel-2-l2a",
        ("B02", "B03", "B04", "B08", "SCL"),
        1e-4,
        -0.1,
        "baseline",
        "05.10",
    ),
    "cdse-sentinel-2-l2a-trimmed.json": (
        "sentinel-2-l2a",
        ("B02_10m", "B03_10m", "B04_10m", "B08_10m", "SCL_20m"),
        1e-4,
        -0.1,
        "item",
        "05.11",
    ),
    "landsat-c2-l2-pc.json": (
        "landsat-c2-l2",
        ("blue", "green", "red", "nir08", "qa_pixel"),
        2.75e-5,
        -0.2,
        "item",
        None,
    ),
    "LE07_L2SP_044033_20210329_20210424_02_T1_SR.json": (
        "landsat-c2-l2",
        ("blue", "green", "red", "nir08", "qa_pixel"),
        2.75e-5,
        -0.2,
        "sensor default",
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_recorded_item_maps_with_its_own_radiometry(name):
    sensor, keys, scale, offset, source, baseline = RECORDED[name]
    items = _items(name)
    assert items
    for item in items:
        r = radiometry(item)
        assert r.sensor == sensor == sensor_for(item).name
        assert tuple(b.key for b in r.bands.values()) == keys
        for band in ("blue", "green", "red", "nir"):
            assert r.bands[band].scale == pytest.approx(scale)
            assert r.bands[band].offset == pytest.approx(offset)
        assert r.source == source
        assert r.baseline == baseline
        json.dumps(r.record())


def test_earth_search_conflict_is_resolved_and_explained():
    item = _items("earth-search-v1-sentinel-2-l2a.json")[0]
    assert item.assets["red"].extra_fields["raster:bands"][0]["offset"] == -0.1
    assert item.properties["earthsearch:boa_offset_applied"] is True
    r = radiometry(item)
    assert r.offset == 0.0
    assert "boa_offset_applied is true" in r.notes[0]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sentinel-1-rtc-pc.json", r"collection 'sentinel-1-rtc' .* is not a sensor minecube"),
        ("LC08_L2SR_081119_20200101_20200823_02_T2.json", r"no asset for 'blue' .*SR_B2\.TIF"),
    ],
)
def test_other_recorded_items_are_refused_naming_the_collection(name, message):
    item = _items(name)[0]
    with pytest.raises(UnknownSensorError, match=message) as info:
        radiometry(item)
    assert "register_sensor" in str(info.value)
    assert item.collection_id in str(info.value)


def test_a_catalogue_layout_can_be_registered():
    item = _items("LC08_L2SR_081119_20200101_20200823_02_T2.json")[0]
    landsat = SENSORS["landsat-c2-l2"]
    old = Sensor(
        "landsat-c2l2-sr-2020",
        "USGS landsat-c2l2-sr, 2020 layout (OLI)",
        collections=("landsat-c2l2-sr",),
        bands={
            "blue": ("SR_B2.TIF",),
            "green": ("SR_B3.TIF",),
            "red": ("SR_B4.TIF",),
            "nir": ("SR_B5.TIF",),
        },
        masks={"qa_pixel": ("QA_PIXEL.TIF",)},
        default_mask="qa_pixel",
        resolution=30.0,
        scale=landsat.scale,
        offset=landsat.offset,
        nodata=0,
    )
    SENSORS.pop("landsat-c2-l2")
    try:
        register_sensor(old)
        r = radiometry(item)
        assert r.sensor == "landsat-c2l2-sr-2020"
        assert r.bands["nir"].key == "SR_B5.TIF"
        assert r.bands["qa_pixel"].key == "QA_PIXEL.TIF"
        with pytest.raises(ValueError, match="registered already"):
            register_sensor(old)
        # any set of bands, one of them too; names must be lower-case and not a mask's
        one = register_sensor(Sensor("x", "x", (), {"red": ("B4",)}, {}, "none", 30, 1, 0, 0))
        assert one.default_bands == ("red",)
        SENSORS.pop("x")
        for bad in ({"Red": ("B4",)}, {"scl": ("SCL",)}, {}, {"red": ()}):
            with pytest.raises(ValueError, match="bands"):
                register_sensor(Sensor("x", "x", (), bad, {}, "none", 30, 1, 0, 0))
    finally:
        SENSORS.pop("landsat-c2l2-sr-2020", None)
        SENSORS["landsat-c2-l2"] = landsat


def test_baseline_is_read_from_every_place_catalogues_put_it():
    def item(when=dt.datetime(2023, 5, 1), **props):
        i = pystac.Item("S2A_X", None, None, when, props, collection="sentinel-2-l2a")
        for key in ("B02", "B03", "B04", "B08", "SCL"):
            i.add_asset(key, pystac.Asset(f"{key}.tif"))
        return i

    cases = [
        ({"s2:processing_baseline": "04.00"}, "04.00", -0.1),
        ({"processing:version": "05.11"}, "05.11", -0.1),
        ({"sentinel:product_id": "S2A_MSIL2A_20200714T115221_N0214_R123_T28QCH_2"}, "02.14", 0),
        ({"s2:product_uri": "S2B_MSIL2A_20230610T100559_N0509_R022_T33UUP_2.SAFE"}, "05.09", -0.1),
        ({"s2:datatake_id": "GS2B_20190629T212529_012081_N02.12"}, "02.12", 0.0),
    ]
    for props, baseline, offset in cases:
        r = radiometry(item(**props))
        assert (r.baseline, r.offset, r.source) == (baseline, offset, "baseline"), props
    unknown = radiometry(item())  # nothing anywhere: the date decides, and it says so
    assert (unknown.source, unknown.offset) == ("acquisition date", -0.1)
    assert "no processing baseline" in unknown.notes[0]
    # baseline 04.00 from 25 January 2022 (ESA): the date fallback on both sides of it
    utc = dt.UTC
    for when, offset in [
        (dt.datetime(2021, 6, 1, tzinfo=utc), 0.0),
        (dt.datetime(2022, 1, 24, 23, 59, 59, tzinfo=utc), 0.0),
        (dt.datetime(2022, 1, 25, 0, 0, tzinfo=utc), -0.1),
        (dt.datetime(2022, 6, 1, tzinfo=utc), -0.1),
    ]:
        guessed = radiometry(item(when))
        assert (guessed.source, guessed.offset) == ("acquisition date", offset), when


def test_masks_are_a_choice_and_a_missing_one_lists_the_options():
    item = _items("sentinel-2-l2a-pc.json")[0]
    assert "SCL" in band_assets(item, ("red", "scl"))["scl"].key
    assert list(radiometry(item, mask="none").bands) == ["blue", "green", "red", "nir"]
    with pytest.raises(ValueError, match=r"mask='qa_pixel' is not available .* \['scl', 'none'\]"):
        radiometry(item, mask="qa_pixel")
    del item.assets["SCL"]
    with pytest.raises(ValueError, match=r"no 'scl' mask asset .* mask='none'"):
        radiometry(item)


def test_mask_bits_match_the_products_definitions():
    # Landsat 8-9 C2 QA_PIXEL words as the USGS product guide lists them: 21824 clear land,
    # 21952 clear water, 22280 cloud (high confidence), 23888 cloud shadow, 54596 high cirrus,
    # 30048 snow, 1 fill.
    words = np.array([21824, 21952, 22280, 23888, 54596, 30048, 1, np.nan])
    assert mask_valid("qa_pixel", words).tolist() == [True, True] + [False] * 6
    # HLS Fmask: 0 clear, 32 water, 2 cloud, 8 shadow, 16 snow, 4 adjacent, 64 aerosol low, 255
    fmask = np.array([0, 32, 64, 2, 8, 16, 4, 255])
    assert mask_valid("fmask", fmask).tolist() == [True, True, True] + [False] * 5
    # Sentinel-2 L2A scene classification, every code as ESA's L2A product specification
    # defines it, and whether a pixel of it is a valid observation of the ground
    esa_scl = {
        0: ("no data", False),
        1: ("saturated or defective", False),
        2: ("dark area pixels (topographic shadow)", True),
        3: ("cloud shadows", False),
        4: ("vegetation", True),
        5: ("not vegetated", True),
        6: ("water", True),
        7: ("unclassified", True),
        8: ("cloud medium probability", False),
        9: ("cloud high probability", False),
        10: ("thin cirrus", False),
        11: ("snow or ice", True),
    }
    codes = np.array(list(esa_scl))
    expected = [keep for _, keep in esa_scl.values()]
    assert mask_valid("scl", codes).tolist() == expected, dict(zip(codes, expected, strict=True))


def test_the_offset_evidence_reads_the_darkest_pixels():
    rng = np.random.default_rng(1)
    valid = np.ones((60, 60), bool)
    vegetation = rng.uniform(0.01, 0.35, (4, 60, 60)) / 1e-4
    assert dn_offset_evidence(vegetation, valid, 1000)[0] is False
    assert dn_offset_evidence(vegetation + 1000, valid, 1000)[0] is True
    desert = rng.uniform(0.2, 0.5, (4, 60, 60)) / 1e-4  # nothing dark: cannot tell
    assert dn_offset_evidence(desert, valid, 1000)[0] is None
    assert dn_offset_evidence(vegetation, np.zeros((60, 60), bool), 1000)[0] is None


def _s2_item(when: dt.datetime, **properties) -> pystac.Item:
    item = pystac.Item("S2B_T50MKE", None, None, when, properties, collection="sentinel-2-l2a")
    for key in ("B02", "B03", "B04", "B08", "SCL"):
        item.add_asset(key, pystac.Asset(f"{key}.tif"))
    return item


def test_only_proof_overrules_an_explicit_baseline():
    """Pixels below 1000 DN prove there is no offset; a bright scene without them only
    suggests one, and cannot overrule an explicit baseline (it may a guess or a contradiction)."""
    from minecube.cube import _decide

    rng = np.random.default_rng(2)
    valid = np.ones((60, 60), bool)
    desert = rng.uniform(1100, 4000, (4, 60, 60))  # uniform bright DN, like an arid mine
    carries, figures = dn_offset_evidence(desert, valid, 1000)
    assert carries is True  # what the pixels alone suggest
    figures["carries_offset"] = carries
    old = radiometry(_s2_item(dt.datetime(2020, 6, 1), **{"s2:processing_baseline": "02.14"}))
    r, rule, why = _decide(old, figures)
    assert (r.offset, r.source, rule) == (0.0, "baseline", "metadata")
    assert why.startswith("kept offset 0.0 (baseline)")
    assert "bright scene" in why
    guessed = radiometry(_s2_item(dt.datetime(2021, 6, 1)))  # no baseline: a guess
    assert guessed.doubt
    assert guessed.offset == 0.0
    r, rule, _ = _decide(guessed, figures)
    assert (r.offset, r.source, rule) == (-0.1, "scene check", "pixels, metadata in doubt")
    contradicting = radiometry(_s2_item(dt.datetime(2023, 6, 1), **{
        "s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}))  # fmt: skip
    assert contradicting.offset == 0.0
    assert "05.09" in contradicting.doubt
    r, rule, why = _decide(contradicting, figures)
    assert (r.offset, rule) == (-0.1, "pixels, metadata in doubt")
    assert "05.09" in why
    # dark pixels below 1000 DN are proof: they overrule even an explicit baseline
    dark = rng.uniform(100, 3000, (4, 60, 60))
    carries, figures = dn_offset_evidence(dark, valid, 1000)
    new = radiometry(_s2_item(dt.datetime(2023, 6, 1), **{"s2:processing_baseline": "05.09"}))
    assert new.offset == -0.1
    assert new.doubt is None
    r, rule, _ = _decide(new, {**figures, "carries_offset": carries})
    assert (r.offset, r.source, rule) == (0.0, "scene check", "pixels below the offset")
    r, rule, why = _decide(old, {**figures, "carries_offset": carries})
    assert (r.offset, rule, why) == (0.0, "metadata, confirmed by the pixels", "")


@pytest.fixture(scope="module")
def real_catalog(tmp_path_factory):
    """The recorded Sentinel-2 and Landsat items in a real STAC API (rustac) on loopback."""
    from minecube.demo.serve import _find_rustac, _free_port, _stop, _wait_for

    tmp = tmp_path_factory.mktemp("real-stac")
    features = []
    for name in RECORDED:
        for f in _features(name):
            f = {**f, "links": []}
            features.append(f)
    (tmp / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    port = _free_port("127.0.0.1")
    with open(tmp / "rustac.log", "wb") as log:
        process = subprocess.Popen(
            [_find_rustac(None), "serve", "--addr", f"127.0.0.1:{port}", str(tmp / "items.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            assert _wait_for(f"{url}/collections", process), (tmp / "rustac.log").read_text()
            yield url
        finally:
            _stop(process)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_served_real_items_are_found_and_planned(real_catalog, name):
    sensor, keys, _scale, offset, _, _ = RECORDED[name]
    first = _features(name)[0]
    footprint = shape(first["geometry"])
    c = footprint.representative_point()
    site = box(c.x - 0.01, c.y - 0.01, c.x + 0.01, c.y + 0.01)
    day = first["properties"]["datetime"][:10]
    found = search(site, day, day, catalog=real_catalog, collection=first["collection"])
    assert first["id"] in [i.id for i in found]
    p = plan(site, [i for i in found if i.id == first["id"]])
    assert p.sensor.name == sensor
    assert p.keys == keys
    assert p.grid.resolution == SENSORS[sensor].resolution
    assert p.grid.epsg == utm_epsg(c.x, c.y)  # the site's own zone, whatever the scene's
    assert p.radiometry[0].bands["red"].offset == pytest.approx(offset)
    assert p.mask == SENSORS[sensor].default_mask


def test_a_plan_refuses_mixed_sensors():
    s2 = _items("sentinel-2-l2a-pc.json")[0]
    landsat = _items("landsat-c2-l2-pc.json")[0]
    site = shape(s2.geometry).representative_point().buffer(0.01)
    with pytest.raises(CubeError, match=r"several sensors \['landsat-c2-l2', 'sentinel-2-l2a'\]"):
        plan(site, [s2, landsat])


# --- sensors of any band set, registered for good ------------------------------------------


def test_sensors_register_from_yaml_the_run_configuration_and_entry_points(tmp_path):
    import sys
    import textwrap

    from minecube.pipeline import ConfigError, load_config
    from minecube.sensors import read_sensors
    from tests.conftest import FILES

    before = dict(SENSORS)  # the session's fixtures may have registered these already
    try:
        read_sensors(FILES / "sensors.yaml", replace=True)
        assert SENSORS["ee-s2-rgb"].default_bands == ("blue", "green", "red")
        assert SENSORS["eolearn-s2-ndvi"].bands == {"ndvi_l1c": ("ndvi",)}
        with pytest.raises(ValueError, match="registered already"):
            read_sensors(FILES / "sensors.yaml")
    finally:
        SENSORS.clear()
        SENSORS.update(before)
    base = {"sites": "s.geojson", "catalog": "x", "start": "2022-01-01", "end": "2022-12-31",
            "model": "m"}  # fmt: skip
    sensor = {"name": "cfg-s2", "title": "t", "collections": ["cfg-s2"], "resolution": 10,
              "bands": {"red": ["B4"], "swir16": ["B11"]}, "scale": 1e-4, "offset": 0}  # fmt: skip
    assert load_config({**base, "sensors": [sensor]}).sensors[0]["name"] == "cfg-s2"
    assert "cfg-s2" not in SENSORS  # checked, registered only by run()
    with pytest.raises(ConfigError, match=r"sensors.*unknown keys \['bnds'\]"):
        load_config({**base, "sensors": [{**sensor, "bnds": {}}]})
    with pytest.raises(ConfigError, match=r"sensors.*resolution"):
        load_config({**base, "sensors": [{**sensor, "resolution": "ten"}]})
    with pytest.raises(ConfigError, match=r"sensors.*\['cfg-s2'\] are defined more than once"):
        load_config({**base, "sensors": [sensor, sensor]})
    # a package declares its sensors in the minecube.sensors entry-point group
    (tmp_path / "my_sensors.py").write_text(textwrap.dedent(f"""
        def sensors():
            return [{sensor | {"name": "plugin-s2", "collections": ["plugin-s2"]}!r}]
        """))  # fmt: skip
    info = tmp_path / "my_sensors-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-sensors\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[minecube.sensors]\nmine = my_sensors:sensors\n")
    code = "from minecube.sensors import SENSORS; print(SENSORS['plugin-s2'].bands)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}, check=True)  # fmt: skip
    assert out.stdout.strip() == "{'red': ('B4',), 'swir16': ('B11',)}"


def test_the_scene_check_runs_for_every_sensor_of_the_offset_convention(tmp_path):
    """Real Sentinel-2 pixels (ukis-csmask's scene, no +1000 DN offset) from a registered
    sensor that follows the baseline convention: dated 2023, the offset is assumed −0.1 and
    must be corrected by the pixels, as for the built-in Sentinel-2 (it was only for it)."""
    import rasterio

    from minecube.cube import RadiometryWarning, build
    from minecube.stac import items_from_files

    reflectance = np.load(Path(__file__).parent / "data/pixels/ukis-csmask-sentinel2.npz")["img"]
    dn = np.round(reflectance.astype("float64") * 10000).astype("uint16")  # (y, x, band)
    transform = rasterio.transform.from_origin(500000, 6000000, 10, 10)  # placed, not located
    for i, key in enumerate(("B02", "B03", "B04", "B08")):
        with rasterio.open(
            tmp_path / f"scene_20230610_{key}.tif",
            "w",
            driver="GTiff",
            width=512,
            height=512,
            count=1,
            dtype="uint16",
            nodata=0,
            crs="EPSG:32633",
            transform=transform,
            tiled=True,
        ) as f:
            f.write(dn[..., i], 1)  # fmt: skip
    s2 = SENSORS["sentinel-2-l2a"]
    register_sensor(Sensor("my-s2", "our archive", ("my-s2",), s2.bands, {}, "none", 10.0,
                           1e-4, 0.0, 0, baseline_offset=True))  # fmt: skip
    try:
        items = items_from_files(tmp_path / "scene_*.tif", sensor="my-s2")
        site = shape(items[0].geometry).buffer(-0.01)
        with pytest.warns(RadiometryWarning, match="corrected to offset 0.0"):
            cube = build(site, items, composite="year")
        record = json.loads(cube.attrs["radiometry"])[items[0].id]
        assert record["source"] == "scene check"
        assert record["offset"] == 0.0
        import xarray as xr

        centres = {"y": 6000000 - 5 - 10 * np.arange(512), "x": 500000 + 5 + 10 * np.arange(512)}
        source = xr.DataArray(dn[..., 2], dims=("y", "x"), coords=centres)
        expected = source.sel(y=cube.y, x=cube.x).values.astype("float64")
        got = cube.reflectance.sel(band="red").values[0]
        clear = expected > 0
        np.testing.assert_allclose(got[clear], expected[clear] * 1e-4, rtol=1e-5)
    finally:
        SENSORS.pop("my-s2")
