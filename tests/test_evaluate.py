"""Scores from confusion matrices, checked by hand, and grouping by site, climate, commodity."""

from __future__ import annotations

import numpy as np
import pytest

from minecube.classes import DEFAULT_CLASSES, IGNORE_INDEX, ClassSchema, LandCoverClass
from minecube.evaluate import _summary, baselines, confusion_matrix, evaluate, scores
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
    majority, background = result.baselines["majority"], result.baselines["background"]
    assert list(table.index) == [
        *DEFAULT_CLASSES.names,
        "mIoU",
        f"mIoU, all {majority} (majority)",
        f"mIoU, all {background} (background)",
    ]


# --- a score that cannot lie -------------------------------------------------------------------


def _two_sites(lab):
    sites = ["hunter-coal", "atacama-copper"]
    return {s: lab["cubes"][s] for s in sites}, {s: lab["labels"][s] for s in sites}


def test_labels_of_another_schema_or_cubes_of_another_sensor_are_refused(lab):
    import dataclasses

    from minecube.classes import LandCoverClass
    from minecube.models import CheckpointError

    model = _trained(create("segformer", in_channels=4))
    cubes, labels = _two_sites(lab)
    # the same ids, another meaning: id 1 is open_pit for the labels, tailings for the model
    swapped = ClassSchema(tuple(
        LandCoverClass(c.id, {"open_pit": "tailings", "tailings": "open_pit"}.get(c.name, c.name),
                       c.colour, c.is_mining) for c in DEFAULT_CLASSES))  # fmt: skip
    model.card = dataclasses.replace(model.card, schema=swapped)
    with pytest.raises(
        CheckpointError, match=r"labels' classes \(1=open_pit.*model's \(1=tailings"
    ):
        evaluate(model, cubes, labels, resamples=0)
    model = _trained(create("segformer", in_channels=4))
    bare = {s: lab.copy(data=lab.values) for s, lab in labels.items()}
    for lab_ in bare.values():
        lab_.attrs = {}
    with pytest.raises(CheckpointError, match="carry no class schema"):
        evaluate(model, cubes, bare, resamples=0)
    model.card.training["sensors"] = ["landsat-c2-l2"]
    with pytest.raises(CheckpointError, match=r"trained on \['landsat-c2-l2'\] cubes.*any_sensor"):
        evaluate(model, cubes, labels, resamples=0)
    assert evaluate(model, cubes, labels, any_sensor=True, resamples=0).summary.shape[0] == 3


def test_baselines_stand_beside_every_score_with_an_interval_over_sites(lab):
    cubes, labels = _two_sites(lab)
    model = _trained(create("segformer", in_channels=4))
    result = evaluate(model, cubes, labels, resamples=200, seed=1)
    table = baselines(cubes, labels, schema=DEFAULT_CLASSES).set_index("baseline")
    every = result.summary.set_index("group")
    assert every.loc["all", "majority_miou"] == pytest.approx(table.loc["majority", "miou"])
    assert result.baselines["majority"] == table.loc["majority", "class"]
    # all background: the schema has no background class, so its commonest land class
    assert not DEFAULT_CLASSES[result.baselines["background"]].is_mining
    # by hand: a constant map's accuracy is its class's share of the counted pixels
    truth = sum(np.bincount(DEFAULT_CLASSES.to_index(
        labels[s].where(cubes[s].reflectance.notnull().all("band"), 0).values).ravel(),
        minlength=256)[:10] for s in cubes)  # fmt: skip
    majority = DEFAULT_CLASSES.names.index(table.loc["majority", "class"])
    assert table.loc["majority", "overall_accuracy"] == pytest.approx(truth[majority] / truth.sum())
    assert table.loc["majority", "miou"] == pytest.approx(
        truth[majority] / truth.sum() / np.count_nonzero(truth)
    )
    low, high = every.loc["all", ["miou_low", "miou_high"]]
    assert low <= every.loc["all", "miou"] + 1e-9
    assert high >= low
    assert np.isnan(every.loc["hunter-coal", "miou_low"])  # one site: no interval
    again = evaluate(model, cubes, labels, resamples=200, seed=1).summary
    assert again.miou_low.equals(result.summary.miou_low)  # seeded
