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
from tests.conftest import refused

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


def _s2_item(
    when: dt.datetime | None = dt.datetime(2023, 6, 1), item_id: str = "S2B_T50MKE", **properties
) -> pystac.Item:
    item = pystac.Item(item_id, None, None, when, properties, collection="sentinel-2-l2a")
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


# Oracles worked out by hand: exact figures, records and messages (a user reads each message,
# and the provenance keeps each record; docs/testing.md, mutation testing).


def _evidence_case(values: dict[int, np.ndarray], n: int, rest: float = 1500.0):
    """(4, n) digital numbers: band k's values (shuffled), the other bands at ``rest``."""
    rng = np.random.default_rng(5)
    dn = np.full((4, 1, n), rest)
    for band, v in values.items():
        dn[band, 0] = rng.permutation(v)
    return dn, np.ones((1, n), bool)


def test_the_offset_evidence_figures_are_worked_out_by_hand():
    # 440 pixels: 20 not valid, 20 with a zero in band 2 (no data there), 400 clear. Band 0 has
    # exactly 5 % of them below 1000 DN (999), a hundred at 1000 (not below); band 3 has a 1.
    dn = np.full((4, 22, 20), 2000.0)
    valid = np.ones((22, 20), bool)
    valid[21] = False
    dn[2, 20] = 0
    dn[0, :1] = 999  # 20 pixels
    dn[0, 1:6] = 1000  # 100
    dn[3, 7, 7] = 1
    p1 = np.percentile([999] * 20 + [1000] * 100 + [2000] * 280, 1)
    assert dn_offset_evidence(dn, valid, 1000) == (
        False, {"clear_pixels": 400, "below_offset_fraction": 0.05, "p1_dn": round(p1, 1)}
    )  # fmt: skip
    # 1000 pixels, exactly 0.2 % below (two): carries the offset; p1 by linear interpolation
    # between the 10th and 11th smallest (index 0.01 × 999 = 9.99)
    graded = np.r_[990.0, 995.0, 1000 + 0.31 * np.arange(998)]
    assert dn_offset_evidence(*_evidence_case({1: graded}, 1000), 1000) == (
        True, {"clear_pixels": 1000, "below_offset_fraction": 0.002, "p1_dn": 1002.5}
    )  # fmt: skip
    # three below of 960 (0.3125 %): neither proof nor absence; p1 at index 9.59: 1003 + 0.59 × 0.5
    three = np.r_[[990.0] * 3, 1000 + 0.5 * np.arange(957)]
    assert dn_offset_evidence(*_evidence_case({0: three}, 960), 1000) == (
        None, {"clear_pixels": 960, "below_offset_fraction": 0.0031, "p1_dn": 1003.3}
    )  # fmt: skip
    # nothing below, but the darkest 1 % at exactly 1.3 × the offset: too bright to tell
    bright = np.r_[[1300.0] * 20, 1300 + np.arange(980)]
    assert dn_offset_evidence(*_evidence_case({0: bright, 1: bright, 2: bright, 3: bright}, 1000),
                              1000)[0] is None  # fmt: skip
    # exactly min_pixels (200) clear pixels are enough; 199 are not
    dark = np.r_[[500.0] * 40, [3000.0] * 160]
    assert dn_offset_evidence(*_evidence_case({0: dark}, 200), 1000)[0] is False
    assert dn_offset_evidence(*_evidence_case({0: dark[1:]}, 199), 1000) == (
        None, {"clear_pixels": 199}
    )  # fmt: skip


def test_asking_a_sensor_for_bands_it_lacks_names_them_and_the_bands_that_work():
    landsat = SENSORS["landsat-c2-l2"]
    declared = "['blue', 'green', 'red', 'nir', 'coastal', 'swir16', 'swir22']"
    fix = "or declare the band with register_sensor (the sensor's bands: mapping)"
    assert refused(
        UnknownSensorError, lambda: landsat.check_bands(["red", "rededge1", "ndvi"])
    ) == (
        f"sensor 'landsat-c2-l2' has no band 'rededge1' (nor ['ndvi']); it declares {declared}. "
        f"Ask for bands it has, e.g. bands=('red',), {fix}"
    )
    assert refused(UnknownSensorError, lambda: landsat.check_bands(["rededge1"])) == (
        f"sensor 'landsat-c2-l2' has no band 'rededge1'; it declares {declared}. Ask for bands "
        f"it has, e.g. bands=('blue', 'green', 'red', 'nir'), {fix}"
    )
    with pytest.raises(UnknownSensorError, match=r"^sensor 'landsat-c2-l2' has no band None;"):
        landsat.check_bands([])
    assert landsat.check_bands(["nir", "red"]) == ("nir", "red")


def test_a_sensor_from_plain_data_is_refused_naming_each_problem():
    good = {"name": "x", "title": "t", "collections": ["x"], "bands": {"red": ["B4"]},
            "resolution": 10, "scale": 1, "offset": 0}  # fmt: skip
    assert (
        refused(ValueError, lambda: Sensor.from_dict(5))
        == "a sensor is a mapping of settings, got 5"
    )
    assert refused(ValueError, lambda: Sensor.from_dict({**good, "bnds": 1})) == (
        "sensor 'x': unknown keys ['bnds']; a sensor has ['bands', 'baseline_offset', "
        "'collections', 'default_mask', 'masks', 'name', 'nodata', 'notes', 'offset', "
        "'platforms', 'resolution', 'scale', 'title']"
    )
    assert refused(
        ValueError, lambda: Sensor.from_dict({**good, "bands": {"red": 4}, "resolution": "ten"})
    ) == (
        "sensor 'x': bands.red: Input should be a valid tuple; resolution: Input should be a "
        "valid number, unable to parse string as a number"
    )


def test_to_dict_gives_plain_lists_that_read_back():
    sensor = Sensor("t", "a test", ("t", "t2"), {"red": ("B4", "red")}, {"scl": ("SCL",)},
                    "scl", 20.0, 1e-4, -0.1, 0, platforms=("tp",))  # fmt: skip
    assert sensor.to_dict() == {
        "name": "t", "title": "a test", "collections": ["t", "t2"],
        "bands": {"red": ["B4", "red"]}, "masks": {"scl": ["SCL"]}, "default_mask": "scl",
        "resolution": 20.0, "scale": 1e-4, "offset": -0.1, "nodata": 0,
        "baseline_offset": False, "platforms": ["tp"], "notes": {},
    }  # fmt: skip
    assert Sensor.from_dict(sensor.to_dict()) == sensor


def test_register_sensor_refuses_bad_layouts_naming_the_fix():
    def sensor(**changes):
        base = {"name": "bad", "title": "t", "collections": ("bad",), "bands": {"red": ("B4",)},
                "masks": {}, "default_mask": "none", "resolution": 10.0, "scale": 1e-4,
                "offset": 0.0, "nodata": None}  # fmt: skip
        return Sensor(**{**base, **changes})

    names = "(e.g. ['blue', 'green', 'red', 'nir'], or any of"
    message = refused(
        ValueError, lambda: register_sensor(sensor(bands={"ndvi": ("N",), "Red": ("B4",)}))
    )
    assert message.startswith(
        f"sensor 'bad': bands must be a non-empty mapping of lower-case band names {names}"
    )
    assert message.endswith("to asset keys; not allowed: ['ndvi', 'Red']")
    with pytest.raises(ValueError, match=r"not allowed: an empty mapping$"):
        register_sensor(sensor(bands={}))
    assert refused(ValueError, lambda: register_sensor(sensor(bands={"red": "B4"}))) == (
        "sensor 'bad': bands ['red'] need a list of asset keys to look for, "
        "e.g. {'red': ['red', 'B04']}"
    )
    assert refused(ValueError, lambda: register_sensor(sensor(masks={"cloudy": ("C",)}))) == (
        "sensor masks must be among ['scl', 'qa_pixel', 'fmask', 'none'], got ['cloudy']"
    )
    assert (
        refused(
            ValueError,
            lambda: register_sensor(sensor(masks={"scl": ("SCL",)}, default_mask="fmask")),
        )
        == "default_mask 'fmask' is not one of the sensor's masks ['scl', 'none']"
    )
    assert "bad" not in SENSORS


def _item(item_id="it", collection=None, **properties) -> pystac.Item:
    return pystac.Item(item_id, None, None, dt.datetime(2023, 6, 1), properties,
                       collection=collection)  # fmt: skip


@pytest.mark.parametrize("field", ["constellation", "platform", "eo:platform"])
def test_an_item_without_a_known_collection_is_placed_by_its_platform(field):
    assert sensor_for(_item(collection="my-archive", **{field: "Sentinel-2B"})).name == (
        "sentinel-2-l2a"
    )
    # the first field present decides
    both = _item(collection="x", constellation="landsat-9", platform="sentinel-2b")
    assert sensor_for(both).name == "landsat-c2-l2"


def test_an_unknown_item_is_refused_naming_its_collection_platform_and_the_fix():
    known = sorted(c for s in SENSORS.values() for c in s.collections)
    tail = (
        f"is not a sensor minecube knows; known collections: {known}. Add its asset names and "
        "scaling with minecube.sensors.register_sensor(Sensor(...)) (see docs/howto/catalogues.md)"
    )
    assert (
        refused(UnknownSensorError, lambda: sensor_for(_item("a", "sar-archive")))
        == f"item 'a' of collection 'sar-archive' (platform None) {tail}"
    )
    assert (
        refused(
            UnknownSensorError,
            lambda: sensor_for(_item("b", "sar-archive", platform="Sentinel-1A")),
        )
        == f"item 'b' of collection 'sar-archive' (platform 'sentinel-1a') {tail}"
    )


def test_a_missing_asset_is_named_with_the_bands_that_would_build():
    item = _item("S2B_x", "sentinel-2-l2a", **{"s2:processing_baseline": "05.09"})
    for key in ("B02", "B04"):
        item.add_asset(key, pystac.Asset(f"{key}.tif"))
    fix = (
        " this catalogue names the band differently, register its layout with "
        "minecube.sensors.register_sensor"
    )
    assert refused(
        UnknownSensorError, lambda: radiometry(item, ["blue", "green", "red"], mask="none")
    ) == (
        "item 'S2B_x' (collection 'sentinel-2-l2a', read as 'sentinel-2-l2a') has no asset for "
        "'green' (looked for ['green', 'B03', 'B03_10m']); its assets are ['B02', 'B04']. "
        f"To build without it, pass bands=('blue', 'red'); if{fix}"
    )
    assert refused(UnknownSensorError, lambda: radiometry(item, ["green"], mask="none")).endswith(
        f"its assets are ['B02', 'B04']. If{fix}"
    )


def _asset(**fields) -> pystac.Asset:
    return pystac.Asset("x.tif", extra_fields=fields)


def test_each_band_and_the_mask_keep_their_declared_radiometry():
    item = _item("S2B_MSIL2A_20230601", "sentinel-2-l2a", **{"s2:processing_baseline": "05.09"})
    item.add_asset("B02", _asset(**{"raster:bands": [{"scale": 2e-4, "nodata": 65535}]}))
    item.add_asset("B04", _asset(**{"raster:scale": 1e-4, "raster:offset": -0.1}))
    item.add_asset("B08", _asset(nodata=7))  # declares nodata only: the sensor's scale
    item.add_asset("SCL", _asset(**{"raster:bands": [{"nodata": 0}]}))
    r = radiometry(item, ["blue", "red", "nir"])
    assert r.bands == {
        "blue": band(key="B02", scale=2e-4, offset=0.0, nodata=65535),
        "red": band(key="B04", scale=1e-4, offset=-0.1, nodata=0),
        "nir": band(key="B08", scale=1e-4, offset=0.0, nodata=7),
        "scl": band(key="SCL", scale=1.0, offset=0.0, nodata=0),
    }
    assert r.source == "item"  # blue declared a scale though nir after it did not
    assert r.record() == {
        "sensor": "sentinel-2-l2a", "scale": 2e-4, "offset": 0.0, "nodata": 65535,
        "source": "item", "baseline": "05.09", "baseline_from": "s2:processing_baseline",
        "notes": [], "doubt": None,
    }  # fmt: skip
    only_offset = _item(collection="landsat-c2-l2")
    for key in ("red", "qa_pixel"):
        only_offset.add_asset(key, _asset(**{"raster:offset": -0.2}))
    r = radiometry(only_offset, ["red"])
    assert r.bands["red"] == band(key="red", scale=1.0, offset=-0.2, nodata=0)
    assert r.bands["qa_pixel"] == band(key="qa_pixel", scale=1.0, offset=0.0, nodata=None)
    assert list(band_assets(only_offset, ("red",))) == ["red"]  # no mask asked: none
    assert list(band_assets(only_offset, ("red", "qa_pixel"))) == ["red", "qa_pixel"]


def band(**fields):
    from minecube.sensors import BandAsset

    return BandAsset(**fields)


@pytest.mark.parametrize(
    ("properties", "item_id", "expected"),
    [
        ({"sentinel:processing_baseline": "2.09"}, "x", ("02.09", "sentinel:processing_baseline")),
        ({"processing:version": "05.10"}, "x", ("05.10", "processing:version")),
        ({"s2:granule_id": "S2A_OPER_MSI_L2A_TL_2BPS_N05.09_01"}, "x", ("05.09", "s2:granule_id")),
        ({}, "S2B_MSIL2A_20230610T100559_N0509_R022_T33UUP", ("05.09", "id")),
        ({"s2:product_uri": "no baseline here"}, "S2B_T33UUP_N0400", ("04.00", "id")),
        ({}, "S2B_T33UUP", (None, None)),
    ],
)
def test_the_baseline_is_read_from_each_field_and_the_id(properties, item_id, expected):
    from minecube.sensors import _baseline

    assert _baseline(_item(item_id, "sentinel-2-l2a", **properties)) == expected


def test_the_sentinel2_offset_notes_say_what_decided_it():
    r = radiometry(_s2_item(**{"s2:processing_baseline": "03.01"}))
    assert (r.offset, r.source, r.notes) == (
        0.0, "baseline", ("processing baseline 03.01 (s2:processing_baseline): DN carry no offset",)
    )  # fmt: skip
    r = radiometry(_s2_item(**{"processing:version": "04.00"}))
    assert (r.offset, r.notes) == (
        -0.1, ("processing baseline 04.00 (processing:version): DN carry +1000",)
    )  # fmt: skip
    assert r.bands["nir"] == band(key="B08", scale=1e-4, offset=-0.1, nodata=0)
    assert r.bands["scl"] == band(key="SCL", scale=1.0, offset=0.0, nodata=None)  # no offset
    guess = "no processing baseline in the item (looked in s2:processing_baseline, "
    guess += "processing:version and the product id): offset "
    late = _s2_item(when=None, start_datetime="2022-01-25T00:00:00Z",
                    end_datetime="2022-01-26T00:00:00Z")  # fmt: skip
    r = radiometry(late)
    assert (r.offset, r.source, r.doubt, r.notes) == (
        -0.1, "acquisition date", "no processing baseline in the item: the offset is a guess",
        (guess + "-0.1 assumed from the acquisition date (on or after 2022-01-25)",),
    )  # fmt: skip
    early = radiometry(_s2_item(when=dt.datetime(2022, 1, 24, 23, 59)))
    assert early.notes == (guess + "0.0 assumed from the acquisition date (before 2022-01-25)",)


@pytest.mark.parametrize("field", ["earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"])
def test_an_archive_that_removed_the_offset_says_so(field):
    declared = _s2_item(**{field: True})
    for key in ("B02", "B03", "B04", "B08"):
        declared.assets[key].extra_fields["raster:bands"] = [{"scale": 1e-4, "offset": -0.1}]
    r = radiometry(declared)
    assert (r.offset, r.source, r.baseline_from, r.doubt, r.notes) == (
        0.0, "item", None, None,
        ("earthsearch:boa_offset_applied is true: the offset -0.1 declared in raster:bands was "
         "already removed from the files",),
    )  # fmt: skip
    assert r.bands["scl"] == band(key="SCL", scale=1.0, offset=0.0, nodata=None)
    contradicted = radiometry(_s2_item(item_id="S2B_N0400_T33UUP", **{field: True}))
    assert (contradicted.offset, contradicted.notes) == (0.0, ())
    assert contradicted.doubt == (
        "earthsearch:boa_offset_applied is true, but processing baseline 04.00 (id) writes "
        "files with +1000 DN"
    )
    assert radiometry(_s2_item(item_id="S2B_N0399_T33UUP", **{field: True})).doubt is None


def _no_compute(*args, **kwargs):
    raise AssertionError("computed where it should stay lazy")


def test_masks_of_labelled_layers_match_plain_arrays():
    import dask
    import xarray as xr

    scl = np.array([4.0, 9.0, 0.0, np.nan, 5.0, 3.0])  # vegetation, cloud, no data, none, …
    qa = np.array([21824.0, 22280.0, 1.0, np.nan, 21824.0, 0.0])
    fmask = np.array([0.0, 2.0, 255.0, np.nan, 64.0, 16.0])  # clear, cloud, fill, none, water, snow
    cases = {"scl": (scl, [1, 0, 0, 0, 1, 0]), "qa_pixel": (qa, [1, 0, 0, 0, 1, 1]),
             "fmask": (fmask, [1, 0, 0, 0, 1, 0])}  # fmt: skip
    for mask, (layer, expected) in cases.items():
        labelled = mask_valid(mask, xr.DataArray(layer, dims="x"))
        assert isinstance(labelled, xr.DataArray)
        assert labelled.values.tolist() == [bool(v) for v in expected]
        assert mask_valid(mask, layer).tolist() == [bool(v) for v in expected]
    assert mask_valid("scl", xr.DataArray(scl, dims="x"), scl_codes=(4,)).values.tolist() == [
        False, True, True, False, True, True
    ]  # fmt: skip
    for mask, (layer, expected) in cases.items():  # lazy stays lazy: nothing is computed
        with dask.config.set(scheduler=_no_compute):
            lazy = mask_valid(mask, xr.DataArray(layer, dims="x").chunk(2))
        assert lazy.chunks == ((2, 2, 2),)
        assert lazy.values.tolist() == [bool(v) for v in expected]
    assert (
        refused(ValueError, lambda: mask_valid("cloudless", scl))
        == "mask='cloudless' is not one of ['scl', 'qa_pixel', 'fmask', 'none']"
    )


def test_an_item_gives_the_default_bands_it_has_assets_for():
    three = _s2_item()
    del three.assets["B08"]
    assert SENSORS["sentinel-2-l2a"].bands_of(three) == ("blue", "green", "red")
    assert SENSORS["sentinel-2-l2a"].bands_of(_s2_item()) == ("blue", "green", "red", "nir")


def test_read_sensors_names_the_file_and_each_problem(tmp_path):
    from minecube.sensors import read_sensors

    sensor = {"name": "rs", "title": "t", "collections": ["rs"], "bands": {"red": ["B4"]},
              "resolution": 10, "scale": 1, "offset": 0}  # fmt: skip
    missing = tmp_path / "none.yaml"
    assert (
        refused(FileNotFoundError, lambda: read_sensors(missing))
        == f"sensor file {str(missing)!r} does not exist"
    )
    (tmp_path / "one.yaml").write_text("name: rs\n")
    assert (
        refused(ValueError, lambda: read_sensors(tmp_path / "one.yaml"))
        == f"{tmp_path / 'one.yaml'}: expected a list of sensors, got dict"
    )
    assert (
        refused(ValueError, lambda: read_sensors([5]))
        == "the sensors: a sensor is a mapping of settings, got 5"
    )
    assert (
        refused(ValueError, lambda: read_sensors([sensor, {**sensor, "name": "rs2"}, sensor]))
        == "the sensors: the sensors ['rs'] are defined more than once"
    )
    before = dict(SENSORS)
    try:
        assert [s.name for s in read_sensors({"sensors": [sensor]})] == ["rs"]
        with pytest.raises(ValueError, match="registered already"):
            read_sensors([sensor])
        assert [s.name for s in read_sensors([Sensor.from_dict(sensor)], replace=True)] == ["rs"]
    finally:
        SENSORS.clear()
        SENSORS.update(before)


def test_installed_packages_register_sensors_through_entry_points(tmp_path, monkeypatch):
    """A real distribution on sys.path: importlib.metadata finds its entry points."""
    import sys
    import textwrap

    from minecube.sensors import SensorPluginWarning, _load_entry_points

    sensor = {"name": "ep-s2", "title": "t", "collections": ["ep-s2"], "bands": {"red": ["B4"]},
              "resolution": 10, "scale": 1, "offset": 0}  # fmt: skip
    (tmp_path / "ep_sensors.py").write_text(textwrap.dedent(f"""
        from minecube.sensors import Sensor
        ONE = Sensor.from_dict({sensor | {"name": "ep-one", "collections": ["ep-one"]}!r})
        def several():
            return [{sensor!r}, ONE]
        BROKEN = [{{"name": "ep-broken"}}]
        """))  # fmt: skip
    info = tmp_path / "ep_sensors-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-sensors\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[minecube.sensors]\none = ep_sensors:ONE\nseveral = ep_sensors:several\n"
        "broken = ep_sensors:BROKEN\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    before = dict(SENSORS)
    try:
        SENSORS["ep-s2"] = SENSORS["landsat-c2-l2"]  # registered before: replaced
        with pytest.warns(SensorPluginWarning) as caught:
            _load_entry_points()
        assert SENSORS["ep-s2"].bands == {"red": ("B4",)}
        assert SENSORS["ep-one"].collections == ("ep-one",)
        (message,) = [str(w.message) for w in caught]
        assert [w.filename for w in caught] == [__file__]  # the first line outside minecube
        assert message.startswith(
            "the minecube.sensors entry point 'broken' (ep_sensors:BROKEN) of an installed "
            "package could not be registered: the sensors: sensor 'ep-broken': "
        )
    finally:
        SENSORS.clear()
        SENSORS.update(before)
        sys.modules.pop("ep_sensors", None)
