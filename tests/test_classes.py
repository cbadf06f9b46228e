from __future__ import annotations

import json

import numpy as np
import pytest

from minecube.classes import DEFAULT_CLASSES, IGNORE_INDEX, ClassSchema, LandCoverClass
from tests.conftest import refused


def test_default_schema_has_the_mining_land_use_classes():
    assert DEFAULT_CLASSES.names[:5] == [
        "open_pit",
        "waste_dump",
        "tailings",
        "mine_water",
        "plant",
    ]
    assert all(c.is_mining for c in DEFAULT_CLASSES.mining)
    assert DEFAULT_CLASSES.nodata not in DEFAULT_CLASSES.ids
    assert len(DEFAULT_CLASSES) == 10


def test_unknown_class_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown class 'pit'; known classes: open_pit"):
        DEFAULT_CLASSES["pit"]


def test_schema_rejects_duplicates_and_nodata_clashes():
    a = LandCoverClass(1, "mine", "#000000", True)
    with pytest.raises(ValueError, match="unique"):
        ClassSchema((a, LandCoverClass(1, "other", "#ffffff", False)))
    with pytest.raises(ValueError, match="nodata value 1 is also a class id"):
        ClassSchema((a,), nodata=1)
    for ids, nodata in (([1], 255), ([255], 0)):  # 255 is the training's unlabelled pixel
        classes = tuple(LandCoverClass(i, f"c{i}", "#000000", False) for i in ids)
        assert refused(ValueError, lambda c=classes, n=nodata: ClassSchema(c, nodata=n)) == (
            "class ids and nodata must lie in 0–254 (255 marks unlabelled pixels in training), "
            f"got ids {ids} and nodata {nodata}"
        )


def test_schemas_load_from_json_and_yaml(tmp_path):
    from minecube.classes import read_schema

    (tmp_path / "default.json").write_text(json.dumps(DEFAULT_CLASSES.to_dict()))
    assert read_schema(tmp_path / "default.json") == DEFAULT_CLASSES
    (tmp_path / "maus.yml").write_text(
        "nodata: 0\nclasses:\n  - {id: 1, name: mine, colour: '#d95f02', is_mining: true}\n"
    )
    maus = read_schema(tmp_path / "maus.yml")
    assert maus.names == ["mine"]
    assert maus.mining[0].colour == "#d95f02"
    (tmp_path / "bad.yaml").write_text("classes:\n  - {id: 1, label: mine}\n")
    with pytest.raises(
        ValueError, match=r"bad.yaml: class #0.*missing keys \['name'\], unknown keys \['label'\]"
    ):
        read_schema(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("classes: []\n")
    with pytest.raises(ValueError, match="non-empty 'classes' list"):
        read_schema(tmp_path / "empty.yaml")
    (tmp_path / "maus.txt").write_text("")
    with pytest.raises(ValueError, match=r"expected a \.json, \.yaml or \.yml file"):
        read_schema(tmp_path / "maus.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_schema(tmp_path / "missing.yaml")


def test_class_ids_and_model_indices_round_trip():
    ids = np.array([[0, 1, 5], [10, 3, 0]], dtype=np.uint8)
    index = DEFAULT_CLASSES.to_index(ids)
    assert index.tolist() == [[IGNORE_INDEX, 0, 4], [9, 2, IGNORE_INDEX]]
    np.testing.assert_array_equal(DEFAULT_CLASSES.to_ids(index), ids)
    sparse = ClassSchema(
        (LandCoverClass(7, "mine", "#000", True), LandCoverClass(3, "land", "#fff", False))
    )
    assert sparse.to_index(np.array([7, 3, 0, 5])).tolist() == [0, 1, IGNORE_INDEX, IGNORE_INDEX]
    attrs = DEFAULT_CLASSES.cf_attrs()
    assert attrs["flag_values"] == list(range(1, 11))
    assert attrs["flag_meanings"].split()[0] == "open_pit"
