from __future__ import annotations

import pytest

from minecube.classes import DEFAULT_CLASSES, ClassSchema, LandCoverClass


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
