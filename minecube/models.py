"""Segmentation models of Saputra et al. (2025), their checkpoints and model cards.

:func:`create` builds U-Net, DeepLabV3+, FPN and SegFormer through segmentation-models-pytorch
and a Prithvi segmenter on a backbone from terratorch's registry (``pip install
minecube[prithvi]``). Every model is a :class:`Segmenter`: it takes images of any height and
width (padded inside to the network's stride) and returns per-class logits.

A checkpoint is two files side by side: ``<name>.safetensors`` (tensors only, never pickle) and
``<name>.json``, the :class:`ModelCard` (architecture, bands, normalisation, class schema,
training sites, metrics, versions). :func:`load` checks one against the other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from minecube import __version__
from minecube.chips import Normalisation, resolve_bands
from minecube.classes import ClassSchema
from minecube.errors import MinecubeError, MissingDependencyError
from minecube.pretrained import (
    WeightsReport,
    WeightsUnavailableError,
    encoder_for,
    load_encoder,
    read_weights,
)
from minecube.store import _fs, _is_url

__all__ = [
    "ARCHITECTURES",
    "CheckpointError",
    "ModelCard",
    "ModelSpec",
    "Segmenter",
    "WeightsUnavailableError",
    "create",
    "load",
    "save",
]

Architecture = Literal["unet", "deeplabv3plus", "fpn", "segformer", "prithvi"]
ARCHITECTURES: dict[str, str] = {
    "unet": "resnet34",
    "deeplabv3plus": "resnet34",
    "fpn": "densenet121",
    "segformer": "mit_b0",
    "prithvi": "prithvi_eo_tiny",
}
"""Architecture → default encoder (FPN + DenseNet-121 was the paper's best)."""

_PRITHVI_BANDS = {"blue": "BLUE", "green": "GREEN", "red": "RED", "nir": "NIR_NARROW"}


class CheckpointError(MinecubeError, ValueError):
    """A checkpoint or model card is unreadable, or does not fit the data."""


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`create` needs to build a network again."""

    architecture: str
    encoder_name: str
    in_channels: int
    classes: int
    frames: int = 1
    """Periods per input (Prithvi's temporal frames); 1 for the smp architectures."""
    encoder_weights: str | None = None
    """``None`` (random), ``"imagenet"`` or the local weights file the encoder started from."""


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to use a trained model, stored as JSON next to its weights."""

    spec: ModelSpec
    bands: tuple[str, ...]
    normalisation: Normalisation
    schema: ClassSchema
    training: dict[str, Any] = field(default_factory=dict)
    """Training sites, split, chip size, epochs, seed and the other settings of the run."""
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "minecube-model-card/1",
            "spec": asdict(self.spec),
            "bands": list(self.bands),
            "normalisation": self.normalisation.to_dict(),
            "schema": self.schema.to_dict(),
            "training": self.training,
            "metrics": self.metrics,
            "versions": self.versions,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        if d.get("format") != "minecube-model-card/1":
            raise CheckpointError(
                f"not a minecube model card (format {d.get('format')!r}, expected "
                "'minecube-model-card/1')"
            )
        return cls(
            spec=ModelSpec(**d["spec"]),
            bands=tuple(d["bands"]),
            normalisation=Normalisation.from_dict(d["normalisation"]),
            schema=ClassSchema.from_dict(d["schema"]),
            training=d.get("training", {}),
            metrics=d.get("metrics", {}),
            versions=d.get("versions", {}),
            created=d.get("created", ""),
        )

    def __post_init__(self) -> None:
        if tuple(self.bands) != tuple(self.normalisation.bands):
            raise CheckpointError(
                f"the card's bands {list(self.bands)} differ from its normalisation's "
                f"{list(self.normalisation.bands)}; the model would read the wrong bands. Edit "
                "neither by hand: retrain, or restore the card written with the weights"
            )
        if len(self.bands) != self.spec.in_channels:
            raise CheckpointError(
                f"the card lists {len(self.bands)} bands {list(self.bands)} but the model takes "
                f"in_channels={self.spec.in_channels}; restore the card written with the weights"
            )

    def check_bands(self, available: list[str]) -> None:
        """Refuse inputs that lack a band the model was trained on (``ndvi`` needs red + NIR)."""
        needed = {b for b in self.bands if b != "ndvi"}
        if "ndvi" in self.bands:
            needed |= {"red", "nir"}
        missing = sorted(needed - set(available))
        if missing:
            raise CheckpointError(
                f"the model was trained on bands {list(self.bands)} but the cube lacks {missing} "
                f"(it has {available}); build the cube with bands={tuple(sorted(needed))!r} (or "
                "more), or use a model trained on the cube's bands"
            )

    def check_sensor(self, cube, *, any_sensor: bool = False) -> None:
        """Refuse a cube of another sensor than the model was trained on (its
        ``attrs["sensor"]`` against ``training["sensors"]``) unless ``any_sensor``."""
        sensor = getattr(cube, "attrs", {}).get("sensor")
        trained = self.training.get("sensors") or []
        if sensor and trained and sensor not in trained and not any_sensor:
            raise CheckpointError(
                f"the model was trained on {trained} cubes, this cube is {sensor!r}; train a "
                "model on this sensor's cubes, or pass any_sensor=True to use it anyway"
            )

    def check_labels(self, label) -> None:
        """Refuse labels whose class schema (their CF ``flag_values``/``flag_meanings``) is not
        the model's: id 1 must mean the same class on both sides of a score."""
        try:
            theirs = ClassSchema.from_cf_attrs(getattr(label, "attrs", {}))
        except ValueError:
            raise CheckpointError(
                "the labels carry no class schema (CF flag_values/flag_meanings attributes), "
                "so their ids cannot be checked against the model's classes "
                f"({self.schema.describe()}); make them with minecube.labels.rasterize or "
                "from_raster, or label.attrs.update(schema.cf_attrs()) with their schema"
            ) from None
        if not theirs.same_classes(self.schema):
            raise CheckpointError(
                f"the labels' classes ({theirs.describe()}) are not the model's "
                f"({self.schema.describe()}); rasterise the labels with the model's schema "
                "(schema=model.card.schema, mapping their codes with from_raster(mapping=…)), "
                "or train a model on this schema"
            )


def _up(cin: int, cout: int) -> nn.Module:
    """×2 bilinear upsampling, then conv–BN–ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Prithvi(nn.Module):
    """A Prithvi ViT backbone (terratorch) under a light upsampling decoder.

    The last layer's tokens of every frame are stacked as channels, projected, upsampled
    ×2 per step back to full resolution, and joined with a full-resolution convolution of the
    last frame, which restores the edges that 16-pixel patches blur.
    """

    def __init__(self, spec: ModelSpec, backbone: nn.Module) -> None:
        super().__init__()
        self.encoder = backbone
        self.width = backbone.embed_dim
        self.patch = backbone.patch_embed.patch_size[-1]
        steps = self.patch.bit_length() - 1  # log2(patch)
        self.neck = nn.Conv2d(self.width * spec.frames, 256, 1)
        self.decoder = nn.Sequential(*(_up(256 >> i, 256 >> (i + 1)) for i in range(steps)))
        self.skip = nn.Sequential(nn.Conv2d(spec.in_channels, 32, 3, padding=1), nn.ReLU(True))
        self.head = nn.Conv2d((256 >> steps) + 32, spec.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        b, _, t, h, w = x.shape
        gh, gw = h // self.patch, w // self.patch
        tokens = self.encoder(x)[-1][:, 1:]  # drop the class token
        grid = tokens.reshape(b, t, gh, gw, self.width).permute(0, 1, 4, 2, 3)
        y = self.decoder(self.neck(grid.reshape(b, t * self.width, gh, gw)))
        return self.head(torch.cat([y, self.skip(x[:, :, -1])], dim=1))


def _backbone_registry():
    """terratorch's backbone registry, imported without changing torch's global state."""
    precision = torch.get_float32_matmul_precision()
    try:
        from terratorch.registry import BACKBONE_REGISTRY
    except ImportError as e:
        raise MissingDependencyError(
            "architecture='prithvi' needs terratorch: pip install 'minecube[prithvi]'"
        ) from e
    finally:
        # terratorch's Clay backbone sets float32 matmul precision to "medium" when imported:
        # on CPUs with AMX/AVX512-BF16 that makes every later float32 convolution in this
        # process bf16-approximate, so results would differ from a fresh dask worker's
        torch.set_float32_matmul_precision(precision)
    return BACKBONE_REGISTRY


def _prithvi(spec: ModelSpec, bands: list[str], ckpt: str | None) -> _Prithvi:
    registry = _backbone_registry()
    try:
        backbone = registry.build(
            spec.encoder_name,
            pretrained=ckpt is not None,
            ckpt_path=ckpt,
            num_frames=spec.frames,
            bands=bands,
        )
    except (OSError, RuntimeError) as e:
        raise WeightsUnavailableError(
            f"could not build Prithvi backbone {spec.encoder_name!r} from {ckpt!r}: {e}"
        ) from e
    return _Prithvi(spec, backbone)


class Segmenter(nn.Module):
    """A segmentation network that pads its input to its stride and crops the logits back.

    ``forward`` takes (B, C, H, W), or (B, C, T, H, W) when ``spec.frames > 1``, and returns
    (B, classes, H, W) logits. ``card`` is set once the model is trained or loaded.
    """

    def __init__(self, spec: ModelSpec, net, stride: int) -> None:
        super().__init__()
        self.spec = spec
        self.net = net
        self.stride = stride
        self.card: ModelCard | None = None
        self.pretrained: WeightsReport | None = None
        """What the encoder's pretrained weights filled in (:mod:`minecube.pretrained`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate" if x.ndim == 4 else "constant")
        if self.spec.architecture == "prithvi" and x.ndim == 4:
            x = x.unsqueeze(2)
        return self.net(x)[..., :h, :w]


def create(
    architecture: Architecture = "fpn",
    *,
    encoder_name: str | None = None,
    in_channels: int | None = None,
    classes: int = 10,
    encoder_weights: str | os.PathLike | None = None,
    frames: int = 1,
    bands: str | Sequence[str] | None = None,
) -> Segmenter:
    """Build a segmentation model.

    Parameters
    ----------
    architecture
        ``"unet"``, ``"deeplabv3plus"``, ``"fpn"``, ``"segformer"`` (segmentation-models-pytorch)
        or ``"prithvi"`` (terratorch backbone, ``pip install minecube[prithvi]``).
    encoder_name
        An smp / timm encoder, or a Prithvi backbone such as ``"prithvi_eo_tiny"`` or
        ``"prithvi_eo_v2_300"``; default from :data:`ARCHITECTURES`.
    in_channels
        Input channels; default ``len(bands)`` when ``bands`` is given, else 4. A value that
        differs from the bands' count is refused. With pretrained weights for other bands, the
        first convolution
        is adapted: by band name when ``bands`` is given (filters of bands the weights lack
        start from the mean filter), else by cycling the filters; rescaled to the weights'
        channel count.
    classes
        Output classes.
    encoder_weights
        ``None`` (random initialisation); a file: a state dict (``.safetensors``, or a
        weights-only ``.pt`` / ``.pth`` / ``.bin``) of the encoder or of a whole model, or an
        ONNX model; ``"csmask-l2a"`` (EfficientNet-B4 trained on Sentinel-2 L2A, from the
        installed ukis-csmask package); or ``"imagenet"`` from the local Hugging Face cache.
        Nothing is downloaded: :class:`WeightsUnavailableError` says how to supply weights
        that are missing. Tensors are matched by name and shape; what was loaded and left
        random is ``model.pretrained`` (:mod:`minecube.pretrained`), kept in the model card.
        Prithvi takes the path of its own checkpoint.
    frames
        Periods per input; Prithvi takes the cube's time axis as its temporal frames.
    bands
        Band names or a preset of :data:`minecube.chips.PRESETS` (``"rgb"``): they set
        ``in_channels``, and are matched to the bands pretrained weights were trained on (first
        convolution; Prithvi's patch embedding).

    Examples
    --------
    >>> import torch
    >>> model = create("fpn", encoder_name="resnet18", in_channels=4, classes=10)
    >>> model(torch.zeros(1, 4, 100, 90)).shape
    torch.Size([1, 10, 100, 90])
    >>> create("unet", encoder_name="resnet18", bands="rgb").spec.in_channels
    3
    """
    bands, in_channels = _channels(bands, in_channels)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r} is not one of {list(ARCHITECTURES)}")
    weights = None if encoder_weights is None else str(encoder_weights)
    encoder_name = encoder_for(weights, encoder_name) or ARCHITECTURES[architecture]
    spec = ModelSpec(architecture, encoder_name, in_channels, classes, frames, weights)
    if architecture == "prithvi":
        if weights is not None and not Path(weights).is_file():
            raise WeightsUnavailableError(
                f"Prithvi starts from its own checkpoint, not {weights!r}: pass "
                "encoder_weights= the path of a Prithvi checkpoint (e.g. Prithvi_EO_V2_300.pt "
                "from Hugging Face ibm-nasa-geospatial); Prithvi has no ImageNet weights"
            )
        names = bands or [f"band{i}" for i in range(in_channels)]
        if len(names) != in_channels:
            raise ValueError(f"bands {names} do not match in_channels={in_channels}")
        net = _prithvi(spec, [_PRITHVI_BANDS.get(b, b.upper()) for b in names], weights)
        return Segmenter(spec, net, net.patch)
    if frames != 1:
        raise ValueError(f"frames={frames}: only architecture='prithvi' takes several periods")
    import segmentation_models_pytorch as smp

    source = None if weights is None else read_weights(weights, encoder_name=encoder_name)
    try:
        net = smp.create_model(
            architecture,
            encoder_name=encoder_name,
            classes=classes,
            encoder_weights=None,
            in_channels=in_channels,
        )
    except KeyError as e:
        raise ValueError(f"unknown encoder_name={encoder_name!r} for {architecture}: {e}") from e
    model = Segmenter(spec, net, 32)
    if source is not None:
        model.pretrained = load_encoder(net.encoder, source, bands=tuple(bands or ()) or None)
    return model


def _channels(bands, in_channels: int | None) -> tuple[list[str] | None, int]:
    """The bands (a preset resolved) and the input channels they imply."""
    if bands is None:
        return None, 4 if in_channels is None else int(in_channels)
    bands = list(resolve_bands(bands))
    if in_channels is not None and int(in_channels) != len(bands):
        raise ValueError(
            f"in_channels={in_channels} but bands {bands} are {len(bands)} channels; give "
            "bands= alone (it sets in_channels)"
        )
    return bands, len(bands)


def _versions(spec: ModelSpec) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"minecube": __version__}
    for name in ("torch", "segmentation-models-pytorch", "timm", "terratorch", "ukis-csmask"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def card_for(model: Segmenter, **fields: Any) -> ModelCard:
    """A model card for ``model`` (versions, creation time and pretrained weights filled in)."""
    card = ModelCard(spec=model.spec, **fields)
    training = dict(card.training)
    if model.pretrained is not None:  # where the encoder started: source, licence, report
        training.setdefault("pretrained", model.pretrained.to_dict())
    return replace(
        card,
        training=training,
        versions=card.versions or _versions(model.spec),
        created=card.created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _paths(path: str | os.PathLike) -> tuple[Any, Any]:
    """``(<name>.safetensors, <name>.json)``: paths, or strings for an fsspec URL."""
    if _is_url(path):
        base = os.fspath(path)
        for suffix in (".safetensors", ".json"):
            base = base.removesuffix(suffix)
        return base + ".safetensors", base + ".json"
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    # the whole name is kept: run-1.1 and fpn-lr0.002 are two checkpoints, not one
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def _read(file: Path | str) -> bytes:
    """A checkpoint file's bytes, from disk or any fsspec URL (``s3://…``, ``gs://…``)."""
    import fsspec

    with fsspec.open(os.fspath(file), "rb") as f:
        return f.read()


def check_writable(path: str | os.PathLike) -> None:
    """Refuse early (:class:`CheckpointError`) a checkpoint path whose folder cannot be written,
    so long training does not end in a failed save."""
    import tempfile

    if _is_url(path):  # object storage: written with the checkpoint, no folders to make
        return
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise CheckpointError(
            f"cannot write the checkpoint {os.fspath(path)!r}: {e.strerror or e}; choose a "
            "writable --out"
        ) from None


def _refuse_non_finite(state: dict, what: str, consequence: str) -> None:
    """A :class:`CheckpointError` if any floating-point tensor holds NaN or infinity."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{what} has non-finite values (NaN or inf) in {len(bad)} of {len(state)} tensors "
            f"(first: {bad[:3]}); {consequence}. Training diverged or started from bad weights: "
            "retrain with a lower lr, or check the encoder weights file"
        )


def save(model: Segmenter, path: str | os.PathLike) -> Path:
    """Write ``model`` as ``<path>.safetensors`` + its card as ``<path>.json``, and its STAC
    Machine Learning Model item as ``<path>.mlm.json`` (:func:`minecube.catalog.model_item`).

    ``path`` is a local path or any fsspec URL (``s3://bucket/models/fpn``). The card is
    written last, so a checkpoint whose card exists is complete. Returns the ``.safetensors``
    path. See :func:`load` for an example.
    """
    from safetensors.torch import save

    if model.card is None:
        raise CheckpointError("the model has no card; train it with minecube.train.fit first")
    weights, card = _paths(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _refuse_non_finite(state, f"the model to save at {str(weights)!r}", "it is not saved")
    data = save(state, metadata={"format": "minecube-model/1"})
    fs, card_file = _fs(card)  # a folder or any fsspec URL alike
    weights_file = _fs(weights)[1]
    fs.makedirs(weights_file.rsplit("/", 1)[0], exist_ok=True)
    if fs.exists(card_file):
        fs.rm_file(card_file)
    fs.pipe_file(weights_file, data)
    fs.pipe_file(_mlm_path(weights_file), json.dumps(_mlm(model.card, weights, data)).encode())
    fs.pipe_file(card_file, json.dumps(model.card.to_dict(), indent=1).encode())
    return weights


def _mlm_path(weights: str | os.PathLike) -> str:
    """Where :func:`save` writes a checkpoint's STAC MLM item: ``<name>.mlm.json``."""
    return os.fspath(weights).removesuffix(".safetensors") + ".mlm.json"


def _is_mlm(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a model's STAC MLM item rather than its checkpoint."""
    return os.fspath(path).endswith(".mlm.json")


def _mlm_item(model: str | os.PathLike) -> str | None:
    """The STAC MLM item of a model given by path (the item itself, or the one :func:`save`
    wrote beside a checkpoint): an absolute path or a URL; ``None`` if there is none."""
    item = os.fspath(model) if _is_mlm(model) else _mlm_path(_paths(model)[0])
    fs, inner = _fs(item)
    if not fs.isfile(inner):
        return None
    return item if _is_url(item) else str(Path(item).absolute())


def _mlm(card: ModelCard, weights, data: bytes) -> dict[str, Any]:
    """The STAC MLM item of a checkpoint (:func:`minecube.catalog.model_item`), its weights
    asset relative to it."""
    import hashlib

    from minecube.catalog import model_item

    name = os.fspath(weights).replace("\\", "/").rsplit("/", 1)[-1]
    item = model_item(card.to_dict(), weights=f"./{name}",
                      checksum=hashlib.sha256(data).hexdigest(), size=len(data))  # fmt: skip
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def _from_mlm(path: str | os.PathLike) -> tuple[str, ModelCard, bytes]:
    """(weights href, card, weights bytes) of a model's STAC MLM item, its checksum checked."""
    import hashlib

    from minecube.catalog import sha256_multihash

    text = _read(path)
    try:
        item = json.loads(text)
        card = ModelCard.from_dict(item["properties"]["minecube:card"])
        asset = next(a for a in item["assets"].values() if "mlm:model" in a.get("roles", []))
    except (json.JSONDecodeError, KeyError, TypeError, StopIteration, ValueError) as e:
        raise CheckpointError(
            f"{os.fspath(path)!r} is not a minecube model's STAC MLM item ({e}); give the "
            "<name>.mlm.json that minecube.models.save wrote, or the .safetensors path"
        ) from None
    href = asset["href"]
    if "://" not in href and not os.path.isabs(href):
        href = os.fspath(path).replace("\\", "/").rsplit("/", 1)[0] + "/" + href.removeprefix("./")
    try:
        data = _read(href)
    except (FileNotFoundError, IsADirectoryError):
        raise CheckpointError(
            f"the weights {href!r} named by the MLM item {os.fspath(path)!r} are missing; keep "
            "the .safetensors file beside its item"
        ) from None
    want = asset.get("file:checksum", "")
    if want and sha256_multihash(hashlib.sha256(data).hexdigest()) != want:
        raise CheckpointError(
            f"the weights {href!r} do not match the checksum of their MLM item "
            f"{os.fspath(path)!r}: the file was changed or replaced; restore it, or save the "
            "model again"
        )
    return href, card, data


def _card(path: str | os.PathLike) -> ModelCard:
    """The card of a checkpoint or of its MLM item, without reading the weights."""
    if _is_mlm(path):
        return ModelCard.from_dict(json.loads(_read(path))["properties"]["minecube:card"])
    return ModelCard.from_dict(json.loads(_read(_paths(path)[1])))


def _checkpoint(path: str | os.PathLike) -> tuple[Any, ModelCard, bytes]:
    """(weights path, card, weights bytes) of a ``.safetensors`` + ``.json`` pair."""
    weights, card_path = _paths(path)
    files = {}
    for file in (card_path, weights):
        try:
            files[file] = _read(file)
        except (FileNotFoundError, IsADirectoryError):
            raise CheckpointError(
                f"checkpoint file {str(file)!r} is missing; a checkpoint is a .safetensors file "
                "and its .json model card side by side (or give its .mlm.json STAC item)"
            ) from None
    try:
        card = ModelCard.from_dict(json.loads(files[card_path]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"model card {str(card_path)!r} is unreadable: {e}") from e
    return weights, card, files[weights]


def load(path: str | os.PathLike, *, device: str = "cpu") -> Segmenter:
    """Load a checkpoint written by :func:`save`: weights (safetensors) and card (JSON),
    from a local path or any fsspec URL (``s3://bucket/models/fpn``), or from its STAC
    Machine Learning Model item (``<name>.mlm.json``, its weights' checksum checked).

    Raises :class:`CheckpointError` for a missing, corrupt or mismatched pair.

    Examples
    --------
    >>> from minecube.chips import Normalisation
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> model = create("segformer", in_channels=4)
    >>> norm = Normalisation(("red", "green", "blue", "nir"), (0.1,) * 4, (0.05,) * 4)
    >>> model.card = card_for(model, bands=norm.bands, normalisation=norm, schema=DEFAULT_CLASSES)
    >>> path = save(model, "/tmp/segformer-demo")
    >>> path.name, load(path).card.bands
    ('segformer-demo.safetensors', ('red', 'green', 'blue', 'nir'))
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    if _is_mlm(path):
        weights, card, data = _from_mlm(path)
    else:
        weights, card, data = _checkpoint(path)
    try:
        state = {k: v.to(device) for k, v in load_bytes(data).items()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"weights {str(weights)!r} are corrupt: {e}") from e
    _refuse_non_finite(
        state, f"the checkpoint {str(weights)!r}", "it would label every pixel alike"
    )
    spec = replace(card.spec, encoder_weights=None)  # the checkpoint holds the trained weights
    model = create(
        spec.architecture,
        encoder_name=spec.encoder_name,
        in_channels=spec.in_channels,
        classes=spec.classes,
        frames=spec.frames,
        bands=list(card.bands),
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"weights {str(weights)!r} do not match their card ({card.spec}): {str(e)[:300]}"
        ) from e
    model.spec = card.spec
    model.card = card
    return model.to(device).eval()
