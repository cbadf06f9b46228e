"""STAC out: store items and collections, model MLM items, static catalogues — validated offline
against the extensions' own JSON schemas (tests/data/stac-schemas) and opened with xpystac."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from pystac.validation import JsonSchemaSTACValidator, validate_dict

from minecube.catalog import CatalogError, publish, read_item
from minecube.chips import Normalisation
from minecube.classes import DEFAULT_CLASSES
from minecube.cli import main
from minecube.cube import open_cube
from minecube.models import CheckpointError, card_for, create, load, save
from minecube.outputs import OutputExistsError
from minecube.segment import open_predictions, segment_to_zarr
from minecube.store import check

SCHEMAS = Path(__file__).parent / "data" / "stac-schemas"
SITES = ("hunter-coal", "sudbury-nickel")


@pytest.fixture(scope="module")
def validator():
    """pystac's JSON-schema validator with every schema read from tests/data: a schema it
    would have to fetch fails the test (no network here), so each one used is checked."""
    v = JsonSchemaSTACValidator()
    for path in SCHEMAS.glob("*.json"):
        name, version = path.stem.rsplit("-", 1)
        uri = (
            f"https://proj.org/schemas/{version}/projjson.schema.json"
            if name == "projjson"
            else f"https://stac-extensions.github.io/{name}/{version}/schema.json"
        )
        v.schema_cache[uri] = json.loads(path.read_text())
    return v


def _valid(path: Path | str, validator) -> list[str]:
    """The schemas a STAC file was validated against (it raises if it is not valid)."""
    d = json.loads(Path(path).read_text())
    checked = validate_dict(d, href=str(path), validator=validator)
    assert set(d.get("stac_extensions", [])) <= set(checked)  # every extension it names
    return checked


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = create("fpn", encoder_name="resnet18", in_channels=4).eval()
    norm = Normalisation(("red", "green", "blue", "nir"), (0.08,) * 4, (0.04,) * 4)
    model.card = card_for(model, bands=norm.bands, normalisation=norm, schema=DEFAULT_CLASSES)
    return save(model, tmp_path_factory.mktemp("catalog") / "fpn")


@pytest.fixture(scope="module")
def predictions(lab, model_path, tmp_path_factory):
    store = tmp_path_factory.mktemp("catalog") / "predictions.zarr"
    for site in SITES:
        cube = lab["cubes"][site].isel(time=[0, 1])
        segment_to_zarr(cube, model_path, store, input_dims={"y": 96, "x": 96}, progress=False)
    return store


def test_store_items_validate_and_open_as_minecube_does(lab, predictions, validator):
    """Each group's item, written with its data, validates against the projection, datacube,
    processing, xarray-assets and classification schemas, and its Zarr asset opened by
    xpystac gives the arrays of open_cube / open_predictions."""
    store = lab["store"]
    for kind, path, groups in (("cubes", store, lab["cubes"]), ("predictions", predictions, SITES)):
        stac = Path(path) / ".minecube" / "stac"
        _valid(stac / "collection.json", validator)
        collection = pystac.Collection.from_file(str(stac / "collection.json"))
        items = {i.id: i for i in collection.get_items()}
        assert sorted(items) == sorted(groups)
        for site in groups:
            checked = _valid(stac / "items" / f"{site}.json", validator)
            assert any("datacube" in c for c in checked)
            item = items[site]
            item.make_asset_hrefs_absolute()
            assert Path(item.assets["data"].href) == Path(path).absolute()
            ds = xr.open_dataset(item.assets["data"])  # xpystac's backend
            props = item.properties
            assert props["proj:code"] == f"EPSG:{ds.rio.crs.to_epsg()}"
            assert props["proj:shape"] == [ds.sizes["y"], ds.sizes["x"]]
            assert props["cube:dimensions"]["time"]["values"][0].startswith(
                str(ds.time.values[0])[:10]
            )
            if kind == "cubes":
                ours = open_cube(path, site)
                for name in ours.data_vars:
                    np.testing.assert_array_equal(ds[name].values, ours[name].values)
                assert props["cube:dimensions"]["band"]["values"] == list(ours.band.values)
                assert any(link.rel == "derived_from" for link in item.links)  # source items
            else:
                ours = open_predictions(path, site)
                assert ds.prediction.dtype == np.uint8
                np.testing.assert_array_equal(ds.prediction.values, ours.values)
                classes = props["classification:classes"]
                assert [c["value"] for c in classes] == [0, *DEFAULT_CLASSES.ids]
                assert [c["name"] for c in classes[1:]] == DEFAULT_CLASSES.names
                assert classes[0]["nodata"] is True
                (model_link,) = [link for link in item.links if link.rel == "derived_from"]
                assert model_link.href.endswith("fpn.mlm.json")
        assert check(path).ok  # the STAC files do not disturb the store's own checks


def test_model_mlm_item_validates_and_loads(model_path, validator, tmp_path):
    """save() writes a Machine Learning Model item that validates (MLM, file, eo and
    classification schemas); load() takes it and rebuilds the same model, and refuses weights
    that do not match its checksum."""
    item_path = Path(str(model_path).removesuffix(".safetensors") + ".mlm.json")
    checked = _valid(item_path, validator)
    assert any("/mlm/" in c for c in checked)
    d = json.loads(item_path.read_text())
    props = d["properties"]
    assert props["mlm:input"][0]["bands"] == ["red", "green", "blue", "nir"]
    assert [s["mean"] for s in props["mlm:input"][0]["value_scaling"]] == [0.08] * 4
    out = props["mlm:output"][0]["classification:classes"]
    assert [c["name"] for c in out] == DEFAULT_CLASSES.names
    (weights,) = [a for a in d["assets"].values() if "mlm:model" in a["roles"]]
    assert weights["file:size"] == model_path.stat().st_size
    original, loaded = load(model_path), load(item_path)
    assert loaded.card == original.card
    for a, b in zip(original.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / item_path.name).write_text(item_path.read_text())
    with pytest.raises(CheckpointError, match="missing"):
        load(copy / item_path.name)
    data = bytearray(model_path.read_bytes())
    data[-1] ^= 1
    (copy / model_path.name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load(copy / item_path.name)
    (copy / "other.mlm.json").write_text(json.dumps({"type": "Feature", "properties": {}}))
    with pytest.raises(CheckpointError, match="not a minecube model's STAC MLM item"):
        load(copy / "other.mlm.json")


def test_publish_writes_a_valid_static_catalogue(lab, predictions, model_path, validator, tmp_path):
    """`minecube publish` gathers the stores and the model into one catalogue that validates
    and that pystac walks, its items opening the stores' data; a foreign file in --out is
    kept and refused, and a folder that is not a store is named."""
    item_path = str(model_path).removesuffix(".safetensors") + ".mlm.json"
    out = tmp_path / "catalog"
    result = CliRunner().invoke(
        main, ["publish", str(lab["store"]), str(predictions), "--out", str(out),
               "--model", item_path],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for path in out.rglob("*.json"):
        if path.name != ".minecube-written.json":
            _valid(path, validator)
    root = pystac.Catalog.from_file(str(out / "catalog.json"))
    children = {c.id: c for c in root.get_children()}
    assert sorted(children) == ["cubes", "models", "predictions"]
    assert len(list(children["cubes"].get_items())) == len(lab["cubes"])
    (pred,) = [i for i in children["predictions"].get_items() if i.id == SITES[0]]
    pred.make_asset_hrefs_absolute()
    ds = xr.open_dataset(pred.assets["data"])
    np.testing.assert_array_equal(ds.prediction.values, open_predictions(predictions, SITES[0]))
    (model_item,) = children["models"].get_items()
    model_item.make_asset_hrefs_absolute()
    assert Path(model_item.assets["weights"].href) == Path(model_path).absolute()
    (out / "notes.txt").write_text("mine")
    (out / "catalog.json").write_text("{}")  # edited since minecube wrote it
    with pytest.raises(OutputExistsError):
        publish([lab["store"]], out=out)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(CatalogError, match="not a minecube store"):
        publish([tmp_path / "nothing.zarr"], out=tmp_path / "c2")


def test_read_item_names_an_unreadable_file(tmp_path):
    (tmp_path / "x.json").write_text("not json")
    with pytest.raises(CatalogError, match="cannot read the STAC item"):
        read_item(tmp_path / "x.json")
