"""Training on the demo world's chips: reproducible, early-stopped, and better than a baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minecube.chips import ChipDataset
from minecube.evaluate import evaluate
from minecube.models import create, load, save
from minecube.train import fit
from tests.conftest import needs_terratorch, subset

DIMS = {"y": 64, "x": 64}
TRAIN, VAL, TEST = ["kalimantan-coal", "sudbury-nickel"], ["bodaibo-gold"], ["hunter-coal"]


@pytest.fixture(scope="module")
def data(lab):
    train = ChipDataset(
        *subset(lab, TRAIN), input_dims=DIMS, input_overlap={"y": 32, "x": 32}, augment=True
    )
    val = ChipDataset(*subset(lab, VAL), input_dims=DIMS, norm=train.norm)
    return train, val


def _small(train):
    torch.manual_seed(0)
    return create("unet", encoder_name="resnet18", in_channels=len(train.bands), classes=10)


def test_same_seed_gives_the_same_weights_on_cpu(data):
    train, _ = data
    runs = []
    for _ in range(2):
        model = fit(_small(train), train.take(range(16)), epochs=1, batch_size=8,
                    device="cpu", progress=False)  # fmt: skip
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    other = fit(_small(train), train.take(range(16)), epochs=1, batch_size=8, seed=1,
                device="cpu", progress=False)  # fmt: skip
    assert not all(torch.equal(runs[0][k], v) for k, v in other.state_dict().items())


def test_early_stopping_keeps_the_best_epoch(data):
    train, val = data
    frozen = _small(train)
    for module in frozen.modules():  # with lr=0 and fixed batch-norm statistics nothing changes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.0
    model = fit(frozen, train.take(range(16)), val, epochs=6, batch_size=8, lr=0.0, patience=2,
                progress=False)  # fmt: skip
    history = model.card.metrics["history"]
    assert len(history) == 3  # two epochs without improvement, then stop
    assert model.card.metrics["best_epoch"] == 1


@pytest.mark.slow
def test_a_trained_model_beats_the_majority_baseline_on_a_held_out_site(lab, data, tmp_path):
    train, val = data
    model = fit(_small(train), train, val, epochs=3, batch_size=16, lr=3e-3,
                loss="ce+dice", class_weights="balanced", progress=False)  # fmt: skip
    card = model.card
    assert card.training["sites"] == TRAIN
    assert card.training["val_sites"] == VAL
    assert card.bands == ("red", "green", "blue", "nir")
    assert card.normalisation == train.norm
    assert len(card.training["class_weights"]) == 10
    result = evaluate(model, *subset(lab, TEST), lab["sites"])
    cm = result.confusion.sum("site_id").values
    # the trivial baseline predicts the commonest class everywhere: its IoU is that class's
    # share of the pixels, every other class present scores 0
    truth = cm.sum(axis=1)
    baseline_miou = truth.max() / truth.sum() / np.count_nonzero(truth)
    miou = float(result.summary.iloc[0]["miou"])
    assert miou > 2 * baseline_miou, (miou, baseline_miou)
    assert float(result.summary.iloc[0]["overall_accuracy"]) > truth.max() / truth.sum()
    # the checkpoint predicts exactly what the trained model does
    again = load(save(model, tmp_path / "unet"))
    x = train[0]["image"][None]
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_inputs_that_do_not_fit_the_model_are_refused(data):
    train, _ = data
    with pytest.raises(ValueError, match=r"in_channels=4, classes=10"):
        fit(create("unet", encoder_name="resnet18", in_channels=3), train, progress=False)
    with pytest.raises(ValueError, match="loss='focal' is not one of"):
        fit(_small(train), train, loss="focal", progress=False)
    with pytest.raises(ValueError, match="class_weights has 2 values for 10 classes"):
        fit(_small(train), train, class_weights=[1, 2], progress=False)


def test_prithvi_takes_consecutive_periods_as_frames(lab):
    needs_terratorch()
    train = ChipDataset(*subset(lab, TRAIN), bands="rgbn+ndvi", input_dims=DIMS, frames=2)
    item = train[0]
    assert item["image"].shape == (5, 2, 64, 64)  # (C, T, H, W)
    # each chip is labelled with its last frame, so no chip ends on a site's first period
    firsts = {s: lab["cubes"][s].time.values[0] for s in TRAIN}
    assert all(row.time != firsts[row.site_id] for row in train.chips.itertuples())
    torch.manual_seed(0)
    model = create("prithvi", in_channels=5, classes=10, frames=2, bands=list(train.bands))
    model = fit(model, train.take(range(8)), epochs=1, batch_size=4, progress=False)
    assert model.card.spec.frames == 2
    result = evaluate(model, *subset(lab, TEST))
    assert result.summary.iloc[0]["labelled_px"] > 0


def test_the_learning_rate_schedule_works_for_any_number_of_steps(data):
    from minecube.train import _schedule

    for total in range(1, 41):  # 10 steps divided by zero in OneCycleLR before
        optimiser = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        schedule = _schedule(torch, optimiser, 0.1, total)
        rates = []
        for _ in range(total):
            optimiser.step()
            schedule.step()
            rates.append(optimiser.param_groups[0]["lr"])
        assert all(np.isfinite(rates)), total
        assert max(rates) <= 0.1 + 1e-9, total
    train, _ = data
    model = fit(_small(train), train.take(range(20)), epochs=1, batch_size=2, device="cpu",
                progress=False)  # fmt: skip
    assert len(model.card.metrics["history"]) == 1


def test_partial_labels_and_the_sampler_are_in_the_card():
    from minecube.chips import ChipDataset
    from minecube.classes import DEFAULT_CLASSES
    from minecube.models import create
    from minecube.train import fit
    from tests.test_chips import _synthetic

    cube, label = _synthetic(h=128, w=128, rare=(slice(0, 20), slice(0, 20)))
    label = label.where(label.x < label.x[96], 0).astype("uint8")  # a quarter unlabelled
    label.attrs = DEFAULT_CLASSES.cf_attrs()
    data = ChipDataset({"s": cube}, {"s": label}, bands="rgbn", input_dims={"y": 64, "x": 64},
                       min_valid=0.1)  # fmt: skip
    assert data.labelled_fraction == pytest.approx(0.75)
    model = fit(create("segformer", bands="rgbn"), data, epochs=1, batch_size=4,
                sampler="balanced", progress=False)  # fmt: skip
    training = model.card.training
    assert training["sampler"] == "balanced"
    assert training["labelled_fraction"] == 0.75
    assert training["labels"].startswith("partial: 75.0% of the observed pixels")


def test_a_diverging_run_stops_and_saves_nothing(data, tmp_path):
    from minecube.models import CheckpointError, save
    from minecube.train import NonFiniteError

    train, _ = data
    model = _small(train)
    with torch.no_grad():  # as an encoder file of NaN weights leaves it
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"loss became nan at epoch 1, step 1.*lr="):
        fit(model, train.take(range(8)), epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="epochs=0: train at least one epoch"):
        fit(_small(train), train, epochs=0, progress=False)
    trained = fit(_small(train), train.take(range(8)), epochs=1, batch_size=4, progress=False)
    with torch.no_grad():
        next(trained.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(CheckpointError, match=r"non-finite values .* in 1 of \d+ tensors"):
        save(trained, tmp_path / "m")
    assert not list(tmp_path.iterdir())  # nothing written
