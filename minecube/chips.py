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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from minecube.classes import DEFAULT_CLASSES, IGNORE_INDEX, ClassSchema
from minecube.errors import MinecubeError, find_stack_level

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

__all__ = [
    "PRESETS",
    "BandError",
    "ChipDataset",
    "LeakageWarning",
    "Normalisation",
    "SiteSplit",
    "features",
    "hold_out",
    "leaks",
    "normalisation",
    "resolve_bands",
    "site_groups",
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


class LeakageWarning(UserWarning):
    """Training or validation sites overlap (or lie near) test sites: the score measures
    memory, not skill."""


def _partition(ids: Sequence[str], pairs) -> dict[str, str]:
    """Each id's group, the groups joined by ``pairs`` of ids (transitively), each named by its
    first id in ``ids``."""
    parent = {s: s for s in ids}

    def root(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    order = {s: k for k, s in enumerate(ids)}
    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:  # the earlier id names the group
            parent[max(ra, rb, key=order.get)] = min(ra, rb, key=order.get)
    return {s: root(s) for s in ids}


def _grown(sites: pd.DataFrame, buffer_m: float) -> list:
    """The sites' footprints grown by half of ``buffer_m`` in their local UTM zone (back in
    lon/lat): two sites lie within ``buffer_m`` of each other exactly when theirs meet."""
    import shapely
    from pyproj import Transformer

    from minecube.sites import utm_epsg

    grown = []
    for g in sites.geometry:
        epsg = utm_epsg(g.centroid.x, g.centroid.y)
        to_utm = Transformer.from_crs(4326, epsg, always_xy=True).transform
        back = Transformer.from_crs(epsg, 4326, always_xy=True).transform
        local = shapely.transform(g, to_utm, interleaved=False).buffer(buffer_m / 2)
        grown.append(shapely.transform(local, back, interleaved=False))
    return grown


def site_groups(
    sites: pd.DataFrame,
    *,
    buffer_m: float | None = 0.0,
    block_m: float | None = None,
) -> dict[str, str]:
    """Groups of sites that must stay on one side of a split: footprints that overlap or lie
    within ``buffer_m`` metres of each other, transitively, and (with ``block_m``) sites whose
    centres fall in one square spatial block of that side (equal-area metres, EPSG:6933).

    Returns ``{site_id: group id}``, the group named by its first site.

    >>> import geopandas as gpd
    >>> from shapely.geometry import box
    >>> table = gpd.GeoDataFrame({"site_id": ["a", "b", "c"]}, crs=4326,
    ...     geometry=[box(0, 0, 0.02, 0.02), box(0.01, 0, 0.03, 0.02), box(1, 1, 1.02, 1.02)])
    >>> site_groups(table)
    {'a': 'a', 'b': 'a', 'c': 'c'}
    """
    import geopandas as gpd
    import shapely

    ids = [str(s) for s in sites["site_id"]]
    pairs = []
    if buffer_m is not None:
        grown = _grown(sites, buffer_m)
        near = shapely.STRtree(grown).query(grown, predicate="intersects")
        pairs += [(ids[i], ids[j]) for i, j in zip(*near, strict=True)]
    if block_m is not None:
        if not block_m > 0:
            raise ValueError(f"block_m={block_m!r} must be a positive length in metres")
        centres = gpd.GeoSeries(sites.geometry.values, crs=4326).to_crs(6933).centroid
        first: dict[tuple[int, int], str] = {}
        for site, c in zip(ids, centres, strict=True):
            key = (int(np.floor(c.x / block_m)), int(np.floor(c.y / block_m)))
            pairs.append((first.setdefault(key, site), site))
    return _partition(ids, pairs)


def leaks(split: SiteSplit, sites: pd.DataFrame, *, buffer_m: float = 0.0) -> list[tuple]:
    """``(part, site, test site)`` for each training or validation site whose footprint
    overlaps, or lies within ``buffer_m`` metres of, a test site's.

    >>> import geopandas as gpd
    >>> from shapely.geometry import box
    >>> table = gpd.GeoDataFrame({"site_id": ["a", "b", "c"]}, crs=4326,
    ...     geometry=[box(0, 0, 0.02, 0.02), box(0.01, 0, 0.03, 0.02), box(1, 1, 1.02, 1.02)])
    >>> leaks(SiteSplit(("a", "c"), (), ("b",)), table)
    [('train', 'a', 'b')]
    """
    import shapely

    table = sites.set_index(sites["site_id"].astype(str))
    test = list(split.test)
    tree = shapely.STRtree(_grown(table.loc[test], buffer_m))
    found = []
    for part in ("train", "val"):
        others = list(getattr(split, part))
        if not others or not test:
            continue
        near = tree.query(_grown(table.loc[others], buffer_m), predicate="intersects")
        found += [(part, others[i], test[j]) for i, j in sorted(zip(*near, strict=True))]
    return found


def split_sites(
    sites: pd.DataFrame | Sequence[str],
    *,
    test: int | Sequence[str] = 2,
    val: int | Sequence[str] = 1,
    seed: int = 0,
    groups: str | Mapping[str, str] | None = None,
    buffer_m: float | None = None,
    block_m: float | None = None,
) -> SiteSplit:
    """Split sites (never pixels or chips) into train, validation and test, keeping groups of
    sites together.

    ``test`` and ``val`` are either site ids or a number of sites drawn with ``seed``. Sites of
    one group are never split: a number is filled with whole groups (so a part can hold a few
    more sites than asked), and a named site brings its whole group along. Given a site table
    with footprints, the split is checked for leakage: a :class:`LeakageWarning` names training
    or validation sites that overlap a test site.

    Parameters
    ----------
    sites
        Site ids, or the site table (with ``geometry`` for ``buffer_m``/``block_m``).
    test, val
        Site ids, or how many sites to draw.
    seed
        Seed of the draw.
    groups
        A column of the site table, or a mapping ``{site_id: group}``, naming sites that belong
        together (one mine's patches, one region).
    buffer_m
        Group sites whose footprints overlap (``0``) or lie within this many metres, through
        chains of neighbours (:func:`site_groups`): overlapping patches of an export.
    block_m
        Group sites whose centres fall in one spatial block of this side, metres.

    Examples
    --------
    >>> split_sites(["a", "b", "c", "d", "e"], test=["e"], val=1, seed=0)
    SiteSplit(train=('a', 'b', 'c'), val=('d',), test=('e',))
    >>> split_sites(["a", "b", "c", "d"], test=["d"], val=0, groups={"c": "g", "d": "g"})
    SiteSplit(train=('a', 'b'), val=(), test=('c', 'd'))
    """
    ids = _site_ids(sites)
    group_of = _groups(sites, ids, groups, buffer_m, block_m)
    members: dict[str, list[str]] = {}
    for s in ids:
        members.setdefault(group_of[s], []).append(s)
    rng = random.Random(seed)
    parts = {}
    rest = list(ids)
    for name, want in (("test", test), ("val", val)):
        if isinstance(want, int):
            if want and want > len(rest) - 1:
                raise ValueError(f"{name}={want} leaves no training site out of {len(ids)}")
            order = list(dict.fromkeys(group_of[s] for s in rest))
            if len(order) == len(rest):  # no groups: the draw of ungrouped splits
                chosen = rng.sample(rest, want)
            else:
                rng.shuffle(order)
                chosen = []
                for g in order:
                    if len(chosen) >= want:
                        break
                    chosen += [s for s in members[g] if s in rest]
        else:
            named = [str(s) for s in want]
            unknown = sorted(set(named) - set(ids))
            if unknown:
                raise ValueError(f"{name} sites {unknown} are not among the sites {ids}")
            chosen = [s for s in rest if group_of[s] in {group_of[n] for n in named}]
        parts[name] = tuple(s for s in ids if s in chosen)
        rest = [s for s in rest if s not in chosen]
    if not rest:
        raise ValueError(
            f"the groups of the test and validation sites take every site ({len(ids)}); ask "
            "for fewer, or group less (buffer_m=, groups=)"
        )
    split = SiteSplit(tuple(rest), parts["val"], parts["test"])
    if hasattr(sites, "geometry"):
        found = leaks(split, sites, buffer_m=buffer_m or 0.0)
        if found:
            warnings.warn(
                f"{len(found)} training/validation sites overlap test sites, so the test score "
                "measures memory, not skill: "
                + ", ".join(f"{p} {a!r} ~ test {b!r}" for p, a, b in found[:10])
                + (" …" if len(found) > 10 else "")
                + "; split with buffer_m=0 (or more) to keep neighbours together",
                LeakageWarning,
                stacklevel=find_stack_level(),
            )
    return split


def _groups(sites, ids, groups, buffer_m, block_m) -> dict[str, str]:
    """Each site's group: one per site, joined by ``groups`` (a column or a mapping) and by
    footprints (:func:`site_groups`)."""
    if isinstance(groups, str):
        if not hasattr(sites, "columns") or groups not in sites.columns:
            raise ValueError(f"groups={groups!r} is not a column of the site table")
        groups = dict(zip(_site_ids(sites), sites[groups].astype(str), strict=True))
    pairs = []
    if groups is not None:
        first: dict[str, str] = {}
        pairs += [(first.setdefault(str(groups[s]), s), s) for s in ids if s in groups]
    if buffer_m is not None or block_m is not None:
        if not hasattr(sites, "geometry"):
            raise ValueError("buffer_m= and block_m= need the site table, with its footprints")
        pairs += list(site_groups(sites, buffer_m=buffer_m, block_m=block_m).items())
    return _partition(ids, pairs)


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


def _starts(size: int, dim: int, overlap: int) -> list[int]:
    """Where xbatcher starts its windows along one axis (whole windows only)."""
    return list(range(0, size - dim + 1, dim - overlap))


def _edge_windows(sizes, input_dims, input_overlap, frames: int):
    """(time, y0, x0) of the chips that close the regular grid at the far edges: a last row
    and column anchored at ``size - dim``, where xbatcher's windows stop short of the edge."""
    starts, edges = {}, {}
    for d in ("y", "x"):
        regular = _starts(sizes[d], input_dims[d], input_overlap.get(d, 0))
        edge = sizes[d] - input_dims[d]
        starts[d] = regular + ([edge] if regular[-1] != edge else [])
        edges[d] = set(starts[d]) - set(regular)
    for t in range(frames - 1, sizes["time"]):
        for y0 in starts["y"]:
            for x0 in starts["x"]:
                if y0 in edges["y"] or x0 in edges["x"]:
                    yield t, y0, x0


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
    int64 tensor, "site": site index}``; :attr:`chips` lists each chip's site, time, window
    and its pixels of each class (``class_px``).

    Chips cover the whole cube: xbatcher cuts the regular grid of ``input_dims`` with
    ``input_overlap``, and where that grid stops short of the far edge a last row and column
    of chips is anchored at the edge (overlapping their neighbours more), so every labelled
    pixel is in some chip. :meth:`sampler` draws chips with rare classes more often.
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
        self._blocks = []
        rows = []
        labelled = observed_px = 0
        for s, site in enumerate(self.sites):
            cube = cubes[site]
            x = arrays.pop(site)
            observed = np.isfinite(x).all(axis=1)
            target = np.where(observed, _target(labels[site], cube, schema), IGNORE_INDEX)
            target = target.astype(np.uint8)
            labelled += int((target != IGNORE_INDEX).sum())
            observed_px += int(observed.sum())
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
            self._blocks.append(block)
            times = cube.time.values
            windows = [(i, int(c.time[-1]), int(c.y[0]), int(c.x[0])) for i, c in enumerate(gen)]
            windows += [(-1, *w) for w in _edge_windows(block.sizes, input_dims, input_overlap,
                                                       frames)]  # fmt: skip
            h, w = input_dims["y"], input_dims["x"]
            for i, t, y0, x0 in windows:
                mask = target[t, y0 : y0 + h, x0 : x0 + w]
                valid = float((mask != IGNORE_INDEX).mean())
                if valid >= min_valid:
                    px = np.bincount(mask.ravel(), minlength=256)[: len(schema)]
                    rows.append(
                        {
                            "site_index": s,
                            "site_id": site,
                            "chip": i,
                            "t": t,
                            "time": times[t],
                            "y0": y0,
                            "x0": x0,
                            "valid_fraction": valid,
                            "class_px": px,
                        }
                    )
        self.labelled_fraction = labelled / max(observed_px, 1)
        """Share of the observed pixels that are labelled (1 for complete labels): only those
        count in the loss, as the model card records."""
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

    def sampler(self, kind: str = "balanced", *, min_share: float = 0.01, seed: int = 0):
        """A torch sampler that draws chips holding rare classes more often.

        ``"balanced"``: a chip's weight is one over the number of chips holding its rarest
        class (counted where the class covers at least ``min_share`` of the chip), so each
        class is drawn about equally often; draws with replacement, as many as there are
        chips per epoch, reproducible from ``seed``. :func:`minecube.train.fit` takes it as
        ``sampler="balanced"``.
        """
        import torch
        from torch.utils.data import WeightedRandomSampler

        if kind != "balanced":
            raise ValueError(f"sampler={kind!r} is not one of ['balanced']")
        if not 0 <= min_share < 1:
            raise ValueError(f"min_share={min_share!r} must be a share of a chip in [0, 1)")
        px = np.stack(self.chips["class_px"].to_numpy()).astype(float)
        present = px >= min_share * px.sum(axis=1, keepdims=True).clip(min=1)
        present &= px > 0
        holders = present.sum(axis=0)
        inverse = np.where(holders > 0, 1.0 / np.maximum(holders, 1), 0.0)
        weights = (present * inverse).max(axis=1)
        weights[weights == 0] = inverse[inverse > 0].min() if (inverse > 0).any() else 1.0
        return WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_samples=len(self),
            replacement=True,
            generator=torch.Generator().manual_seed(seed),
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        row = self.chips.iloc[index]
        if row.chip >= 0:
            chip = self._generators[row.site_index][int(row.chip)]
            image = chip["image"].values  # (T, C, H, W)
            mask = chip["mask"].values[-1]
        else:  # an edge chip, anchored at the far edge
            block = self._blocks[row.site_index]
            t, y, x = (
                int(row.t),
                slice(row.y0, row.y0 + self.input_dims["y"]),
                slice(row.x0, row.x0 + self.input_dims["x"]),
            )
            image = block["image"].values[t - self.frames + 1 : t + 1, :, y, x]
            mask = block["mask"].values[t, y, x]
        image = image[0] if self.frames == 1 else np.moveaxis(image, 0, 1)
        if self.augment:
            k = np.random.default_rng((self.seed, self._epoch, index)).integers(8)
            image, mask = _d4(image, mask, int(k))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "site": int(row.site_index),
        }
