"""Inference: cubes of any size → lazy, labelled DataArrays of classes, seam-free and batched.

:func:`segment` turns a (time, band, y, x) cube into a (time, y, x) DataArray of class ids (or
(time, class, y, x) probabilities) with the cube's ``spatial_ref``, lazily, as two dask layers:

1. **Chips.** Chips of ``input_dims`` pixels lie on a grid anchored to the cube: chip ``k``
   covers pixels ``[k·s − h, k·s − h + size)`` along each axis, where ``s = size − overlap`` is
   the stride and ``h = overlap / 2``, so it *owns* the cell ``[k·s, (k+1)·s)`` and spills
   ``h`` pixels into each neighbour's cell. Each dask block (a whole number of cells) reads its
   pixels plus an ``h``-pixel halo, cuts its own chips with :class:`xbatcher.BatchGenerator`,
   runs them through the model in batches of ``batch_size`` and adds their softmax,
   multiplied by a blending window, into accumulators that reach ``h`` pixels past the block.
2. **Fold.** A second ``map_blocks`` over those accumulators with an ``h``-pixel overlap adds
   what each neighbour spilled into the block, divides by the summed weights and takes the
   most probable class.

Every chip is computed once, whatever the chunking. Accumulators are fixed-point integers
(:data:`_SCALE`), so sums are exact and independent of the order in which chips are added:
the result is bit-for-bit the same for any block size and any dask scheduler.

With ``blend="cosine"`` the window rises as sin² over the ``overlap`` pixels shared by two
chips (the weights of neighbours sum to one), which hides chip edges; ``blend="none"`` keeps
each pixel from the chip that owns it. Pixels without a valid observation in every input band
get no weight and come out as ``nodata``.

The model is loaded once per process — from its checkpoint path, cached, or shipped as one
graph key when a loaded model is passed — never pickled into every task.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from minecube.errors import MinecubeError, find_stack_level
from minecube.models import CheckpointError, Segmenter, _card, _is_mlm, _mlm_item, _paths, load
from minecube.store import _fs, _is_url

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "IncompletePredictionError",
    "SegmentError",
    "open_predictions",
    "segment",
    "segment_to_zarr",
]

Blend = Literal["cosine", "none"]
Output = Literal["labels", "probabilities"]

_SCALE = 1 << 20
"""Fixed-point scale of the accumulators: a chip adds round(weight · probability · 2²⁰)."""
_PROBABILITY_NODATA = 255
"""Probabilities are stored as round(p · 254) in uint8; 255 marks pixels without observation."""
_BLOCK_BYTES = 256 * 2**20
"""Target size of one block's accumulators when the block size is chosen automatically."""
_MAX_CHIP = 1024


class SegmentError(MinecubeError, ValueError):
    """A cube, model or setting that segment() cannot work with."""


class IncompletePredictionError(MinecubeError, RuntimeError):
    """A prediction store whose write has not finished."""


@dataclass(frozen=True)
class _Axis:
    """The chip grid and the blocks along one spatial axis."""

    size: int  # chip size, px
    overlap: int  # px shared by neighbouring chips (even)
    extent: int  # px of the cube along the axis
    cuts: tuple[int, ...]  # block boundaries, multiples of the stride except the last

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def halo(self) -> int:
        return self.overlap // 2

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(np.diff(self.cuts).tolist())

    def canvas(self, i: int) -> tuple[int, int]:
        """Length of block ``i``'s canvas (its chips, side by side with their overlaps) and
        where the block's data with its halo start in it, px."""
        lo, hi = self.cuts[i], self.cuts[i + 1]
        first, end = lo // self.stride, -(-hi // self.stride)  # chips owned: [first, end)
        length = (end - first - 1) * self.stride + self.size  # from first·s − h
        return length, self.halo if i == 0 else 0  # data start h px before lo, or at 0

    def window(self, blend: Blend) -> np.ndarray:
        """1-D blending weights over a chip; shifted by the stride they sum to one."""
        w = np.zeros(self.size)
        o, s = self.overlap, self.stride
        if blend == "none":
            w[self.halo : self.halo + s] = 1.0
        else:
            ramp = np.sin(np.pi / 2 * (np.arange(o) + 0.5) / max(o, 1)) ** 2
            w[:o], w[o:s], w[s:] = ramp, 1.0, ramp[::-1]
        return w


def _axis(extent: int, size: int | None, overlap: int, block: int | None, multiple: int) -> _Axis:
    """Chip size, overlap and block boundaries for one axis of ``extent`` pixels."""
    overlap = overlap + overlap % 2
    if size is None:  # cells of about _MAX_CHIP px that tile the extent evenly
        cells = max(1, round(extent / (_MAX_CHIP - overlap)))
        size = -(-extent // cells) + overlap
    size = -(-size // multiple) * multiple
    if not 0 <= 2 * overlap <= size:
        raise SegmentError(
            f"overlap={overlap} px must be at most half the chip size {size} px; lower overlap "
            "or raise input_dims"
        )
    stride = size - overlap
    cells = -(-extent // stride)
    per_block = max(1, (block or extent) // stride)
    cuts = [min(i * stride, extent) for i in range(0, cells, per_block)] + [extent]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] < stride:
        del cuts[-2]  # a sliver of a block joins the one before
    return _Axis(size, overlap, extent, tuple(cuts))


def _auto_block(classes: int, channels: int, stride: int, overlap: int, batch_size: int) -> int:
    """A square block of about ``batch_size`` chips (a multiple of the stride), smaller if its
    buffers would pass _BLOCK_BYTES. Small blocks keep several tasks in flight, so reading,
    blending and writing overlap the forward passes."""
    per_px = 4 * (classes + 1) + 4 * channels
    side = int(math.sqrt(_BLOCK_BYTES / per_px)) - overlap
    cells = max(1, min(side // stride, math.isqrt(batch_size)))
    return cells * stride


# -- one process, one model ------------------------------------------------------------------

_PROCESS_READY = False
_LOCK = threading.Lock()
_FORWARD = threading.Lock()
"""Forward passes outside distributed workers (and on a GPU) run one at a time."""


def _relax_malloc_trim() -> None:
    """Undo distributed's MALLOC_TRIM_THRESHOLD_=65536 in this process (field notes: ~1.8×
    slower torch on CPU): a tiny trim threshold also pins glibc's mmap threshold, so every
    large tensor is mmapped and page-faulted afresh."""
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if value is None or not value.isdigit() or int(value) >= 2**26:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 2**25)
    libc.mallopt(m_trim_threshold, 2**27)


def _in_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _prepare_process() -> None:
    """Once per process. In a dask.distributed worker: undo the malloc trim setting and cap
    torch's threads so that worker threads × torch threads stay within the cores. Elsewhere
    (threaded scheduler, the user's own session) nothing global is changed: forward passes take
    turns under a lock and each uses torch's threads."""
    global _PROCESS_READY
    if _PROCESS_READY:
        return
    import torch

    with _LOCK:
        if not _PROCESS_READY:
            if _in_worker():
                from distributed import get_worker

                _relax_malloc_trim()
                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
                threads = max(1, cores // get_worker().state.nthreads)
                torch.set_num_threads(min(torch.get_num_threads(), threads))
            _PROCESS_READY = True


@functools.lru_cache(maxsize=4)
def _cached(path: str, version: str, device: str) -> Segmenter:
    return load(path, device=device)


@functools.lru_cache(maxsize=4)
def _on_device(model: Segmenter, device: str) -> Segmenter:
    import copy

    return copy.deepcopy(model).to(device).eval()


def _version(ref: str) -> str:
    """What changes when a checkpoint file is replaced: its mtime on disk, its ETag (or size
    and modification time) in object storage."""
    if not _is_url(ref):
        return str(Path(ref).stat().st_mtime_ns)
    fs, path = _fs(ref)
    info = fs.info(path)
    return str(info.get("ETag") or (info.get("size"), info.get("LastModified", info.get("mtime"))))


def _model_for(ref: str | Segmenter, device: str) -> Segmenter:
    """The model of ``ref`` on ``device``, loaded once per process."""
    from minecube.train import pick_device

    device = str(pick_device(device))
    if isinstance(ref, str):
        with _LOCK:
            return _cached(ref, _version(ref), device)
    if str(next(ref.parameters()).device) == device:
        return ref.eval()
    with _LOCK:
        return _on_device(ref, device)


# -- the two passes ---------------------------------------------------------------------------


def _d4_forward(model: Segmenter, x, tta: str | None):
    """Softmax probabilities of a batch, averaged over the 8 symmetries of the square."""
    import torch

    if tta is None:
        return model(x).float().softmax(1)
    total = 0
    for k in range(8):
        t = torch.rot90(x, k % 4, dims=(-2, -1))
        t = t.flip(-1) if k >= 4 else t
        p = model(t).float().softmax(1)
        p = p.flip(-1) if k >= 4 else p
        total = total + torch.rot90(p, -(k % 4), dims=(-2, -1))
    return total / 8


def _predict(model: Segmenter, batch, tta: str | None, batch_size: int):
    """Softmax probabilities (float32, on the model's device) of a batch of (N, C[, T], H, W)
    chips already on that device. On a GPU, a short batch is padded to ``batch_size``."""
    import torch

    device = batch.device
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16
    n = len(batch)
    if device.type == "cuda" and n < batch_size:
        # every batch the same shape, so that the kernels chosen, and a chip's result, do not
        # depend on how many chips the block happened to have left
        batch = torch.cat([batch, batch.new_zeros((batch_size - n, *batch.shape[1:]))])
    with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
        return _d4_forward(model, batch, tta)[:n].float()


def _turn(device) -> contextlib.AbstractContextManager:
    """A block's work on the device, from its features in to its uint8 out, in turn with the
    other blocks' outside dask.distributed workers (threads of one process, or on a GPU):
    torch's kernels use all cores, and two threads' kernels at once would oversubscribe them."""
    serial = device.type == "cuda" or not _in_worker()
    return _FORWARD if serial else contextlib.nullcontext()


_STAGES: dict[str, float] | None = None
"""Seconds spent in each stage of pass 1 and 2, summed over blocks and threads, while a
benchmark collects them (``benchmarks/bench_segment.py``'s stage table); ``None``: not
collected."""


@contextlib.contextmanager
def _stage(name: str, device=None):
    """Add the time of the block of code to ``_STAGES[name]`` (after the device's queued work)."""
    if _STAGES is None:
        yield
        return
    t0 = time.perf_counter()
    yield
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
    with _LOCK:
        _STAGES[name] = _STAGES.get(name, 0.0) + time.perf_counter() - t0


def _canvas(x: np.ndarray, ok: np.ndarray, mean, std, shape, origin, device):
    """The block's features, normalised, on ``device`` in a zeroed canvas of ``shape`` (y, x)
    at ``origin``, and where they are valid: one transfer in, the arithmetic on the device."""
    import torch

    (ny, nx), (oy, ox), (hy, hx) = shape, origin, x.shape[-2:]
    features = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)
    ok_t = torch.from_numpy(ok).to(device)
    mean_t, std_t = (torch.from_numpy(np.asarray(v, np.float32)).to(device) for v in (mean, std))
    data = torch.zeros((*x.shape[:2], ny, nx), dtype=torch.float32, device=device)
    valid = torch.zeros((x.shape[0], ny, nx), dtype=torch.bool, device=device)
    # out of place: on the CPU ``features`` shares memory with the dask block
    normalised = (features - mean_t) / std_t
    data[..., oy : oy + hy, ox : ox + hx] = normalised.where(ok_t[:, None], 0.0)
    valid[:, oy : oy + hy, ox : ox + hx] = ok_t
    return data, valid


def _chip_jobs(ok: np.ndarray, ay: _Axis, ax: _Axis, origin, shape) -> list[tuple[int, int, int]]:
    """(period, chip row, chip column) of every chip with an observed pixel, row-major over the
    chip grid, cut by xbatcher from the canvas of the block's validity."""
    import xarray as xr
    import xbatcher

    (oy, ox), (ny, nx), (hy, hx) = origin, shape, ok.shape[-2:]
    valid = np.zeros((ok.shape[0], ny, nx), bool)
    valid[:, oy : oy + hy, ox : ox + hx] = ok
    canvas = xr.Dataset(
        {"valid": (("time", "y", "x"), valid)},
        coords={"y": np.arange(ny), "x": np.arange(nx)},
    )
    chips = xbatcher.BatchGenerator(  # whole periods, windows over y and x
        canvas,
        input_dims={"time": ok.shape[0], "y": ay.size, "x": ax.size},
        input_overlap={"y": ay.overlap, "x": ax.overlap},
    )
    jobs = []
    for chip in chips:
        seen = chip["valid"].values.any(axis=(1, 2))
        cy, cx = int(chip.y[0]), int(chip.x[0])
        jobs += [(t, cy, cx) for t in np.flatnonzero(seen)]  # else: no weight in the chip
    return jobs


def _chip_block(
    x: np.ndarray,
    ref: str | Segmenter,
    *,
    ay: _Axis,
    ax: _Axis,
    mean: np.ndarray,
    std: np.ndarray,
    classes: int,
    frames: int,
    blend: Blend,
    batch_size: int,
    tta: str | None,
    device: str,
    finish: Callable,
    block_id: tuple[int, ...],
) -> np.ndarray:
    """Pass 1: (T, C, y + halo, x + halo) features → a :class:`_Block` (in a 1 × 1 × 1 × 1
    object array): the block's output as far as its own chips decide it, and its accumulator
    strips along the sides that have a neighbour. Normalising, blending, accumulating and the
    arg-max run as tensors on the model's device; only the uint8 output and the thin strips
    come back."""
    import torch

    iy, ix = block_id[-2], block_id[-1]
    times = x.shape[0]
    (ny, oy), (nx, ox) = ay.canvas(iy), ax.canvas(ix)
    ext_y = ay.cuts[iy + 1] - ay.cuts[iy] + 2 * ay.halo
    ext_x = ax.cuts[ix + 1] - ax.cuts[ix] + 2 * ax.halo
    ok = np.isfinite(x).all(axis=1)
    if not ok.any():
        empty = torch.zeros((times, classes + 1, ext_y, ext_x), dtype=torch.int32)
        return _Block.of(empty, ay, ax, iy, ix, finish)
    _prepare_process()
    model = _model_for(ref, device)
    dev = next(model.parameters()).device
    jobs = _chip_jobs(ok, ay, ax, (oy, ox), (ny, nx))
    weight = np.outer(ay.window(blend), ax.window(blend)).astype(np.float32) * _SCALE
    # one chip at a time on the CPU: its kernels gain little from batches, and their sums can
    # depend on the batch, which depends on the blocks
    step = 1 if dev.type == "cpu" else batch_size
    with _turn(dev), torch.inference_mode():
        with _stage("normalise", dev):
            data, valid = _canvas(x, ok, mean, std, (ny, nx), (oy, ox), dev)
            weight = torch.from_numpy(weight).to(dev)
            acc = torch.zeros((times, classes + 1, ny, nx), dtype=torch.int32, device=dev)
        for i in range(0, len(jobs), step):
            batch = jobs[i : i + step]
            with _stage("forward", dev):
                chips = torch.stack([_chip_input(data, t, cy, cx, ay, ax, frames)
                                     for t, cy, cx in batch])  # fmt: skip
                probs = _predict(model, chips, tta, batch_size)
            with _stage("blend", dev):
                for (t, cy, cx), p in zip(batch, probs, strict=True):
                    ys, xs = np.s_[cy : cy + ay.size], np.s_[cx : cx + ax.size]
                    w = weight * valid[t, ys, xs]  # float32, fixed-point scale
                    acc[t, :classes, ys, xs] += p.mul_(w).round_().to(torch.int32)
                    acc[t, classes, ys, xs] += w.round_().to(torch.int32)
        # the canvas starts h px before the block and reaches at least h px past it
        with _stage("finish", dev):
            return _Block.of(acc[..., :ext_y, :ext_x], ay, ax, iy, ix, finish)


def _chip_input(data, t: int, cy: int, cx: int, ay: _Axis, ax: _Axis, frames: int):
    """One chip of the canvas: (C, H, W), or (C, frames, H, W) with the period and the
    ``frames`` − 1 before it (the first repeated)."""
    window = np.s_[..., cy : cy + ay.size, cx : cx + ax.size]
    if frames == 1:
        return data[t][window]
    before = [max(0, t - frames + 1 + j) for j in range(frames)]
    return data[before][window].movedim(0, 1)


def _finish(a, *, classes: int, kind: Output, lut: np.ndarray, nodata: int) -> np.ndarray:
    """(T, classes + 1, y, x) accumulators (a tensor, on any device) → uint8 labels (T, y, x)
    or probabilities, as numpy: the block's output leaves the device as uint8."""
    import torch

    weight = a[:, classes]
    seen = weight > 0
    if kind == "labels":
        # the classes last and contiguous: a strided arg-max over dim 1 is ~8× slower
        best = a[:, :classes].permute(0, 2, 3, 1).contiguous().argmax(-1)
        labels = torch.from_numpy(lut).to(a.device)[best]
        return labels.masked_fill_(~seen, nodata).cpu().numpy()
    p = a[:, :classes].double() / weight.where(seen, 1)[:, None]
    q = p.mul_(_PROBABILITY_NODATA - 1).round_().to(torch.uint8)
    return q.masked_fill_(~seen[:, None], _PROBABILITY_NODATA).cpu().numpy()


@dataclass
class _Block:
    """What pass 1 keeps of a block: its output where its own chips decide it, and the 2h-px
    accumulator strips (h spilled out, h of its own border) along each side with a neighbour.
    Keeping these instead of the accumulators keeps memory small while neighbours wait."""

    out: np.ndarray
    strips: dict[str, np.ndarray]
    core: tuple[int, int]

    @classmethod
    def of(cls, ext: np.ndarray, ay: _Axis, ax: _Axis, iy: int, ix: int, finish) -> np.ndarray:
        h, w = ay.halo, ax.halo
        cy, cx = ext.shape[-2] - 2 * h, ext.shape[-1] - 2 * w
        sides = {
            "top": (iy > 0, np.s_[..., : 2 * h, :]),
            "bottom": (iy < len(ay.chunks) - 1, np.s_[..., ext.shape[-2] - 2 * h :, :]),
            "left": (ix > 0, np.s_[..., :, : 2 * w]),
            "right": (ix < len(ax.chunks) - 1, np.s_[..., :, ext.shape[-1] - 2 * w :]),
        }
        strips = {k: ext[cut].cpu().numpy().copy() for k, (present, cut) in sides.items()
                  if present}  # fmt: skip
        block = cls(finish(ext[..., h : h + cy, w : w + cx]), strips, (cy, cx))
        holder = np.empty((1, 1, 1, 1), dtype=object)
        holder[0, 0, 0, 0] = block
        return holder


def _fold(own: np.ndarray, *neighbours: np.ndarray | None, h: int, w: int, finish) -> np.ndarray:
    """Pass 2: a block's output, its border completed with what its neighbours spilled.

    ``neighbours`` are the pass-1 results of the blocks above-left, above, above-right, left,
    right, below-left, below, below-right (``None`` at the cube's edge)."""
    block: _Block = own[0, 0, 0, 0]
    if not block.strips:
        return block.out
    with _stage("fold"):
        return _folded(block, neighbours, h, w, finish)


def _folded(block: _Block, neighbours, h: int, w: int, finish) -> np.ndarray:
    import torch

    cy, cx = block.core
    s = block.strips
    acc = np.zeros((*s[next(iter(s))].shape[:2], cy, cx), np.int32)
    # the block's own accumulators along its border ...
    if "top" in s:
        acc[..., :h, :] = s["top"][..., h:, w : w + cx]
    if "bottom" in s:
        acc[..., cy - h :, :] = s["bottom"][..., :h, w : w + cx]
    if "left" in s:
        acc[..., :, :w] = s["left"][..., h : h + cy, w:]
    if "right" in s:
        acc[..., :, cx - w :] = s["right"][..., h : h + cy, :w]
    # ... plus the neighbours' spills: (strip, its rows, its cols, our rows, our cols)
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    for (dy, dx), other in zip(offsets, neighbours, strict=True):
        if other is None:
            continue
        n: _Block = other[0, 0, 0, 0]
        if dy:  # the neighbour's strip facing us, full width
            strip = n.strips["bottom" if dy < 0 else "top"]
            rows = np.s_[h:] if dy < 0 else np.s_[:h]
            cols = {-1: np.s_[strip.shape[-1] - w :], 0: np.s_[w : w + cx], 1: np.s_[:w]}[dx]
        else:
            strip = n.strips["right" if dx < 0 else "left"]
            rows, cols = np.s_[h : h + cy], np.s_[w:] if dx < 0 else np.s_[:w]
        ours_y = {-1: np.s_[:h], 0: np.s_[:], 1: np.s_[cy - h :]}[dy]
        ours_x = {-1: np.s_[:w], 0: np.s_[:], 1: np.s_[cx - w :]}[dx]
        acc[..., ours_y, ours_x] += strip[..., rows, cols]
    out = block.out.copy()
    # only the border ring is finished (the arg-max is per pixel); np.zeros left the rest
    # of the accumulators untouched
    for side, cut in (("top", np.s_[..., :h, :]), ("bottom", np.s_[..., cy - h :, :]),
                      ("left", np.s_[..., :w]), ("right", np.s_[..., cx - w :])):  # fmt: skip
        if side in s:
            out[cut] = finish(torch.from_numpy(np.ascontiguousarray(acc[cut])))
    return out


# -- public API -------------------------------------------------------------------------------


def _reference(model: str | os.PathLike | Segmenter) -> tuple[str | Segmenter, Segmenter]:
    """(what the tasks get, the model read here for its card)."""
    if isinstance(model, Segmenter):
        if model.card is None:
            raise SegmentError(
                "the model has no card (bands, normalisation, classes); use a model from "
                "minecube.train.fit or minecube.models.load, or its checkpoint path"
            )
        return model, model
    if _is_mlm(model):  # the model's STAC MLM item
        weights = model if _is_url(model) else Path(model)
    else:
        weights, _ = _paths(model)
    ref = weights if isinstance(weights, str) else str(weights.resolve())
    try:
        version = _version(ref)
    except OSError:  # missing: load says so, naming both files
        version = None
    # fails here, not in a worker, for a missing or corrupt checkpoint; read once per process
    # and version, as the tasks read it (a site after site of a run costs no reload)
    loaded = load(model) if version is None else _cached(ref, version, "cpu")
    return ref, loaded


def _cube_features(cube: xr.Dataset | xr.DataArray, bands: tuple[str, ...]) -> xr.DataArray:
    import xarray as xr

    from minecube.chips import features

    if isinstance(cube, xr.DataArray):
        if "band" not in cube.dims:
            raise SegmentError(f"a cube DataArray needs a band dimension; it has {cube.dims}")
        cube = cube.to_dataset(name="reflectance")
    if "reflectance" not in cube:
        raise SegmentError(
            f"the cube has no 'reflectance' variable (it has {list(cube.data_vars)}); pass a "
            "cube from minecube.cube.build / open_cube"
        )
    missing = {"time", "band", "y", "x"} - set(cube.reflectance.dims)
    if missing:
        raise SegmentError(
            f"reflectance must have dims (time, band, y, x); it lacks {sorted(missing)}"
        )
    if cube.rio.crs is None:
        raise SegmentError(
            "the cube has no CRS; write one with cube.rio.write_crs('EPSG:…') or build it with "
            "minecube.cube.build, so predictions can be placed on the map"
        )
    return features(cube, bands)


def segment(
    cube: xr.Dataset | xr.DataArray,
    model: str | os.PathLike | Segmenter,
    *,
    batch_size: int = 8,
    input_dims: Mapping[str, int] | None = None,
    overlap: int = 32,
    blend: Blend = "cosine",
    output: Output = "labels",
    tta: Literal["d4"] | None = None,
    device: str = "auto",
    chunks: int | Mapping[str, int] | None = None,
    any_sensor: bool = False,
) -> xr.DataArray:
    """Segment a cube with a trained model, lazily, into a labelled DataArray.

    Parameters
    ----------
    cube
        A cube Dataset with ``reflectance`` (time, band, y, x) and a CRS, as from
        :func:`minecube.cube.build` or :func:`minecube.cube.open_cube`, or that DataArray.
    model
        A checkpoint path (from :func:`minecube.models.save`; loaded once per worker process)
        or a trained model with its card. Bands, NDVI and normalisation come from the card.
    batch_size
        Chips per forward pass on a GPU. On the CPU chips run one at a time: batches gain
        little there, and CPU kernels can round differently in another batch, which would tie
        the probabilities to the block layout.
    input_dims
        Chip size in pixels, ``{"y": …, "x": …}``, rounded up to the network's stride. Default:
        chips that tile the cube evenly with cells of about 1000 px (fully convolutional models
        run on any size; Prithvi keeps its training chip size).
    overlap
        Pixels shared by neighbouring chips (rounded up to even); the dask halo is half of it.
    blend
        ``"cosine"`` (sin² ramps over the overlap) or ``"none"`` (each pixel from one chip).
    output
        ``"labels"``: uint8 class ids (time, y, x). ``"probabilities"``: uint8 (time, class, y,
        x) holding round(p · 254), 255 where unobserved.
    tta
        ``"d4"`` averages the predictions of the 8 flips/rotations of each chip (8× the work).
    device
        ``"auto"`` (CUDA if available, with autocast), ``"cpu"``, ``"cuda:1"``…
    chunks
        Block size in pixels (int or ``{"y": …, "x": …}``), rounded to a multiple of the chip
        stride; default: about ``batch_size`` chips, within 256 MiB of buffers.
    any_sensor
        Segment a cube of a sensor the model was not trained on (its card's
        ``training["sensors"]``; the cube's ``attrs["sensor"]``). Off by default: another
        sensor's band passes, resolution and radiometry differ from what the model learned.

    Returns
    -------
    xarray.DataArray
        Lazy predictions on the cube's grid and ``spatial_ref``, with CF ``flag_values`` /
        ``flag_meanings`` of the model's class schema and ``nodata`` where the cube had no
        valid observation in every input band.

    Examples
    --------
    >>> import numpy as np, rioxarray, xarray as xr
    >>> from minecube.chips import Normalisation
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> from minecube.models import card_for, create
    >>> model = create("fpn", encoder_name="resnet18", in_channels=4)
    >>> norm = Normalisation(("red", "green", "blue", "nir"), (0.1,) * 4, (0.05,) * 4)
    >>> model.card = card_for(model, bands=norm.bands, normalisation=norm, schema=DEFAULT_CLASSES)
    >>> cube = xr.Dataset(
    ...     {"reflectance": (("time", "band", "y", "x"), np.full((2, 4, 96, 80), 0.1, "float32"))},
    ...     coords={"band": ["blue", "green", "red", "nir"], "y": 5000 - 10 * np.arange(96),
    ...             "x": 300000 + 10 * np.arange(80)}).rio.write_crs("EPSG:32756")
    >>> labels = segment(cube, model, input_dims={"y": 64, "x": 64}, overlap=16)
    >>> labels.dims, labels.shape, labels.dtype.name, labels.rio.crs.to_epsg()
    (('time', 'y', 'x'), (2, 96, 80), 'uint8', 32756)
    >>> int(labels.isel(time=0).isin(DEFAULT_CLASSES.ids).all())
    1
    """
    import dask.array as da
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    if blend not in ("cosine", "none"):
        raise SegmentError(f"blend={blend!r} is not 'cosine' or 'none'")
    if output not in ("labels", "probabilities"):
        raise SegmentError(f"output={output!r} is not 'labels' or 'probabilities'")
    if tta not in (None, "d4"):
        raise SegmentError(f"tta={tta!r} is not None or 'd4'")
    if batch_size < 1:
        raise SegmentError(f"batch_size={batch_size} must be at least 1")
    ref, loaded = _reference(model)
    card = loaded.card
    schema, spec = card.schema, loaded.spec
    if len(schema) != spec.classes:
        raise CheckpointError(
            f"the network predicts {spec.classes} classes but its card's schema has "
            f"{len(schema)} ({schema.names}); the card does not belong to these weights"
        )
    if isinstance(cube, xr.DataArray | xr.Dataset) and "band" in cube.coords:
        card.check_bands([str(b) for b in cube.band.values])
    card.check_sensor(cube, any_sensor=any_sensor)
    feats = _cube_features(cube, card.bands)
    if spec.architecture == "prithvi" and input_dims is None:
        input_dims = card.training.get("input_dims")
    dims = dict(input_dims or {})
    if isinstance(chunks, int):
        chunks = {"y": chunks, "x": chunks}
    chunks = dict(chunks or {})
    if not set(dims) <= {"y", "x"} or not set(chunks) <= {"y", "x"}:
        raise SegmentError(f"input_dims and chunks take 'y' and 'x' only, got {dims}, {chunks}")
    classes, channels = len(schema), len(card.bands)
    axes = []
    for d in ("y", "x"):
        extent = feats.sizes[d]
        probe = _axis(extent, dims.get(d), overlap, None, loaded.stride)
        block = chunks.get(d) or _auto_block(
            classes, channels, probe.stride, probe.overlap, batch_size
        )
        if chunks.get(d) and chunks[d] % probe.stride:
            warnings.warn(
                f"chunks {d}={chunks[d]} is not a multiple of the chip stride {probe.stride} px "
                f"(input_dims {probe.size} − overlap {probe.overlap}); blocks of "
                f"{max(1, chunks[d] // probe.stride) * probe.stride} px are used instead",
                stacklevel=find_stack_level(),
            )
        axes.append(_axis(extent, dims.get(d), overlap, block, loaded.stride))
    ay, ax = axes
    frames = spec.frames
    chips = len(range(0, ay.cuts[1], ay.stride)) * len(range(0, ax.cuts[1], ax.stride))
    time_chunk = -(-batch_size // chips) if frames == 1 else feats.sizes["time"]  # fill a batch
    data = feats.data if isinstance(feats.data, da.Array) else da.from_array(feats.values)
    data = data.rechunk((time_chunk, -1, ay.chunks, ax.chunks))
    halo = {0: 0, 1: 0, 2: ay.halo, 3: ax.halo}
    padded = da.overlap.overlap(data, depth=halo, boundary="none") if ay.halo or ax.halo else data
    norm = card.normalisation
    shape = (-1, 1, 1)
    ref_key = ref
    if isinstance(ref, Segmenter):  # one graph key, sent once to each worker
        import uuid

        import dask

        model_id = ref.__dict__.setdefault("_minecube_key", uuid.uuid4().hex)  # per model object
        ref_key = dask.delayed(ref, pure=True, name=f"minecube-model-{model_id}")
    token = tokenize(padded.name, ay, ax, blend, tta, batch_size, device, str(ref_key))
    lut = np.asarray(schema.ids, np.uint8)
    finish = functools.partial(_finish, classes=classes, kind=output, lut=lut, nodata=schema.nodata)
    nt, nby, nbx = len(data.chunks[0]), len(ay.chunks), len(ax.chunks)
    blocks = da.map_blocks(
        _chip_block,
        padded,
        ref_key,
        ay=ay,
        ax=ax,
        mean=np.asarray(norm.mean, np.float32).reshape(shape),
        std=np.asarray(norm.std, np.float32).reshape(shape),
        classes=classes,
        frames=frames,
        blend=blend,
        batch_size=batch_size,
        tta=tta,
        device=device,
        finish=finish,
        chunks=((1,) * nt, (1,), (1,) * nby, (1,) * nbx),
        dtype=object,
        meta=np.empty((0, 0, 0, 0), dtype=object),
        name=f"minecube-chips-{token}",
    )
    name = f"minecube-{output}-{token}"
    fold = functools.partial(_fold, h=ay.halo, w=ax.halo, finish=finish)
    layer = {}
    for t, i, j in np.ndindex(nt, nby, nbx):
        around = [
            (blocks.name, t, 0, i + dy, j + dx) if 0 <= i + dy < nby and 0 <= j + dx < nbx else None
            for dy, dx in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
        ]
        key = (name, t, i, j) if output == "labels" else (name, t, 0, i, j)
        layer[key] = (fold, (blocks.name, t, 0, i, j), *around)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[blocks])
    time = feats.time
    if output == "labels":
        out = da.Array(graph, name, (data.chunks[0], ay.chunks, ax.chunks), dtype=np.uint8)
        result = xr.DataArray(
            out,
            dims=("time", "y", "x"),
            coords={"time": time, "y": feats.y, "x": feats.x},
            name="prediction",
            attrs={"long_name": "predicted class id", **schema.cf_attrs()},
        )
        nodata = schema.nodata
    else:
        chunks = (data.chunks[0], (classes,), ay.chunks, ax.chunks)
        out = da.Array(graph, name, chunks, dtype=np.uint8)
        result = xr.DataArray(
            out,
            dims=("time", "class", "y", "x"),
            coords={"time": time, "class": schema.names, "y": feats.y, "x": feats.x},
            name="probability",
            attrs={
                "long_name": "class probability",
                "units": "1",
                "scale_factor": 1 / (_PROBABILITY_NODATA - 1),
                "add_offset": 0.0,
            },
        )
        nodata = _PROBABILITY_NODATA
    crs = feats.rio.crs if feats.rio.crs is not None else cube.rio.crs
    if cube.attrs.get("site_id"):
        result.attrs["site_id"] = cube.attrs["site_id"]
    result.attrs["model"] = ref if isinstance(ref, str) else "in-memory model"
    result.attrs["model_spec"] = f"{spec.architecture}-{spec.encoder_name}"
    result.attrs["bands"] = list(card.bands)
    for key in ("sensor", "degraded_periods"):  # degraded: the cube periods built without items
        if getattr(cube, "attrs", {}).get(key) not in (None, "", "{}"):
            result.attrs[key] = cube.attrs[key]
    result.attrs["segment"] = {
        "input_dims": {"y": ay.size, "x": ax.size},
        "overlap": ay.overlap,
        "blend": blend,
        "tta": tta,
    }
    return result.rio.write_crs(crs).rio.write_nodata(nodata)


def _fingerprint(pred: xr.DataArray, card) -> dict:
    """What must match for a stored prediction to be resumed rather than started again."""
    return {
        "model": Path(pred.attrs["model"]).name,  # stored: never a machine's absolute path
        "model_created": card.created,
        "model_spec": pred.attrs["model_spec"],
        "bands": list(card.bands),
        "segment": pred.attrs["segment"],
        "name": str(pred.name),
        "time": [str(t)[:19] for t in pred.time.values],
        "shape": [int(n) for n in pred.shape],
        "chunks": [list(map(int, c)) for c in pred.chunks],
        "origin": [float(pred.y[0]), float(pred.x[0])],
        "crs": pred.rio.crs.to_wkt(),
    }


def _regions(pred: xr.DataArray) -> list[tuple[str, dict[str, slice]]]:
    """Each output chunk as (name, {dim: slice}), in order."""
    bounds = {d: np.cumsum((0, *c)).tolist() for d, c in zip(pred.dims, pred.chunks, strict=True)}
    out = []
    for index in itertools.product(*(range(len(c)) for c in pred.chunks)):
        pairs = list(zip(pred.dims, index, strict=True))
        name = ":".join(f"{d}{i}" for d, i in pairs)
        out.append((name, {d: slice(bounds[d][i], bounds[d][i + 1]) for d, i in pairs}))
    return out


_WRITE_EVENT = "minecube-write"
"""The dask.distributed event topic of each region written by a worker
(``client.get_events("minecube-write")``)."""


def _write_block(
    block: np.ndarray, *, store: str, path: str, marks: str, bounds, block_id
) -> np.ndarray:
    """Write one computed region into its Zarr array (the region covers whole Zarr chunks),
    once: a mark in ``marks`` written after the data tells a second run of this task (its
    worker was lost before the scheduler heard it finished) that there is nothing to do."""
    import zarr

    fs, _ = _fs(store)
    mark = f"{marks}/{'.'.join(map(str, block_id))}"
    if fs.exists(mark):
        return np.ones((1,) * block.ndim, bool)
    where = tuple(slice(b[i], b[i + 1]) for b, i in zip(bounds, block_id, strict=True))
    # a region of no label throughout equals the fill value: written all the same, as every
    # region's chunks are recorded (zarr 3.1's open_array ignores config= for an existing array)
    array = zarr.open_array(store, path=path, mode="r+").with_config({"write_empty_chunks": True})
    array[where] = block
    fs.pipe_file(mark, b"")
    if _in_worker():  # a structured event on the scheduler: which region, written by whom
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(_WRITE_EVENT, {"store": store, "path": path, "block": list(block_id),
                                        "worker": worker.address})  # fmt: skip
    return np.ones((1,) * block.ndim, bool)


def _compute_each(tasks: Mapping[str, Any], done: Callable[[str], None]) -> None:
    """Compute dask ``tasks`` in one graph (shared work done once) on the active scheduler,
    calling ``done(name)`` in this thread as each one finishes."""
    import dask
    from dask.base import get_scheduler
    from dask.callbacks import Callback

    client = getattr(get_scheduler(), "__self__", None)
    if client is not None and hasattr(client, "compute"):  # a dask.distributed Client
        from distributed import as_completed

        futures = {client.compute(task): name for name, task in tasks.items()}
        try:
            for future in as_completed(list(futures)):
                future.result()
                done(futures.pop(future))
                # forget the finished write: were its worker lost later, the scheduler would
                # otherwise run it again to restore a result nobody needs, writing it twice
                future.release()
        finally:
            client.cancel(list(futures))
        return
    names = {task.key: name for name, task in tasks.items()}

    class _Finished(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in names:
                done(names[key])

    with _Finished():
        dask.compute(*tasks.values())


_RECORD_EVERY = 0.5
"""Seconds between two writes of a prediction group's manifest while regions complete (the
record lags the data by at most this; regions written but not yet recorded are redone)."""


def segment_to_zarr(
    cube: xr.Dataset | xr.DataArray,
    model: str | os.PathLike | Segmenter,
    store: str | os.PathLike,
    *,
    group: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    fail_after: int | None = None,
    **kwargs,
) -> xr.DataArray:
    """Segment a cube into a Zarr store region by region, resuming an interrupted write.

    The store's metadata is written first; then each block of :func:`segment`'s output is
    computed and written (several at once, on whatever dask scheduler is active) and marked
    complete in the group's manifest only after its data are in the store. Running the same
    call again after a crash or a kill skips the regions marked complete and recomputes the
    rest; the manifest (:mod:`minecube.store`) marks the group complete only when every region is.

    Parameters
    ----------
    cube, model
        As for :func:`segment`.
    store
        Zarr store path or URL.
    group
        Group name (default: the cube's ``site_id``).
    progress
        Show a progress bar over regions.
    overwrite
        Start again even if the group holds predictions made with other settings.
    fail_after
        For tests: raise after this many regions, as a crash would.
    **kwargs
        Passed to :func:`segment` (``batch_size``, ``overlap``, ``output``, ``chunks``…).

    Returns
    -------
    xarray.DataArray
        The stored predictions, opened lazily with :func:`open_predictions`.

    Examples
    --------
    ``segment_to_zarr(open_cube("cubes.zarr", "hunter-coal"), "models/fpn-rgbn",
    "predictions.zarr")`` writes group ``hunter-coal`` of ``predictions.zarr``.
    """
    from minecube import store as stores
    from minecube.catalog import describe_group
    from minecube.sites import check_site_id

    group = group or cube.attrs.get("site_id")
    if not group:
        raise SegmentError("give group= (the cube has no site_id to name its Zarr group)")
    check_site_id(group, what="group")  # before any work: it names a folder of the store
    pred = segment(cube, model, **kwargs)
    # segment() has checked a checkpoint; its card is enough here
    card = model.card if isinstance(model, Segmenter) else _card(model)
    fingerprint = _fingerprint(pred, card)
    with stores.writing(store, group, "predictions") as manifest:  # the group's only writer
        _write_predictions(pred, store, group, manifest, fingerprint, overwrite=overwrite,
                           progress=progress, fail_after=fail_after)  # fmt: skip
        item = None if isinstance(model, Segmenter) else _mlm_item(model)
        describe_group(store, group, model=item)  # linked to the model's MLM item, if any
    return open_predictions(store, group)


def _write_predictions(
    pred, store, group: str, manifest: dict, fingerprint: dict, *,
    overwrite: bool, progress: bool, fail_after: int | None,
) -> None:  # fmt: skip
    """Write the regions of ``pred`` that the group's manifest does not record whole, marking
    each as its write finishes; the manifest says ``complete`` when all are."""
    from tqdm.auto import tqdm

    from minecube import store as stores

    stored = manifest.get("fingerprint")
    if stored is not None and stored != fingerprint and not overwrite:
        differ = sorted(k for k in fingerprint if stored.get(k) != fingerprint[k])
        raise SegmentError(
            f"group {group!r} of {os.fspath(store)!r} holds predictions made with other "
            f"{differ}; write to another group or pass overwrite=True to start again"
        )
    if stored != fingerprint:
        manifest = stores.clear_group(store, group, manifest)
        # the nodata value as a CF flag, not a _FillValue: plain xarray keeps uint8 classes;
        # spatial_ref named a coordinate (xarray leaves out a grid_mapping's variable)
        attrs = _stored_attrs(pred) | {"model": fingerprint["model"], "coordinates": "spatial_ref"}
        fill = attrs.pop("_FillValue", None)  # probabilities'; labels' is a flag now
        encoding = {**pred.encoding, "_FillValue": fill}
        encoding["chunks"] = tuple(c[0] for c in pred.chunks)  # one Zarr chunk per region
        from zarr.codecs import Crc32cCodec, ZstdCodec

        encoding["compressors"] = (ZstdCodec(), Crc32cCodec())
        template = pred.copy()
        template.attrs = attrs
        template.to_dataset().to_zarr(
            store, group=group, mode="a", compute=False, consolidated=False,
            encoding={pred.name: encoding},
        )  # fmt: skip
        manifest |= {"fingerprint": fingerprint, "complete": False}
        stores.write_manifest(store, group, manifest)  # after the template is whole
    stores.require_meta(
        store, group, manifest,
        "Write the predictions again with overwrite=True (--overwrite), or into a new store",
    )  # fmt: skip
    damaged = stores.verify(store, group, manifest)
    units = manifest["units"]
    for name in damaged:
        units.pop(name)
    done = list(units)
    import dask.array as da
    from dask.base import tokenize

    fs, root = stores._fs(store)
    # regions written whole, by fingerprint: a region the manifest found damaged is redone
    marks = f"{stores.marks_path(store, group)}/{tokenize(fingerprint)}"
    fs.makedirs(marks, exist_ok=True)
    blocks = {
        name: index
        for (name, _), index in zip(_regions(pred), np.ndindex(pred.data.numblocks), strict=True)
    }
    for name in damaged:
        if fs.exists(mark := f"{marks}/{'.'.join(map(str, blocks[name]))}"):
            fs.rm(mark)
    bounds = [np.cumsum((0, *c)).tolist() for c in pred.chunks]
    written = da.map_blocks(
        _write_block,
        pred.data,
        store=os.fspath(store),
        path=f"{group}/{pred.name}",
        marks=marks,
        bounds=bounds,
        chunks=tuple((1,) * len(c) for c in pred.chunks),
        dtype=bool,
        name=f"minecube-write-{tokenize(pred.data.name, os.fspath(store), group)}",
    ).to_delayed()  # one graph: work shared between regions is done once
    writes = {name: written[index] for name, index in blocks.items() if name not in done}
    bar = tqdm(total=len(writes), desc=f"segment {group}", unit="region", disable=not progress)
    size = tuple(c[0] for c in pred.chunks)  # the Zarr chunk; a last region may span two
    keys = {
        name: [
            stores.chunk_keys(str(pred.name), index)
            for index in itertools.product(
                *(
                    range(r.start // n, -(-r.stop // n))
                    for r, n in zip(where.values(), size, strict=True)
                )
            )
        ]
        for name, where in _regions(pred)
    }
    finished, last = len(done), time.monotonic()

    def mark(name: str) -> None:
        nonlocal last
        if fail_after is not None and len(done) - finished >= fail_after:
            stores.write_manifest(store, group, manifest)
            raise RuntimeError(f"stopped after {fail_after} regions (fail_after={fail_after})")
        units[name] = {
            "status": "complete",
            "chunks": {key: fs.size(f"{root}/{group}/{key}") for key in keys[name]},
        }
        done.append(name)
        if time.monotonic() - last >= _RECORD_EVERY:  # the record lags the data a little
            stores.write_manifest(store, group, manifest)
            last = time.monotonic()
        bar.update()

    try:
        _compute_each(writes, mark)
    finally:
        bar.close()
        stores.write_manifest(store, group, manifest)  # every region marked is written
    manifest["complete"] = len(units) == len(keys)
    stores.write_manifest(store, group, manifest)
    if manifest["complete"]:  # the record says it all now
        fs.rm(marks.rsplit("/", 1)[0], recursive=True)


def _open_store(store: str | os.PathLike):
    """The root group of a prediction store, read-only, or a FileNotFoundError that says so."""
    import zarr

    try:
        return zarr.open_group(store, mode="r")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no prediction store at {os.fspath(store)!r}; write one with segment_to_zarr(...)"
        ) from None


def open_predictions(store: str | os.PathLike, group: str) -> xr.DataArray:
    """Open predictions written by :func:`segment_to_zarr`, refusing an unfinished write.

    Raises :class:`IncompletePredictionError` (with the number of regions still missing) when
    the write has not completed: run the same :func:`segment_to_zarr` call again to finish it.
    """
    import rioxarray  # noqa: F401 - registers .rio on the result
    import xarray as xr

    from minecube import store as stores

    root = _open_store(store)
    manifest = stores.read_manifest(store, group)
    if manifest is None or manifest.get("kind") != "predictions":
        written = sorted(
            k for k in root.group_keys() if (stores.read_manifest(store, k) or {}).get("kind")
        )
        raise SegmentError(
            f"no predictions {group!r} in {os.fspath(store)!r}; it holds {written or 'none'}"
        )
    if not manifest.get("complete"):
        raise IncompletePredictionError(
            f"predictions {group!r} in {os.fspath(store)!r} are incomplete "
            f"({len(manifest.get('units', {}))} regions written); run the same "
            "segment_to_zarr call again to resume"
        )
    stores.require_intact(
        store, group, manifest,
        "Run the same segment_to_zarr call again to recompute those regions, or "
        "`minecube check` for the whole store",
    )  # fmt: skip
    attrs = {"minecube:segment": manifest["fingerprint"]}
    ds = xr.open_zarr(
        store, group=group, decode_coords="all", mask_and_scale=False, consolidated=False
    )
    pred = _in_memory(ds[attrs["minecube:segment"]["name"]])
    pred.attrs.setdefault("site_id", group)
    return pred


def _stored_attrs(pred: xr.DataArray) -> dict:
    """Attributes of labels as stored: the no-label value as the first CF flag (``no_data``)
    and ``nodata``, not as ``_FillValue``, so that ``xr.open_zarr`` reads uint8 classes and
    every value's meaning. Probabilities keep their ``_FillValue`` and scale: plain xarray
    decodes them to floats in [0, 1]."""
    attrs = dict(pred.attrs)
    if "flag_values" not in attrs:
        return attrs
    from minecube.classes import ClassSchema

    nodata = int(attrs.pop("_FillValue"))
    return attrs | ClassSchema.from_cf_attrs(attrs, nodata=nodata).cf_attrs(nodata_flag=True)


def _in_memory(pred: xr.DataArray) -> xr.DataArray:
    """Stored labels as segment() returns them: the classes as flags, nodata as _FillValue
    (stores written before the no_data flag already are)."""
    from minecube.classes import NODATA_FLAG, ClassSchema

    if str(pred.attrs.get("flag_meanings", "")).split()[:1] != [NODATA_FLAG]:
        return pred
    schema = ClassSchema.from_cf_attrs(pred.attrs)
    out = pred.copy(deep=False)
    out.attrs = {k: v for k, v in pred.attrs.items() if k != "nodata"} | schema.cf_attrs()
    return out.rio.write_nodata(schema.nodata)
