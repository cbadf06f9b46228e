"""Pretrained encoders from files on disk: presets, ONNX, state dicts, the local ImageNet cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from minecube.models import WeightsUnavailableError, create, load, save
from minecube.pretrained import PretrainedWarning, imagenet_source, read_weights

RGBN = ["red", "green", "blue", "nir"]


@pytest.fixture(scope="module")
def csmask_state():
    """The initialisers of ukis-csmask's 4-band L2A model, read with onnx itself."""
    onnx = pytest.importorskip("onnx", reason="pip install 'minecube[csmask]'")
    from onnx import numpy_helper

    from minecube import csmask

    graph = onnx.load(str(csmask.model_file())).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def test_csmask_preset_fills_the_whole_encoder_and_maps_its_bands_by_name(csmask_state, tmp_path):
    model = create("fpn", in_channels=4, bands=RGBN, encoder_weights="csmask-l2a")
    assert model.spec.encoder_name == "efficientnet-b4"  # the preset's encoder
    report = model.pretrained
    assert report.random == ()
    assert report.loaded + len(report.adapted) == report.total == 603
    assert len(report.unused) == 52  # the U-Net's decoder and head
    encoder = model.net.encoder.state_dict()
    deep = "_blocks.20._project_conv.weight"
    assert np.array_equal(encoder[deep].numpy(), csmask_state[f"model.encoder.{deep}"])
    # the file's channels are blue, green, red, NIR; the model's red, green, blue, NIR
    stem = csmask_state["model.encoder._conv_stem.weight"]
    np.testing.assert_array_equal(encoder["_conv_stem.weight"].numpy(), stem[:, [2, 1, 0, 3]])
    assert "taken by name" in report.adapted["_conv_stem.weight"]
    # NDVI, which the weights never saw, starts from the mean filter; the rest is rescaled
    five = create("unet", in_channels=5, bands=[*RGBN, "ndvi"], encoder_weights="csmask-l2a")
    first = five.net.encoder.state_dict()["_conv_stem.weight"].numpy()
    np.testing.assert_allclose(first[:, 4], stem.mean(1) * 4 / 5, rtol=1e-6)
    np.testing.assert_allclose(first[:, 3], stem[:, 3] * 4 / 5, rtol=1e-6)
    # provenance and licence go into the model card, and survive a checkpoint
    from minecube.chips import Normalisation
    from minecube.classes import DEFAULT_CLASSES
    from minecube.models import card_for

    norm = Normalisation(tuple(RGBN), (0.1,) * 4, (0.05,) * 4)
    model.card = card_for(model, bands=norm.bands, normalisation=norm, schema=DEFAULT_CLASSES)
    loaded = load(save(model, tmp_path / "fpn-csmask"))
    pretrained = loaded.card.training["pretrained"]
    assert pretrained["provenance"]["licence"] == "Apache-2.0"
    assert pretrained["provenance"]["package"] == "ukis-csmask"
    assert len(pretrained["provenance"]["sha256"]) == 64
    assert loaded.spec.encoder_weights == "csmask-l2a"
    card = json.loads((tmp_path / "fpn-csmask.json").read_text())
    assert "Wieland" in card["training"]["pretrained"]["provenance"]["citation"]


def test_a_preset_names_its_encoder():
    with pytest.raises(ValueError, match="encoder_name='efficientnet-b4'"):
        create("fpn", encoder_name="resnet18", encoder_weights="csmask-l2a")


def test_an_onnx_file_and_a_whole_model_checkpoint_load_by_name(csmask_state, tmp_path):
    from minecube import csmask

    onnx_model = create(
        "unet", encoder_name="efficientnet-b4", in_channels=4, encoder_weights=csmask.model_file()
    )
    assert onnx_model.pretrained.random == ()
    # no band names with a plain file: the filters stay where they are
    stem = onnx_model.net.encoder.state_dict()["_conv_stem.weight"].numpy()
    np.testing.assert_array_equal(stem, csmask_state["model.encoder._conv_stem.weight"])
    # a training checkpoint of a whole smp model, keys under "module.", as torch.save writes it
    torch.manual_seed(3)
    donor = create("unet", encoder_name="resnet18", in_channels=3)
    state = {f"module.net.{k}": v for k, v in donor.state_dict().items()}
    torch.save({"epoch": 4, "state_dict": state}, tmp_path / "run.pth")
    model = create(
        "fpn", encoder_name="resnet18", in_channels=3, encoder_weights=tmp_path / "run.pth"
    )
    for key, value in donor.net.encoder.state_dict().items():
        assert torch.equal(model.net.encoder.state_dict()[key], value), key
    assert model.pretrained.unused  # the U-Net decoder and head are not the FPN's


def test_what_is_left_random_is_reported(tmp_path):
    torch.manual_seed(0)
    donor = create("unet", encoder_name="resnet18", in_channels=3).net.encoder.state_dict()
    partial = {k: v.contiguous() for k, v in donor.items() if not k.startswith("layer4.")}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.warns(PretrainedWarning, match=r"left random: layer4\."):
        model = create(
            "unet", encoder_name="resnet18", encoder_weights=tmp_path / "partial.safetensors"
        )
    assert all(name.startswith("layer4.") for name in model.pretrained.random)
    assert len(model.pretrained.random) == 25  # 2 blocks × (2 convs, 2 BN × 4) + downsample
    # not weights at all: a pickled object is refused, never unpickled
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(WeightsUnavailableError, match="cannot read encoder weights"):
        create("unet", encoder_name="resnet18", encoder_weights=tmp_path / "pickled.pt")


def test_imagenet_resolves_from_a_local_hugging_face_cache(tmp_path):
    """The offline path: weights placed in HF_HUB_CACHE as `hf download` leaves them."""
    repo, revision = imagenet_source("resnet18")
    torch.manual_seed(7)
    weights = create("unet", encoder_name="resnet18", in_channels=3).net.encoder.state_dict()
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, snapshot / "model.safetensors")
    (snapshot / "config.json").write_text("{}")
    save_file({"conv1.weight": weights["conv1.weight"]}, tmp_path / "expected.safetensors")
    code = (
        "import sys, torch; from safetensors.torch import load_file;"
        "from minecube.models import create;"
        "m = create('fpn', encoder_name='resnet18', in_channels=4, "
        "bands=['red', 'green', 'blue', 'nir'], encoder_weights='imagenet');"
        "w = load_file(sys.argv[1])['conv1.weight'];"
        "got = m.net.encoder.state_dict()['conv1.weight'];"
        "assert torch.allclose(got[:, :3], w * 0.75), 'rgb';"
        "assert torch.allclose(got[:, 3], w.mean(1) * 0.75), 'nir';"
        "print(m.pretrained)"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "expected.safetensors")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "from imagenet" in done.stdout
    # and without the cache, the message says which repository and revision to place there
    with pytest.raises(WeightsUnavailableError, match=f"hf download {repo} --revision {revision}"):
        read_weights("imagenet", encoder_name="resnet18")
