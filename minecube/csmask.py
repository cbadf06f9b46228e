"""A learned cloud and cloud-shadow mask for archives without a mask layer.

The models are those of the ``ukis-csmask`` package (DLR, Apache-2.0; Wieland, Li & Martinis
2019, *Remote Sensing of Environment* 230): U-Nets with an EfficientNet-B4 encoder trained on
Sentinel-2 and Landsat images, which label each pixel clear, cloud or cloud shadow from the
blue, green, red and near-infrared reflectance (``model_4b_l2a`` for surface reflectance).
They are read from the installed package (``pip install 'minecube[csmask]'``), never
downloaded, and run with onnxruntime: this module needs no torch.

:func:`clear` is what ``minecube.cube.build(..., mask="csmask")`` applies to every scene;
:func:`model_file` and :func:`provenance` are what ``encoder_weights="csmask-l2a"`` of
:func:`minecube.models.create` starts from.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minecube.errors import MissingDependencyError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["BANDS", "MODEL", "clear", "model_file", "provenance"]

MODEL = "model_4b_l2a"
"""The ukis-csmask model used: 4 bands, surface reflectance (Sentinel-2 L2A, Landsat C2 L2)."""
BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")
"""The model's input bands, in its order."""
RESOLUTION = 30.0
"""Metres per pixel the models were trained at; finer cubes are averaged to about this first."""
_TILE = 256  # the ONNX graph's fixed input size
_STEP = 192  # tiles overlap by a quarter, blended with a tapered window
_INSTALL = "pip install 'minecube[csmask]' (ukis-csmask, onnx and onnxruntime, from PyPI)"


def model_file(name: str = MODEL) -> Path:
    """The ONNX file of an installed ukis-csmask model.

    Raises :class:`~minecube.errors.MissingDependencyError` saying how to install it; nothing
    is downloaded.
    """
    from importlib.util import find_spec

    spec = find_spec("ukis_csmask")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the ukis-csmask models are not installed: {_INSTALL}. On an offline cluster, "
            "install the wheel (ukis_csmask-1.0.0-py3-none-any.whl, 145 MB) from a local copy"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.onnx"
    if not path.is_file():
        raise MissingDependencyError(f"ukis-csmask has no model {name!r} ({path} is missing)")
    return path


@functools.cache
def _settings(name: str = MODEL) -> dict[str, Any]:
    return json.loads(model_file(name).with_suffix(".json").read_text())


@functools.cache
def provenance(name: str = MODEL) -> dict[str, Any]:
    """Where a model's weights come from: package, version, licence, file hash, citation."""
    path = model_file(name)
    settings = _settings(name)
    return {
        "name": f"ukis-csmask {name}",
        "package": "ukis-csmask",
        "package_version": metadata.version("ukis-csmask"),
        "model_version": settings["model"]["version"],
        "file": f"ukis_csmask/{path.name}",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "licence": "Apache-2.0",
        "bands": list(settings["data"]["dataset_statistics"]["band_names"]),
        "trained_on": "Sentinel-2 and Landsat reflectance at about 30 m, labelled clear / cloud "
        "/ cloud shadow (Wieland et al. 2019)",
        "citation": "Wieland, M., Li, Y., Martinis, S. (2019). Multi-sensor cloud and cloud "
        "shadow segmentation with a convolutional neural network. Remote Sensing of "
        "Environment 230, 111203. doi:10.1016/j.rse.2019.05.022",
        "url": "https://github.com/dlr-eoc/ukis-csmask",
    }


@functools.cache
def _session(name: str):
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(f"mask='csmask' runs on onnxruntime: {_INSTALL}") from e
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # dask runs blocks in parallel; one thread each
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(model_file(name)), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _window() -> np.ndarray:
    """A tapered 2-D weight for blending overlapping tiles (never zero, so edges count)."""
    ramp = np.minimum(np.arange(_TILE) + 1, _TILE - np.arange(_TILE)) / (_TILE - _STEP)
    w = np.clip(ramp, 0.05, 1.0)
    return (w[:, None] * w[None, :]).astype("float32")


def _starts(size: int) -> list[int]:
    if size <= _TILE:
        return [0]
    starts = list(range(0, size - _TILE, _STEP))
    return [*starts, size - _TILE]


def _classes(image: np.ndarray, name: str) -> np.ndarray:
    """Clear (0) / cloud (1) / shadow (2) of normalised (n, 4, h, w) images, h and w any size."""
    n, _, h, w = image.shape
    ph, pw = max(0, _TILE - h), max(0, _TILE - w)
    if ph or pw:  # small sites: mirror them out to one tile
        image = np.pad(image, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > 1
                       and ph < h and pw < w else "edge")  # fmt: skip
    height, width = image.shape[-2:]
    session = _session(name)
    window = _window()
    scores = np.zeros((n, 3, height, width), "float32")
    weight = np.zeros((height, width), "float32")
    for y in _starts(height):
        for x in _starts(width):
            tile = np.ascontiguousarray(image[:, :, y : y + _TILE, x : x + _TILE])
            logits = session.run(None, {session.get_inputs()[0].name: tile})[0]
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores[:, :, y : y + _TILE, x : x + _TILE] += window * e / e.sum(1, keepdims=True)
            weight[y : y + _TILE, x : x + _TILE] += window
    return (scores / weight).argmax(1)[:, :h, :w]


def _clear_block(block: np.ndarray, factor: int, buffer: int, model: str) -> np.ndarray:
    """(t, 4, h, w) reflectance in the model's band order → (t, 1, h, w) clear pixels."""
    from scipy import ndimage

    t, c, h, w = block.shape
    stats = _settings(model)["data"]["dataset_statistics"]["img"]
    mean = np.asarray(stats[0], "float32")[:, None, None]
    std = np.asarray(stats[1], "float32")[:, None, None]
    ch, cw = -(-h // factor), -(-w // factor)
    padded = np.pad(block, ((0, 0), (0, 0), (0, ch * factor - h), (0, cw * factor - w)),
                    mode="edge").reshape(t, c, ch, factor, cw, factor)  # fmt: skip
    present = np.isfinite(padded).all(axis=1)
    with np.errstate(invalid="ignore"):
        coarse = np.where(np.isfinite(padded), padded, 0).sum((3, 5)) / np.maximum(
            present.sum((2, 4))[:, None], 1
        )
    coarse = ((coarse - mean) / std).astype("float32")
    labels = _classes(coarse, model)
    cloudy = labels != 0
    if buffer:  # cloud and shadow edges are fuzzy: mask a margin around them
        cloudy = ndimage.binary_dilation(cloudy, structure=np.ones((1, 3, 3)), iterations=buffer)
    fine = np.repeat(np.repeat(~cloudy, factor, axis=1), factor, axis=2)[:, :h, :w]
    return fine[:, None]


def clear(
    reflectance: xr.DataArray, *, resolution: float, buffer: int = 0, name: str = MODEL
) -> xr.DataArray:
    """Where each scene is clear of cloud and cloud shadow, by the ukis-csmask model.

    Parameters
    ----------
    reflectance
        Per-scene surface reflectance (time, band, y, x), 0–1, with at least the bands
        :data:`BANDS`; NaN is nodata. Lazy (dask) or in memory.
    resolution
        The pixel size in metres: finer pixels are averaged to about 30 m, the models' own.
    buffer
        Pixels (at about 30 m) masked around each cloud and shadow. 0 by default: on the real
        test image each pixel of margin loses ~8 % of the clear pixels and gains < 0.1 % of
        the cloud.
    name
        The ukis-csmask model (:data:`MODEL`).

    Returns
    -------
    xarray.DataArray
        Boolean (time, y, x), True where clear; lazy when ``reflectance`` is.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> scenes = np.random.default_rng(0).uniform(0.02, 0.3, (2, 4, 90, 80)).astype("float32")
    >>> r = xr.DataArray(scenes, dims=("time", "band", "y", "x"),
    ...                  coords={"band": ["blue", "green", "red", "nir"]})
    >>> mask = clear(r, resolution=10)  # averaged to 30 m, run, repeated back to 10 m
    >>> mask.dims, mask.shape, mask.dtype
    (('time', 'y', 'x'), (2, 90, 80), dtype('bool'))

    On the ukis-csmask test suite's real Sentinel-2 image (``tests/data/pixels``) this mask
    agrees with the hand-made reference on 88.8 % of pixels and masks 99.8 % of its cloud and
    shadow.
    """
    import dask.array as da
    import xarray as xr

    missing = [b for b in BANDS if b not in reflectance.band.values]
    if missing:
        raise ValueError(
            f"mask='csmask' needs the bands {list(BANDS)}; the cube lacks {missing}: build it "
            f"with bands={list(BANDS)} (or more)"
        )
    _session(name)  # fail here, not inside a dask task, when onnxruntime is missing
    factor = max(1, round(RESOLUTION / float(resolution)))
    ordered = reflectance.sel(band=list(BANDS)).transpose("time", "band", "y", "x")
    data = ordered.data
    if isinstance(data, da.Array):
        data = data.rechunk({1: -1})
        depth = min(32 * factor, *data.chunks[2], *data.chunks[3])
        depth -= depth % factor
        out = da.map_overlap(
            _clear_block, data, depth={2: depth, 3: depth}, boundary="none",
            dtype=bool, chunks=(data.chunks[0], (1,), data.chunks[2], data.chunks[3]),
            factor=factor, buffer=buffer, model=name,
        )[:, 0]  # fmt: skip
    else:
        out = _clear_block(np.asarray(data, "float32"), factor, buffer, name)[:, 0]
    coords = {k: v for k, v in ordered.coords.items() if "band" not in v.dims and k != "band"}
    return xr.DataArray(out, dims=("time", "y", "x"), coords=coords, name="clear")
