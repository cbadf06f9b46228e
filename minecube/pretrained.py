"""Pretrained encoder weights from files on disk, never downloaded.

:func:`minecube.models.create` takes ``encoder_weights=``:

- a path to a state dict: safetensors, or a weights-only torch file (``.pt``, ``.pth``,
  ``.bin``, loaded without unpickling objects), from segmentation-models-pytorch, timm or
  torchvision, of the encoder alone or of a whole model;
- a path to an ONNX model (``.onnx``), whose initialisers are the weights (``pip install onnx``);
- a preset of :data:`PRESETS`, read from an installed package: ``"csmask-l2a"``, the
  EfficientNet-B4 encoder of ukis-csmask's U-Net trained on real Sentinel-2 L2A blue, green,
  red and NIR (``pip install 'minecube[csmask]'``);
- ``"imagenet"``: segmentation-models-pytorch's ImageNet weights, resolved from the local
  Hugging Face cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``): see
  :func:`imagenet_source` for what to place there on an offline cluster.

Tensors are matched to the encoder by name (any prefix such as ``model.``, ``encoder.`` or
``module.`` is tried off) and shape. The first convolution is adapted to the model's bands:
filters of bands the weights know are taken by name (so ``csmask-l2a``'s blue, green, red, NIR
filters land on the cube's red, green, blue, NIR channels), others are the mean filter. What
was loaded, adapted and left random is a :class:`WeightsReport`, kept in the model card.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minecube.errors import MinecubeError, MissingDependencyError, find_stack_level

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "PRESETS",
    "PretrainedWarning",
    "Weights",
    "WeightsReport",
    "WeightsUnavailableError",
    "encoder_for",
    "imagenet_source",
    "load_encoder",
    "read_weights",
]

PRESETS: dict[str, dict[str, str]] = {
    "csmask-l2a": {
        "encoder_name": "efficientnet-b4",
        "model": "model_4b_l2a",
        "about": "ukis-csmask's U-Net encoder, trained on Sentinel-2 L2A blue/green/red/NIR "
        "to segment clouds and shadows (pip install 'minecube[csmask]')",
    },
}
"""Named weights read from installed packages."""

_IMAGENET_BANDS = ("red", "green", "blue")


class WeightsUnavailableError(MinecubeError, FileNotFoundError):
    """Pretrained weights asked for cannot be found or read."""


def encoder_for(encoder_weights: str | os.PathLike | None, encoder_name: str | None) -> str | None:
    """The encoder that ``encoder_weights`` fit: a preset's own (``encoder_name`` may be left
    out), else ``encoder_name``. Raises ``ValueError`` naming the fix for a preset given
    another encoder.

    >>> encoder_for("csmask-l2a", None), encoder_for(None, "resnet18")
    ('efficientnet-b4', 'resnet18')
    """
    preset = PRESETS.get(str(encoder_weights))
    if preset is None:
        return encoder_name
    if encoder_name not in (None, preset["encoder_name"]):
        raise ValueError(
            f"encoder_weights={str(encoder_weights)!r} holds the {preset['encoder_name']} "
            f"encoder; pass encoder_name={preset['encoder_name']!r} (or leave it out; in a run's "
            f"train settings, set encoder_name: {preset['encoder_name']})"
        )
    return preset["encoder_name"]


class PretrainedWarning(UserWarning):
    """Part of an encoder was left at random initialisation."""


@dataclass(frozen=True)
class Weights:
    """Tensors from a weights source, the bands its first layer was trained on, provenance."""

    state: dict[str, torch.Tensor]
    source: str
    bands: tuple[str, ...] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_encoder` did: tensors loaded, adapted, left random and unused."""

    source: str
    loaded: int
    total: int
    adapted: dict[str, str] = field(default_factory=dict)
    """Tensor name → how it was adapted (the first convolution to the model's bands)."""
    random: tuple[str, ...] = ()
    """Encoder tensors the weights did not fill (they keep their random initialisation)."""
    unused: tuple[str, ...] = ()
    """Tensors of the file that matched nothing in the encoder (decoder, head, classifier)."""
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def filled(self) -> int:
        """Encoder tensors that start from the weights, as they are or adapted."""
        return self.loaded + len(self.adapted)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"random": list(self.random), "unused": len(self.unused)}

    def __str__(self) -> str:
        text = f"{self.filled} of {self.total} encoder tensors from {self.source}"
        for name, how in self.adapted.items():
            text += f"; {name}: {how}"
        if self.random:
            text += f"; left random: {', '.join(self.random[:5])}"
            text += f" and {len(self.random) - 5} more" if len(self.random) > 5 else ""
        if self.unused:
            text += f"; {len(self.unused)} tensors of the file unused (e.g. {self.unused[0]})"
        return text


def imagenet_source(encoder_name: str) -> tuple[str, str]:
    """The Hugging Face repository and revision of an encoder's ImageNet weights.

    segmentation-models-pytorch reads them from ``<HF_HUB_CACHE>/models--<org>--<name>/
    snapshots/<revision>/model.safetensors``. On an offline cluster, download them where there
    is internet (``hf download REPO --revision REVISION``) and copy the cache folder over, or
    point ``HF_HUB_CACHE`` at a shared copy.

    >>> imagenet_source("resnet34")[0]
    'smp-hub/resnet34.imagenet'
    """
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder_name, {}).get("pretrained_settings", {}).get("imagenet")
    if not settings or "repo_id" not in settings:
        raise WeightsUnavailableError(
            f"segmentation-models-pytorch has no ImageNet weights for encoder {encoder_name!r}; "
            "pass encoder_weights= the path of a state dict instead"
        )
    return settings["repo_id"], settings["revision"]


def _read_imagenet(encoder_name: str) -> Weights:
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    repo, revision = imagenet_source(encoder_name)
    try:
        path = hf_hub_download(repo, filename="model.safetensors", revision=revision)
    except Exception as e:  # offline and not cached, or a broken cache
        cache = os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
        raise WeightsUnavailableError(
            f"ImageNet weights for encoder {encoder_name!r} are not in the local Hugging Face "
            f"cache ({cache}) and cannot be downloaded ({type(e).__name__}). Where there is "
            f"internet run `hf download {repo} --revision {revision}` and copy the cache over "
            "(or set HF_HUB_CACHE to a copy), or pass encoder_weights='/path/to/encoder"
            f".safetensors': a state dict of the {encoder_name} encoder"
        ) from e
    provenance = {"name": f"ImageNet ({repo})", "revision": revision, "file": "model.safetensors"}
    return Weights(load_file(path), "imagenet", _IMAGENET_BANDS, provenance)


def _read_onnx(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise MissingDependencyError(
            f"reading weights from {path.name} needs onnx: pip install onnx (or 'minecube[csmask]')"
        ) from e
    graph = onnx.load(str(path), load_external_data=False).graph
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if path.suffix == ".onnx":
        return _read_onnx(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):  # training checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(
            f"{str(path)!r} holds a {type(state).__name__}, not a state dict"
        )
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_weights(source: str | os.PathLike, *, encoder_name: str | None = None) -> Weights:
    """Read weights from a preset, ``"imagenet"`` (local cache) or a file.

    Parameters
    ----------
    source
        A name of :data:`PRESETS`, ``"imagenet"``, or the path of a ``.safetensors``,
        weights-only torch (``.pt``, ``.pth``, ``.bin``) or ``.onnx`` file.
    encoder_name
        The encoder whose ImageNet weights to read (``"imagenet"`` only).

    Returns
    -------
    Weights
        The tensors by their names in the file, the bands the weights were trained on (when
        known) and their provenance.

    Raises :class:`WeightsUnavailableError` saying how to supply weights that are missing.

    Examples
    --------
    >>> weights = read_weights("csmask-l2a")  # pip install "minecube[csmask]"
    >>> weights.bands, weights.provenance["licence"]
    (('blue', 'green', 'red', 'nir'), 'Apache-2.0')
    """
    source = str(source)
    if source in PRESETS:
        from minecube import csmask

        preset = PRESETS[source]
        path = csmask.model_file(preset["model"])
        info = csmask.provenance(preset["model"])
        return Weights(_read_onnx(path), source, tuple(info["bands"]), info)
    if source == "imagenet":
        return _read_imagenet(encoder_name or "")
    path = Path(source).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"encoder_weights={source!r} is neither None, 'imagenet', a preset "
            f"({', '.join(PRESETS)}) nor an existing file"
        )
    if path.stat().st_size == 0:
        raise WeightsUnavailableError(
            f"encoder weights {source!r} is an empty file (0 bytes): a copy or download that "
            "did not finish; copy the weights file again"
        )
    try:
        state = _read_file(path)
    except MinecubeError:  # a missing optional dependency, or not a state dict
        raise
    except Exception as e:
        reason = str(e) or f"{type(e).__name__}: the file ends early (truncated?)"
        raise WeightsUnavailableError(
            f"cannot read encoder weights {source!r}: {reason}; give a state dict saved with "
            "torch.save, a .safetensors file or a timm/smp checkpoint"
        ) from e
    return Weights(state, source, provenance={"file": path.name})


def _candidates(key: str):
    """``model.encoder.layer1.0.conv1.weight`` → itself, ``encoder.layer1…``, ``layer1…``."""
    parts = key.split(".")
    for i in range(len(parts) - 1):  # at least two components: never a bare "weight"
        yield ".".join(parts[i:])


def _first_layer(
    weight: torch.Tensor, channels: int, bands: tuple[str, ...] | None, known: tuple | None
) -> tuple[torch.Tensor, str]:
    """The first convolution's filters for ``channels`` inputs, by band name where possible."""
    import torch

    have = weight.shape[1]
    if bands and known and len(bands) == channels and len(known) == have:
        picks = [known.index(b) if b in known else None for b in bands]
        mean = weight.mean(1)
        out = torch.stack([mean if p is None else weight[:, p] for p in picks], dim=1)
        matched = [b for b, p in zip(bands, picks, strict=True) if p is not None]
        how = f"filters of {', '.join(matched) or 'no band'} taken by name from {list(known)}"
        rest = [b for b, p in zip(bands, picks, strict=True) if p is None]
        if rest:
            how += f"; {', '.join(rest)} start from the mean filter"
    elif channels == 1:  # segmentation-models-pytorch's rule for one channel: their sum
        return weight.sum(1, keepdim=True).contiguous(), f"{have} input filters summed"
    else:  # and for more: cycle the filters
        out = torch.stack([weight[:, i % have] for i in range(channels)], dim=1)
        how = f"{have} input filters cycled over {channels} channels"
    if channels != have:  # keep the layer's response at the scale the weights were trained at
        out = out * (have / channels)
        how += f", scaled by {have}/{channels}"
    return out.contiguous(), how


def _in_forward(encoder: nn.Module) -> set[str]:
    """Names of the tensors the encoder's forward pass uses (timm and smp encoders keep some
    classifier layers they never call, e.g. EfficientNet's ``_conv_head``)."""
    import torch

    called: set[str] = set()
    hooks = [
        m.register_forward_hook(lambda mod, i, o, name=name: called.add(name))
        for name, m in encoder.named_modules()
        if list(m.parameters(recurse=False)) or list(m.buffers(recurse=False))
    ]
    first = next(p for p in encoder.parameters() if p.ndim == 4)
    was_training = encoder.training
    try:
        with torch.no_grad():
            encoder.eval()(torch.zeros(1, first.shape[1], 64, 64))
    finally:
        encoder.train(was_training)
        for h in hooks:
            h.remove()
    return {k for k in encoder.state_dict() if k.rpartition(".")[0] in called}


def load_encoder(
    encoder: nn.Module, weights: Weights, *, bands: tuple[str, ...] | None = None
) -> WeightsReport:
    """Copy the tensors of ``weights`` that fit into ``encoder`` (in place) and report.

    Parameters
    ----------
    encoder
        A segmentation-models-pytorch encoder (``model.net.encoder``).
    weights
        From :func:`read_weights`.
    bands
        The model's input bands, for the first convolution (see the module documentation).

    Returns
    -------
    WeightsReport
        Loaded, adapted, left random (also a :class:`PretrainedWarning`) and unused tensors.

    Raises :class:`WeightsUnavailableError` when nothing matches (not weights of this encoder).

    Examples
    --------
    >>> import torch
    >>> from minecube.models import create
    >>> donor = create("unet", encoder_name="resnet18", in_channels=3)
    >>> state = {f"module.{k}": v for k, v in donor.net.encoder.state_dict().items()}
    >>> model = create("fpn", encoder_name="resnet18", in_channels=4)
    >>> report = load_encoder(model.net.encoder, Weights(state, "donor"), bands=None)
    >>> report.loaded, report.total, list(report.adapted)
    (99, 100, ['conv1.weight'])
    """
    target = encoder.state_dict()
    names = {k for k in target if not k.endswith("num_batches_tracked")} & _in_forward(encoder)
    first = next(k for k, p in encoder.named_parameters() if p.ndim == 4)
    # a whole model's file: only its encoder's tensors are candidates
    scoped = {k for k in weights.state if ".encoder." in f".{k}"}
    pool = {k: v for k, v in weights.state.items() if k in scoped} if scoped else weights.state
    new, adapted, used = {}, {}, set()
    for key, tensor in pool.items():
        name = next(
            (c.removeprefix("encoder.") for c in _candidates(key)
             if c.removeprefix("encoder.") in names),
            None,
        )  # fmt: skip
        if name is None or name in new or name in adapted:
            continue
        want = target[name]
        renamed = bands and weights.bands and tuple(bands) != tuple(weights.bands)
        if tuple(tensor.shape) == tuple(want.shape) and not (name == first and renamed):
            new[name] = tensor.to(want.dtype)
        elif (
            tensor.ndim == 4
            and tensor.shape[0] == want.shape[0]
            and tensor.shape[2:] == want.shape[2:]
        ):
            new[name], adapted[name] = _first_layer(tensor, want.shape[1], bands, weights.bands)
        else:
            continue
        used.add(key)
    if not new:
        raise WeightsUnavailableError(
            f"{weights.source!r} is not a state dict of this encoder: none of its "
            f"{len(weights.state)} tensors matches the encoder's {len(names)} by name and shape "
            f"(it has e.g. {sorted(weights.state)[:3]}; the encoder {sorted(names)[:3]})"
        )
    encoder.load_state_dict({**target, **new})
    random = tuple(sorted(names - set(new)))
    report = WeightsReport(
        source=weights.source,
        loaded=len(new) - len(adapted),
        total=len(names),
        adapted={k: v for k, v in adapted.items()},
        random=random,
        unused=tuple(
            sorted(k for k in weights.state if k not in used and "num_batches_tracked" not in k)
        ),
        provenance=weights.provenance,
    )
    if random:
        warnings.warn(
            f"encoder weights: {report}", PretrainedWarning, stacklevel=find_stack_level()
        )
    return report
