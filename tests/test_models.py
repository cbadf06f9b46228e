"""Models: the paper's architectures, offline weight handling, checkpoints and their cards."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from minecube.chips import Normalisation
from minecube.classes import DEFAULT_CLASSES
from minecube.models import (
    CheckpointError,
    Segmenter,
    WeightsUnavailableError,
    card_for,
    create,
    load,
    save,
)
from tests.conftest import needs_terratorch

SMALL = {"unet": "resnet18", "deeplabv3plus": "resnet18", "fpn": None, "segformer": None}


@pytest.mark.parametrize("architecture", [*SMALL, "prithvi"])
def test_every_architecture_segments_any_image_size(architecture):
    torch.manual_seed(0)
    if architecture == "prithvi":
        needs_terratorch()
        model = create("prithvi", in_channels=5, classes=10, frames=3,
                       bands=["red", "green", "blue", "nir", "ndvi"])  # fmt: skip
        x = torch.randn(2, 5, 3, 70, 90)  # (B, C, T, H, W): the cube's periods as frames
    else:
        model = create(architecture, encoder_name=SMALL[architecture], in_channels=5, classes=10)
        x = torch.randn(2, 5, 70, 90)
    with torch.no_grad():
        out = model.eval()(x)
    assert out.shape == (2, 10, 70, 90)
    assert torch.isfinite(out).all()
    assert model.spec.architecture == architecture


def test_paper_defaults():
    model = create("fpn", in_channels=4)
    assert model.spec.encoder_name == "densenet121"
    assert model.spec.classes == len(DEFAULT_CLASSES)
    with pytest.raises(ValueError, match="not one of"):
        create("pspnet")
    with pytest.raises(ValueError, match="only architecture='prithvi'"):
        create("unet", encoder_name="resnet18", frames=3)


def test_imagenet_offline_fails_fast_and_says_how_to_supply_weights(monkeypatch):
    """Fast means no network at all (a hub's retries hang 23–46 s): every name look-up and
    connection is recorded and refused, and there must be none (without HF_HUB_OFFLINE the
    hub client makes 8 here)."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"encoder_weights='/path/to/encoder"):
        create("fpn", encoder_name="resnet18", encoder_weights="imagenet")
    assert attempts == []
    with pytest.raises(WeightsUnavailableError, match="Prithvi has no ImageNet weights"):
        create("prithvi", encoder_weights="imagenet")
    with pytest.raises(WeightsUnavailableError, match="neither None, 'imagenet', a preset"):
        create("fpn", encoder_weights="/nowhere/weights.pth")


def test_local_encoder_weights_load_and_the_first_layer_takes_nir(tmp_path):
    torch.manual_seed(1)
    rgb = create("unet", encoder_name="resnet18", in_channels=3)
    state = rgb.net.encoder.state_dict()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    model = create("unet", encoder_name="resnet18", in_channels=4, encoder_weights=path)
    loaded = model.net.encoder.state_dict()
    assert torch.equal(loaded["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    first = loaded["conv1.weight"]
    assert first.shape[1] == 4
    # smp's adaptation: RGB filters repeated over the extra channel, scaled by 3/4
    torch.testing.assert_close(first[:, :3], state["conv1.weight"] * 0.75)
    torch.testing.assert_close(first[:, 3], state["conv1.weight"][:, 0] * 0.75)
    assert model.spec.encoder_weights == str(path)
    # and for a single channel (NDVI alone), the filters summed, as smp does
    ndvi = create("unet", encoder_name="resnet18", in_channels=1, encoder_weights=path)
    torch.testing.assert_close(
        ndvi.net.encoder.state_dict()["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True)
    )
    (tmp_path / "other.safetensors").write_bytes(b"")
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsUnavailableError, match="is not a state dict of this encoder"):
        create("unet", encoder_name="resnet18", encoder_weights=tmp_path / "other.safetensors")


def _trained(model: Segmenter) -> Segmenter:
    norm = Normalisation(("red", "green", "blue", "nir"), (0.1,) * 4, (0.05,) * 4)
    model.card = card_for(
        model,
        bands=norm.bands,
        normalisation=norm,
        schema=DEFAULT_CLASSES,
        training={"sites": ["a"]},
        metrics={"val_miou": 0.5},
    )
    return model


def test_checkpoint_round_trip_is_safetensors_plus_a_json_card(tmp_path):
    torch.manual_seed(2)
    model = _trained(create("segformer", in_channels=4).eval())
    path = save(model, tmp_path / "m")
    assert path.suffix == ".safetensors"
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["spec"]["architecture"] == "segformer"
    assert card["bands"] == ["red", "green", "blue", "nir"]
    assert card["schema"]["classes"][0]["name"] == "open_pit"
    assert {"minecube", "torch", "segmentation-models-pytorch"} <= set(card["versions"])
    again = load(tmp_path / "m.safetensors")
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    assert again.card == model.card


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    model = _trained(create("segformer", in_channels=4))
    save(model, tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"lacks \['nir'\]"):
        model.card.check_bands(["red", "green", "blue"])
    (tmp_path / "m.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="are corrupt"):
        load(tmp_path / "m")
    save(model, tmp_path / "m")
    card = json.loads((tmp_path / "m.json").read_text())
    card["spec"]["classes"] = 3
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not match their card"):
        load(tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is unreadable"):
        load(tmp_path / "m")
    (tmp_path / "m.json").unlink()
    with pytest.raises(CheckpointError, match=r"m.json' is missing"):
        load(tmp_path / "m")
    with pytest.raises(CheckpointError, match="has no card"):
        save(create("segformer"), tmp_path / "n")


def test_building_prithvi_leaves_torch_float32_precision_alone():
    """terratorch sets "medium" on import; on AMX CPUs that would change every later CPU
    convolution in the process, so the client and fresh dask workers would disagree. Checked in
    a fresh interpreter, where terratorch is not imported yet."""
    import subprocess
    import sys

    needs_terratorch()
    code = (
        "import torch; from minecube.models import _backbone_registry; _backbone_registry(); "
        "import terratorch; print(torch.get_float32_matmul_precision())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "highest"


def test_checkpoint_names_keep_their_dots(tmp_path):
    torch.manual_seed(3)
    first = _trained(create("segformer", in_channels=4).eval())
    torch.manual_seed(4)
    second = _trained(create("segformer", in_channels=4).eval())
    save(first, tmp_path / "run-1.1")
    save(second, tmp_path / "run-1.2")  # was run-1.safetensors for both: one overwrote the other
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run-1.1.json", "run-1.1.mlm.json", "run-1.1.safetensors",
        "run-1.2.json", "run-1.2.mlm.json", "run-1.2.safetensors",
    ]  # fmt: skip
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(load(tmp_path / "run-1.1")(x), first(x))
        torch.testing.assert_close(load(tmp_path / "run-1.2.safetensors")(x), second(x))
        torch.testing.assert_close(load(tmp_path / "run-1.2.mlm.json")(x), second(x))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"bands": ["green", "red", "blue", "nir"]}, "differ from its normalisation"),
        ({"bands": ["red", "green", "blue", "ndvi"]}, "differ from its normalisation"),
        (
            {
                "bands": ["red", "green", "blue"],
                "normalisation": {
                    "bands": ["red", "green", "blue"],
                    "mean": [0.1] * 3,
                    "std": [0.05] * 3,
                },
            },
            r"lists 3 bands .* takes in_channels=4",
        ),
    ],
)
def test_a_card_that_does_not_fit_its_model_is_refused_at_load(tmp_path, edit, message):
    save(_trained(create("segformer", in_channels=4)), tmp_path / "m")
    card = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**card, **edit}))
    with pytest.raises(CheckpointError, match=message):
        load(tmp_path / "m")


def test_weights_with_other_input_channels_than_the_card_are_refused_at_load(tmp_path):
    save(_trained(create("segformer", in_channels=4)), tmp_path / "m")
    card = json.loads((tmp_path / "m.json").read_text())
    three = {"bands": ["red", "green", "blue"], "mean": [0.1] * 3, "std": [0.05] * 3}
    card |= {"bands": three["bands"], "normalisation": three}
    card["spec"]["in_channels"] = 3
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not match their card"):
        load(tmp_path / "m")


def test_an_unwritable_checkpoint_path_is_refused_before_training(world, tmp_path):
    from click.testing import CliRunner

    from minecube.cli import main

    (tmp_path / "a-file").write_text("not a folder")
    result = CliRunner().invoke(
        main,
        ["train", str(tmp_path / "no-cubes.zarr"), "--sites", str(world.path / "sites.geojson"),
         "--labels", str(tmp_path), "--out", str(tmp_path / "a-file" / "model")],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "cannot write the checkpoint" in result.output  # before any cube is read


def test_bands_set_the_input_channels():
    model = create("unet", encoder_name="resnet18", bands=["red", "green", "blue"])
    assert model.spec.in_channels == 3
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10, 64, 64)
    assert create("fpn", encoder_name="resnet18", bands="rgbn+ndvi").spec.in_channels == 5
    with pytest.raises(ValueError, match=r"in_channels=4 but bands \['red', 'green', 'blue'\]"):
        create("unet", encoder_name="resnet18", bands="rgb", in_channels=4)


def test_pretrained_weights_follow_the_bands_given():
    pytest.importorskip("ukis_csmask")
    model = create("unet", bands=["red", "green", "blue"], encoder_weights="csmask-l2a")
    assert model.spec.in_channels == 3
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 3


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    model = _trained(create("segformer", in_channels=4))
    path = save(model, tmp_path / "m")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = float("nan")
    save_file(state, str(path), metadata={"format": "minecube-model/1"})  # a damaged file
    with pytest.raises(CheckpointError, match=r"non-finite values.*would label every pixel"):
        load(path)
