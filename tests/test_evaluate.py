"""Scores from confusion matrices, checked by hand, and grouping by site, climate, commodity."""

from __future__ import annotations

import numpy as np
import pytest

from minecube.classes import DEFAULT_CLASSES, IGNORE_INDEX, ClassSchema, LandCoverClass
from minecube.evaluate import _summary, confusion_matrix, evaluate, scores
from minecube.models import create
from tests.test_models import _trained

TWO = ClassSchema((LandCoverClass(1, "mine", "#000000", True),
                   LandCoverClass(2, "land", "#ffffff", False)))  # fmt: skip


def test_scores_by_hand():
    truth = np.array([0, 0, 0, 1, 1, IGNORE_INDEX])
    pred = np.array([0, 0, 1, 1, 0, 0])
    cm = confusion_matrix(pred, truth, 2)
    np.testing.assert_array_equal(cm, [[2, 1], [1, 1]])
    table = scores(cm, TWO).set_index("class")
    assert table.loc["mine", "iou"] == pytest.approx(2 / 4)
    assert table.loc["land", "iou"] == pytest.approx(1 / 3)
    assert table.loc["mine", "f1"] == pytest.approx(2 * 2 / (3 + 3))
    assert table.loc["land", "precision"] == pytest.approx(1 / 2)
    assert table.loc["mine", "recall"] == pytest.approx(2 / 3)
    summary = _summary(cm)
    assert summary["miou"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert summary["overall_accuracy"] == pytest.approx(3 / 5)
    assert summary["labelled_px"] == 5


def test_absent_classes_do_not_count_unless_predicted():
    cm = np.array([[5, 0, 0], [0, 0, 0], [0, 0, 3]])
    assert _summary(cm)["miou"] == 1.0
    cm[0, 1] = 1  # a false alarm of a class absent from the truth costs an IoU of 0
    assert _summary(cm)["miou"] == pytest.approx((5 / 6 + 0 + 1) / 3)


def test_evaluate_groups_sites_and_their_sums_agree(lab):
    sites = ["hunter-coal", "kalimantan-coal", "atacama-copper"]
    model = _trained(create("segformer", in_channels=4))
    result = evaluate(
        model, {s: lab["cubes"][s] for s in sites}, {s: lab["labels"][s] for s in sites},
        lab["sites"],
    )  # fmt: skip
    summary = result.summary.set_index(["level", "group"])
    assert set(summary.index) >= {("all", "all"), ("site_id", "hunter-coal"), ("commodity", "coal"),
                                  ("climate", "arid"), ("climate", "tropical")}  # fmt: skip
    assert summary.loc[("commodity", "coal"), "sites"] == 2
    per_site = summary.loc["site_id", "labelled_px"]
    assert per_site.sum() == summary.loc[("all", "all"), "labelled_px"]
    expected = sum(
        int(((lab["labels"][s] > 0) & lab["cubes"][s].reflectance.notnull().all("band")).sum())
        for s in sites
    )
    assert summary.loc[("all", "all"), "labelled_px"] == expected
    assert result.confusion.dims == ("site_id", "truth", "predicted")
    assert result.confusion.attrs["units"] == "px"
    table = result.table("site_id")
    assert list(table.columns) == sorted(sites)
    assert list(table.index) == [*DEFAULT_CLASSES.names, "mIoU"]
