"""Chips for training: band presets, normalisation, site splits and an xbatcher-backed dataset.

A chip is a window of ``input_dims`` pixels of one period (or ``frames`` consecutive periods) of
one site's cube, with its label window. Chips are cut by :class:`xbatcher.BatchGenerator` from
the site's block, which is read from the cube **once** when the dataset is made; the model is
then fed from memory.

Inputs are the cube's reflectance bands by name plus ``ndvi``, computed from ``red`` and ``nir``
when the chips are made (it is not stored a second time). Every channel is standardised with a
:class:`Normalisation` computed on the training sites only.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from minecube.classes import DEFAULT_CLASSES, IGNORE_INDEX, ClassSchema
from minecube.errors import MinecubeError

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

__all__ = [
    "PRESETS",
    "BandError",
    "ChipDataset",
    "Normalisation",
    "SiteSplit",
    "features",
    "hold_out",
    "normalisation",
    "resolve_bands",
    "split_sites",
]

PRESETS: dict[str, tuple[str, ...]] = {
    "rgb": ("red", "green", "blue"),
    "rgbn": ("red", "green", "blue", "nir"),
    "ndvi": ("ndvi",),
    "rgb+ndvi": ("red", "green", "blue", "ndvi"),
    "rgbn+ndvi": ("red", "green", "blue", "nir", "ndvi"),
}
"""Band combinations of Saputra et al. (2025) by name; ``ndvi`` is derived from red and NIR."""


class BandError(MinecubeError, ValueError):
    """The bands asked for (or a model's bands) are not in the cube."""


def resolve_bands(bands: str | Sequence[str]) -> tuple[str, ...]:
    """A preset name or a list of band names → the tuple of input channels.

    >>> resolve_bands("rgbn+ndvi")
    ('red', 'green', 'blue', 'nir', 'ndvi')
    >>> resolve_bands(["nir", "red"])
    ('nir', 'red')
    """
    if isinstance(bands, str):
        if bands in PRESETS:
            return PRESETS[bands]
        raise BandError(f"unknown band preset {bands!r}; presets are {list(PRESETS)}")
    bands = tuple(bands)
    if not bands or len(set(bands)) != len(bands):
        raise BandError(f"bands must be a non-empty list of distinct names, got {list(bands)}")
    return bands


def features(cube: xr.Dataset, bands: str | Sequence[str]) -> xr.DataArray:
    """The model inputs of a cube: (time, channel, y, x) float32, NDVI computed on the fly.

    Raises :class:`BandError` naming the missing bands and those the cube has.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> cube = xr.Dataset({"reflectance": (("time", "band", "y", "x"),
    ...     np.full((1, 2, 2, 2), [[[[0.1]], [[0.5]]]], "float32"))},
    ...     coords={"band": ["red", "nir"]})
    >>> features(cube, ["nir", "ndvi"]).isel(y=0, x=0).values.round(3)
    array([[0.5  , 0.667]], dtype=float32)
    """
    import xarray as xr

    bands = resolve_bands(bands)
    have = [str(b) for b in cube.reflectance.band.values]
    needed = {b for b in bands if b != "ndvi"} | ({"red", "nir"} if "ndvi" in bands else set())
    missing = sorted(needed - set(have))
    if missing:
        raise BandError(
            f"bands {list(bands)} need {missing}, which the cube does not have; the cube has "
            f"bands {have} (rebuild the cube with bands=... or pick another preset)"
        )
    refl = cube.reflectance
    layers = []
    for b in bands:
        if b == "ndvi":
            nir, red = refl.sel(band="nir"), refl.sel(band="red")
            layers.append(((nir - red) / (nir + red)).drop_vars("band", errors="ignore"))
        else:
            layers.append(refl.sel(band=b).drop_vars("band"))
    out = xr.concat(layers, dim="channel").assign_coords(channel=list(bands))
    return out.transpose("time", "channel", "y", "x").astype("float32").rename("features")


@dataclass(frozen=True)
class Normalisation:
    """Per-channel standardisation ``(x - mean) / std``, fitted on the training sites."""

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.bands) == len(self.mean) == len(self.std):
            raise ValueError("bands, mean and std must have the same length")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def apply(self, x: np.ndarray, axis: int = -3) -> np.ndarray:
        """Standardise ``x`` along its channel ``axis``; NaN (no observation) becomes 0."""
        shape = [1] * x.ndim
        shape[axis] = len(self.bands)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return np.nan_to_num((x - mean) / std, nan=0.0).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalisation:
        return cls(tuple(d["bands"]), tuple(map(float, d["mean"])), tuple(map(float, d["std"])))


def normalisation(cubes: Sequence[xr.Dataset], bands: str | Sequence[str]) -> Normalisation:
    """Mean and standard deviation of each channel over every valid pixel of ``cubes``.

    Pass the training sites' cubes only, so nothing about held-out sites leaks into training.
    """
    bands = resolve_bands(bands)
    return _fit_normalisation((features(c, bands).values for c in cubes), bands)


def _fit_normalisation(arrays, bands: tuple[str, ...]) -> Normalisation:
    """Channel statistics of (time, channel, y, x) arrays, NaN skipped."""
    total = np.zeros(len(bands))
    squares = np.zeros(len(bands))
    count = np.zeros(len(bands))
    for x in arrays:
        x = np.moveaxis(np.asarray(x, dtype=np.float64), 1, 0).reshape(len(bands), -1)
        ok = np.isfinite(x)
        total += np.where(ok, x, 0).sum(axis=1)
        squares += np.where(ok, x * x, 0).sum(axis=1)
        count += ok.sum(axis=1)
    if not count.all():
        raise ValueError(f"no valid pixels for bands {list(bands)} in the training cubes")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0)) + 1e-6
    return Normalisation(bands, tuple(mean.round(6)), tuple(std.round(6)))


@dataclass(frozen=True)
class SiteSplit:
    """Site ids for training, validation (early stopping) and testing; disjoint."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        seen = [*self.train, *self.val, *self.test]
        if len(set(seen)) != len(seen):
            raise ValueError(f"a site is in more than one part of the split: {self}")
        if not self.train:
            raise ValueError("the split has no training sites")


def _site_ids(sites) -> list[str]:
    if hasattr(sites, "columns"):
        return [str(s) for s in sites["site_id"]]
    return [str(s) for s in sites]


def split_sites(
    sites: pd.DataFrame | Sequence[str],
    *,
    test: int | Sequence[str] = 2,
    val: int | Sequence[str] = 1,
    seed: int = 0,
) -> SiteSplit:
    """Split sites (never pixels or chips) into train, validation and test.

    ``test`` and ``val`` are either site ids or a number of sites drawn with ``seed``.

    >>> split_sites(["a", "b", "c", "d", "e"], test=["e"], val=1, seed=0)
    SiteSplit(train=('a', 'b', 'c'), val=('d',), test=('e',))
    """
    ids = _site_ids(sites)
    rng = random.Random(seed)
    parts = {}
    rest = list(ids)
    for name, want in (("test", test), ("val", val)):
        if isinstance(want, int):
            if want > len(rest) - 1:
                raise ValueError(f"{name}={want} leaves no training site out of {len(ids)}")
            chosen = rng.sample(rest, want)
        else:
            chosen = [str(s) for s in want]
            unknown = sorted(set(chosen) - set(ids))
            if unknown:
                raise ValueError(f"{name} sites {unknown} are not among the sites {ids}")
        parts[name] = tuple(s for s in ids if s in chosen)
        rest = [s for s in rest if s not in chosen]
    return SiteSplit(tuple(rest), parts["val"], parts["test"])


def hold_out(
    sites: pd.DataFrame,
    *,
    climate: str | None = None,
    commodity: str | None = None,
    val: int | Sequence[str] = 1,
    seed: int = 0,
) -> SiteSplit:
    """Test on every site of one climate zone or commodity; train on the others.

    >>> import pandas as pd
    >>> sites = pd.DataFrame({"site_id": ["a", "b", "c", "d"],
    ...                       "climate": ["arid", "arid", "tropical", "temperate"]})
    >>> hold_out(sites, climate="tropical", val=["a"])
    SiteSplit(train=('b', 'd'), val=('a',), test=('c',))
    """
    if (climate is None) == (commodity is None):
        raise ValueError("give exactly one of climate= or commodity=")
    column, value = ("climate", climate) if climate is not None else ("commodity", commodity)
    if column not in sites.columns:
        raise ValueError(f"the site table has no {column!r} column; columns: {list(sites.columns)}")
    chosen = sites.loc[sites[column] == value, "site_id"].astype(str).tolist()
    if not chosen:
        raise ValueError(
            f"no site has {column} {value!r}; values are {sorted(sites[column].unique())}"
        )
    return split_sites(sites, test=chosen, val=val, seed=seed)


_DIMS = ("time", "y", "x")


def _target(label: xr.DataArray, cube: xr.Dataset, schema: ClassSchema) -> np.ndarray:
    """Model indices (time, y, x) of a label raster; a static raster holds for every period."""
    if "time" not in label.dims:
        label = label.broadcast_like(cube.valid_count)
    return schema.to_index(label.transpose("time", "y", "x").values)


def _d4(image: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries of the square: ``k % 4`` quarter turns, flipped if ``k >= 4``."""
    image, mask = np.rot90(image, k % 4, axes=(-2, -1)), np.rot90(mask, k % 4, axes=(-2, -1))
    if k >= 4:
        image, mask = image[..., ::-1], mask[..., ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


class ChipDataset(Dataset):
    """A torch map-style dataset of chips from several sites' cubes and labels.

    Parameters
    ----------
    cubes
        ``{site_id: cube}``; each cube is read into memory once, here.
    labels
        ``{site_id: label}`` class-id rasters on the cube grids (:func:`minecube.labels.rasterize`),
        (time, y, x) or (y, x).
    bands
        A preset of :data:`PRESETS` or a list of band names (``ndvi`` allowed).
    input_dims
        Chip size, e.g. ``{"y": 128, "x": 128}``.
    input_overlap
        Overlap between neighbouring chips, e.g. ``{"y": 64, "x": 64}``.
    norm
        Channel normalisation; by default fitted on these cubes (pass the training set's
        ``norm`` to the validation and test sets).
    schema
        Class schema of the labels; targets are model indices with IGNORE_INDEX for unlabelled
        or unobserved pixels.
    min_valid
        Drop chips with a smaller fraction of labelled, observed pixels.
    augment
        Random D4 flips and rotations (training only); reproducible from ``seed`` and the epoch
        set with :meth:`set_epoch`.
    frames
        Consecutive periods per chip (Prithvi's frames); 1 gives (C, H, W) images.

    Notes
    -----
    Items are dicts ``{"image": (C, H, W) or (C, T, H, W) float32 tensor, "mask": (H, W)
    int64 tensor, "site": site index}``; :attr:`chips` lists each chip's site, time and window.
    """

    def __init__(
        self,
        cubes: Mapping[str, xr.Dataset],
        labels: Mapping[str, xr.DataArray],
        *,
        bands: str | Sequence[str] = "rgbn",
        input_dims: Mapping[str, int] | None = None,
        input_overlap: Mapping[str, int] | None = None,
        norm: Normalisation | None = None,
        schema: ClassSchema = DEFAULT_CLASSES,
        min_valid: float = 0.25,
        augment: bool = False,
        frames: int = 1,
        seed: int = 0,
    ) -> None:
        import pandas as pd
        import xarray as xr
        import xbatcher

        input_dims = dict(input_dims or {"y": 128, "x": 128})
        input_overlap = dict(input_overlap or {})
        if set(input_dims) != {"y", "x"} or not set(input_overlap) <= {"y", "x"}:
            raise ValueError(
                f"input_dims must name exactly 'y' and 'x' (got {input_dims}) and input_overlap "
                f"only those (got {input_overlap})"
            )
        missing = sorted(set(cubes) ^ set(labels))
        if missing:
            raise ValueError(f"sites {missing} have a cube or labels, but not both")
        self.bands = resolve_bands(bands)
        self.schema = schema
        self.sites = tuple(cubes)
        self.sensors = tuple(
            sorted({str(c.attrs["sensor"]) for c in cubes.values() if c.attrs.get("sensor")})
        )
        """Sensors of the cubes (``attrs["sensor"]``), recorded in the model card by ``fit``."""
        arrays = {site: features(cubes[site], self.bands).values for site in self.sites}
        self.norm = norm or _fit_normalisation(arrays.values(), self.bands)  # the one read
        if self.norm.bands != self.bands:
            raise BandError(f"norm is for bands {self.norm.bands}, the chips use {self.bands}")
        self.input_dims = input_dims
        self.input_overlap = input_overlap
        self.frames = frames
        self.augment = augment
        self.seed = seed
        self._epoch = 0
        self._generators = []
        rows = []
        for s, site in enumerate(self.sites):
            cube = cubes[site]
            x = arrays.pop(site)
            observed = np.isfinite(x).all(axis=1)
            target = np.where(observed, _target(labels[site], cube, schema), IGNORE_INDEX)
            target = target.astype(np.uint8)
            block = xr.Dataset(
                {
                    "image": (("time", "channel", "y", "x"), self.norm.apply(x)),
                    "mask": (("time", "y", "x"), target),
                },
                coords={d: np.arange(n) for d, n in zip(_DIMS, target.shape, strict=True)},
            )
            if any(block.sizes[d] < n for d, n in input_dims.items()) or block.sizes["time"] < (
                frames
            ):
                raise ValueError(
                    f"site {site!r}: its cube ({dict(block.sizes)}) is smaller than one chip "
                    f"({input_dims}, frames={frames})"
                )
            gen = xbatcher.BatchGenerator(
                block,
                input_dims={"time": frames, **input_dims},
                input_overlap={"time": frames - 1, **input_overlap},
            )
            self._generators.append(gen)
            times = cube.time.values
            for i in range(len(gen)):
                chip = gen[i]
                valid = float((chip["mask"].values[-1] != IGNORE_INDEX).mean())
                if valid >= min_valid:
                    rows.append(
                        {
                            "site_index": s,
                            "site_id": site,
                            "chip": i,
                            "time": times[int(chip.time[-1])],
                            "y0": int(chip.y[0]),
                            "x0": int(chip.x[0]),
                            "valid_fraction": valid,
                        }
                    )
        self.chips = pd.DataFrame(rows)
        if self.chips.empty:
            raise ValueError(
                f"no chip of {input_dims} has ≥ {min_valid:.0%} labelled, observed pixels; "
                "check that the labels overlap the cubes or lower min_valid"
            )

    def __len__(self) -> int:
        return len(self.chips)

    def take(self, indices: Sequence[int]) -> ChipDataset:
        """A dataset of some of these chips (same blocks, bands, normalisation, augmentation)."""
        import copy

        part = copy.copy(self)
        part.chips = self.chips.iloc[list(indices)].reset_index(drop=True)
        return part

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (the data loader keeps the order reproducible)."""
        self._epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        row = self.chips.iloc[index]
        chip = self._generators[row.site_index][int(row.chip)]
        image = chip["image"].values  # (T, C, H, W)
        mask = chip["mask"].values[-1]
        image = image[0] if self.frames == 1 else np.moveaxis(image, 0, 1)
        if self.augment:
            k = np.random.default_rng((self.seed, self._epoch, index)).integers(8)
            image, mask = _d4(image, mask, int(k))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "site": int(row.site_index),
        }
