"""Per-site datacubes: STAC items → a cloud-masked, composited (time, band, y, x) cube → Zarr.

A cube lives on its site's own grid: the UTM zone of the site's centroid (north or south), at
``resolution`` metres, with bounds snapped outward to whole pixels. Everything up to the Zarr
write is lazy (dask).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from minecube import __version__
from minecube.errors import MinecubeError
from minecube.sites import site_geometry, utm_epsg
from minecube.stac import BANDS, band_assets

if TYPE_CHECKING:
    import pystac
    import xarray as xr

__all__ = [
    "COMPOSITES",
    "ENGINES",
    "MASKED_SCL",
    "BrokenAssetWarning",
    "EmptyPeriodWarning",
    "SiteGrid",
    "build",
    "items_path",
    "open_cube",
    "site_grid",
    "to_zarr",
]

Engine = Literal["stackstac", "odc-stac"]
Composite = Literal["month", "quarter", "year", "day"]
ENGINES: tuple[str, ...] = ("stackstac", "odc-stac")
COMPOSITES: dict[str, str] = {"day": "D", "month": "M", "quarter": "Q", "year": "Y"}
"""Composite rule → pandas period: one median per day (a mosaic of the day's scenes), month,
quarter or year."""
MASKED_SCL: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
"""SCL codes masked by default: no data, saturated/defective, cloud shadow, cloud medium and
high probability, thin cirrus."""


class EmptyPeriodWarning(UserWarning):
    """A composite period had no valid observation (all cloud or no data)."""


class CubeError(MinecubeError, ValueError):
    """A cube cannot be built or stored as asked."""


class BrokenAssetWarning(UserWarning):
    """An item was left out because one of its assets could not be read."""


def _check_asset(href: str, retries: int) -> str | None:
    """None if the COG opens and its last block reads (a truncated file fails there)."""
    import time

    import rasterio
    from rasterio.windows import Window

    error = ""
    for attempt in range(retries):
        try:
            with rasterio.open(href) as src:
                h, w = src.block_shapes[0]
                row, col = (src.height - 1) // h * h, (src.width - 1) // w * w
                src.read(1, window=Window(col, row, min(w, src.width - col), 1))
            return None
        except rasterio.errors.RasterioError as e:
            error = str(e).splitlines()[0][:200]
            if attempt + 1 < retries:
                time.sleep(0.2 * 2**attempt)
    return error


_QUERY = re.compile(r"[?][^\s'\"]*")


def _broken_assets(items, keys: list[str], retries: int) -> dict[str, str]:
    """Item id → first error, for items with an asset that cannot be read (checked in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(i.id, k, i.assets[k].href) for i in items for k in keys]
    with ThreadPoolExecutor(max_workers=8) as pool:
        errors = list(pool.map(lambda job: _check_asset(job[2], retries), jobs))
    broken: dict[str, str] = {}
    for (item_id, key, _), error in zip(jobs, errors, strict=True):
        if error and item_id not in broken:
            broken[item_id] = f"{key}: {_QUERY.sub('', error)}"  # no tokens kept
    return broken


@dataclass(frozen=True)
class SiteGrid:
    """A site's pixel grid: CRS, bounds snapped to the pixel size, and resolution (metres)."""

    epsg: int
    bounds: tuple[float, float, float, float]
    resolution: float

    @property
    def shape(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.bounds
        return round((y1 - y0) / self.resolution), round((x1 - x0) / self.resolution)


def site_grid(site, *, resolution: float = 10.0) -> SiteGrid:
    """The grid of a site: UTM zone of its centroid, bounds snapped outward to whole pixels.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> site_grid(box(150.90, -32.46, 150.92, -32.44))
    SiteGrid(epsg=32756, bounds=(302570.0, 6406630.0, 304510.0, 6408890.0), resolution=10.0)
    """
    import geopandas as gpd

    geom = site_geometry(site)
    centroid = geom.centroid
    epsg = utm_epsg(centroid.x, centroid.y)
    minx, miny, maxx, maxy = gpd.GeoSeries([geom], crs=4326).to_crs(epsg).total_bounds
    r = resolution
    bounds = (
        float(np.floor(minx / r) * r),
        float(np.floor(miny / r) * r),
        float(np.ceil(maxx / r) * r),
        float(np.ceil(maxy / r) * r),
    )
    return SiteGrid(epsg, bounds, float(resolution))


def _load(items, keys: list[str], grid: SiteGrid, engine: str, chunks: int) -> xr.DataArray:
    """Raw digital numbers (time, band, y, x) float32 on the site grid; NaN where no scene."""

    if engine == "stackstac":
        import stackstac
        from rasterio.enums import Resampling

        da = stackstac.stack(
            items,
            assets=keys,
            epsg=grid.epsg,
            resolution=grid.resolution,
            bounds=grid.bounds,
            resampling=Resampling.nearest,
            dtype="float32",
            fill_value=np.float32(np.nan),
            rescale=False,
            xy_coords="center",
            chunksize=chunks,
            properties=False,
            band_coords=False,
        )
        da = da.drop_vars([c for c in da.coords if c not in ("time", "band", "y", "x")])
        return da.assign_coords(band=keys)
    if engine == "odc-stac":
        import odc.stac
        from odc.geo.geobox import GeoBox

        geobox = GeoBox.from_bbox(grid.bounds, crs=f"EPSG:{grid.epsg}", resolution=grid.resolution)
        ds = odc.stac.load(
            items,
            bands=keys,
            geobox=geobox,
            chunks={"x": chunks, "y": chunks},
            resampling="nearest",
            dtype="float32",
            groupby="id",
        )
        da = ds[keys].to_dataarray("band").transpose("time", "band", "y", "x")
        return da.drop_vars([c for c in da.coords if c not in ("time", "band", "y", "x")])
    raise ValueError(f"engine={engine!r} is not one of {list(ENGINES)}")


def build(
    site,
    items: Sequence[pystac.Item],
    *,
    bands: Sequence[str] = BANDS,
    resolution: float = 10.0,
    composite: Composite = "month",
    engine: Engine = "stackstac",
    chunks: int = 512,
    mask_scl: Sequence[int] = MASKED_SCL,
    sign: Callable[[pystac.Item], Any] | None = None,
    retries: int = 3,
) -> xr.Dataset:
    """Build a site's cloud-masked, composited datacube (lazily).

    Parameters
    ----------
    site
        A site row (:func:`minecube.sites.read_sites`) or a shapely geometry in lon/lat.
    items
        STAC items over the site, e.g. from :func:`minecube.stac.search`.
    bands
        Reflectance bands by common name.
    resolution
        Pixel size in metres.
    composite
        ``"day"``, ``"month"``, ``"quarter"`` or ``"year"``: median of the valid observations
        in each period; periods without any scene are left out.
    engine
        ``"stackstac"`` or ``"odc-stac"``; both give the same pixels.
    chunks
        Spatial chunk size in pixels; a multiple of the chip size keeps chips aligned.
    mask_scl
        SCL codes to mask (default :data:`MASKED_SCL`).
    sign
        Called on a copy of each item before reading, e.g. ``planetary_computer.sign_inplace``.
        Signed URLs are never stored in the cube.
    retries
        Attempts to read each asset's header and last block before the item is skipped; skipped
        items and the reason are recorded in ``attrs["skipped_items"]`` with a warning.

    Returns
    -------
    xarray.Dataset
        ``reflectance`` (time, band, y, x) float32 surface reflectance, ``valid_count``
        (time, y, x) observations behind each pixel, ``ndvi`` (time, y, x), and the CRS as a CF
        ``spatial_ref`` coordinate. ``attrs`` hold JSON provenance.

    Examples
    --------
    >>> from minecube import demo
    >>> from minecube.stac import search
    >>> world = demo.generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                       dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> site = world.sites.iloc[0]
    >>> with demo.serve(world) as server:
    ...     items = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
    ...     cube = build(site, items, composite="year").compute()
    >>> dict(cube.reflectance.sizes), str(cube.rio.crs)
    ({'time': 2, 'band': 4, 'y': 98, 'x': 98}, 'EPSG:32756')
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {list(ENGINES)}")
    if composite not in COMPOSITES:
        raise ValueError(f"composite={composite!r} is not one of {list(COMPOSITES)}")
    search_record = getattr(items, "extra_fields", {}).get("minecube:search", {})
    items = list(items)
    if not items:
        raise CubeError("no items to build a cube from; search() with wider dates or max_cloud")
    unknown = [b for b in bands if b not in BANDS]
    if unknown:
        raise ValueError(f"unknown bands {unknown}; available bands are {list(BANDS)}")
    grid = site_grid(site, resolution=resolution)
    geom = site_geometry(site)
    if not any(_item_shape(i).intersects(geom) for i in items):
        raise CubeError(
            f"the site (bounds {tuple(round(v, 4) for v in geom.bounds)}) lies outside every "
            f"one of the {len(items)} items; check the site's coordinates or the search"
        )
    assets = [band_assets(i, (*bands, "scl")) for i in items]
    keys = [assets[0][b].key for b in (*bands, "scl")]
    if any([a[b].key for b in (*bands, "scl")] != keys for a in assets):
        raise CubeError("items name their band assets differently; build one catalogue at a time")
    readable = items
    if sign is not None:
        readable = [i.clone() for i in items]
        for item in readable:
            sign(item)
    broken = _broken_assets(readable, keys, retries)
    if broken:
        warnings.warn(
            f"skipping {len(broken)} of {len(items)} items whose assets cannot be read: "
            + "; ".join(f"{k}: {v}" for k, v in broken.items()),
            BrokenAssetWarning,
            stacklevel=2,
        )
        keep = [i.id not in broken for i in items]
        items = [i for i, k in zip(items, keep, strict=True) if k]
        readable = [i for i, k in zip(readable, keep, strict=True) if k]
        if not items:
            raise CubeError(f"no item could be read: {broken}")
    raw = _load(readable, keys, grid, engine, chunks).sortby("time")
    # one time chunk per period, so writing a period reads only that period's scenes
    period = raw.time.to_index().tz_localize(None).to_period(COMPOSITES[composite])
    raw = raw.chunk({"time": tuple(period.value_counts(sort=False).loc[period.unique()])})
    scl = raw.sel(band=keys[-1])
    refl = []
    for band, key in zip(bands, keys[:-1], strict=True):
        a = assets[0][band]
        dn = raw.sel(band=key)
        if a.nodata is not None:
            dn = dn.where(dn != a.nodata)
        refl.append(dn * np.float32(a.scale) + np.float32(a.offset))
    reflectance = xr.concat(refl, dim="band").assign_coords(band=list(bands))
    valid = scl.notnull() & ~scl.isin(list(mask_scl)) & reflectance.notnull().all("band")
    reflectance = reflectance.where(valid)
    starts = ("time", period.start_time)
    composite_ = (
        reflectance.assign_coords(period=starts).groupby("period").reduce(_nanmedian, dim="time")
    )
    count = valid.assign_coords(period=starts).groupby("period").sum().astype("int16")
    ds = xr.Dataset(
        {
            "reflectance": composite_.rename(period="time")
            .transpose("time", "band", "y", "x")
            .astype("float32"),
            "valid_count": count.rename(period="time").transpose("time", "y", "x"),
        }
    )
    if "nir" in bands and "red" in bands:
        nir, red = ds.reflectance.sel(band="nir"), ds.reflectance.sel(band="red")
        ndvi = ((nir - red) / (nir + red)).astype("float32")
        ds["ndvi"] = ndvi.drop_vars("band", errors="ignore")
        ds["ndvi"].attrs = {"long_name": "normalised difference vegetation index", "units": "1"}
    ds.reflectance.attrs = {"long_name": "surface reflectance", "units": "1"}
    ds.valid_count.attrs = {"long_name": "valid observations in the composite", "units": "1"}
    ds = ds.rio.write_crs(f"EPSG:{grid.epsg}")
    ds.attrs = {
        "minecube_version": __version__,
        "site_id": str(getattr(site, "site_id", "")),
        "composite": composite,
        "engine": engine,
        "resolution": resolution,
        "masked_scl": list(mask_scl),
        "item_ids": [i.id for i in items],
        "skipped_items": json.dumps(broken),
        "search": json.dumps(search_record),
    }
    return ds


def _quiet_nanmedian(block: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmedian that gives NaN for all-NaN pixels without a RuntimeWarning (thread-safe)."""
    empty = np.isnan(block).all(axis=axis, keepdims=True)
    out = np.nanmedian(np.where(empty, 0, block), axis=axis)
    out[np.squeeze(empty, axis=axis)] = np.nan
    return out


def _nanmedian(x, axis: int, **kwargs):
    """Median over time ignoring NaN, one dask block at a time (time is a single chunk)."""
    if isinstance(x, np.ndarray):
        return _quiet_nanmedian(x, axis)
    import dask.array as da

    x = x.rechunk({axis: -1})
    return da.map_blocks(_quiet_nanmedian, x, axis=axis, drop_axis=axis, dtype=x.dtype)


def _item_shape(item):
    from shapely.geometry import box, shape

    return shape(item.geometry) if item.geometry else box(*item.bbox)


def to_zarr(
    cube: xr.Dataset,
    store: str | os.PathLike,
    *,
    group: str | None = None,
    items: Sequence[pystac.Item] | None = None,
    progress: bool = False,
    fail_after: int | None = None,
) -> list[str]:
    """Write a cube to Zarr period by period, resuming and appending.

    Each period is marked complete in the group's attributes only after its data are written,
    so a write that stops part-way is resumed by re-running the same call: complete periods are
    skipped, a half-written one is written again, and later periods are appended. Periods must
    come after those already stored.

    Parameters
    ----------
    cube
        A cube from :func:`build`.
    store
        Zarr store path or URL.
    group
        Group name (default: the cube's ``site_id``).
    items
        The items the cube was built from; frozen beside the store (:func:`items_path`) so the
        cube can be rebuilt without the API.
    progress
        Show a progress bar.
    fail_after
        For tests: raise after writing this many periods, as a crash would.

    Returns
    -------
    list of str
        The periods written by this call (ISO dates).
    """
    import dask
    import xarray as xr
    import zarr
    from tqdm.auto import tqdm

    group = group or cube.attrs.get("site_id") or None
    if not group:
        raise ValueError("give group= (the cube has no site_id to name its Zarr group)")
    periods = [str(t)[:10] for t in cube.time.values]
    root = zarr.open_group(store, mode="a")
    done: list[str] = []
    existing: list[str] = []
    if group in root:
        node = root[group]
        done = list(node.attrs.get("minecube:complete_periods", []))
        if "time" in node:
            stored = xr.open_zarr(store, group=group, consolidated=False)
            existing = [str(t)[:10] for t in stored.time.values]
        if existing and periods and periods[0] < existing[0]:
            raise CubeError(
                f"the cube starts at {periods[0]}, before the stored {existing[0]}; build "
                "from the stored start or write to a new group"
            )
    cube = cube.chunk({"time": 1}).assign_coords(band=cube.band.values.astype(object))
    to_write = [p for p in periods if p not in done]
    written = []
    batch = max(1, os.cpu_count() or 1)  # periods computed together, written in order
    bar = tqdm(total=len(to_write), desc=f"cube {group}", unit="period", disable=not progress)
    for first in range(0, len(to_write), batch):
        periods_ = to_write[first : first + batch]
        parts = dask.compute(*[cube.sel(time=[np.datetime64(p)]) for p in periods_])
        for period, part in zip(periods_, parts, strict=True):
            if fail_after is not None and len(written) >= fail_after:
                raise RuntimeError(
                    f"stopped after {len(written)} periods (fail_after={fail_after})"
                )
            if int(part.valid_count.sum()) == 0:
                warnings.warn(
                    f"no valid observation in the period starting {period} (all cloud or no "
                    "data): its reflectance is NaN and valid_count 0",
                    EmptyPeriodWarning,
                    stacklevel=2,
                )
            existing = _write_period(part, period, store, group, existing)
            node = zarr.open_group(store, mode="a")[group]
            done.append(period)
            node.attrs["minecube:complete_periods"] = done  # only after its data are written
            written.append(period)
            bar.update()
    bar.close()
    node = zarr.open_group(store, mode="a")[group]
    node.attrs.update(cube.attrs)
    if items is not None:
        import fsspec
        import pystac

        fs, path = fsspec.core.url_to_fs(str(items_path(store, group)))
        fs.makedirs(fs._parent(path), exist_ok=True)
        frozen = pystac.ItemCollection(list(items)).to_dict(transform_hrefs=False)
        with fs.open(path, "w") as f:
            f.write(json.dumps(frozen))
    return written


def _write_period(part, period: str, store, group: str, existing: list[str]) -> list[str]:
    """Write one computed period: create the group, rewrite it in place, or append it."""
    if not existing:
        part.to_zarr(store, group=group, mode="w", consolidated=False)
        return [period]
    if period in existing:
        index = existing.index(period)
        part.drop_vars(["spatial_ref", "band", "y", "x"]).to_zarr(
            store, group=group, region={"time": slice(index, index + 1)}, consolidated=False
        )
        return existing
    if period < existing[-1]:
        raise CubeError(
            f"period {period} falls before the stored {existing[-1]}; only later periods can "
            "be appended"
        )
    part.drop_vars("spatial_ref").to_zarr(store, group=group, append_dim="time", consolidated=False)
    return [*existing, period]


def items_path(store: str | os.PathLike, group: str) -> Path | str:
    """Where :func:`to_zarr` freezes a cube's items: ``<store>.items/<group>.json``, beside it.

    A path for a local store, a URL for one in object storage (``s3://…``).
    """
    if "://" in str(store):
        return f"{str(store).rstrip('/')}.items/{group}.json"
    store = Path(store)
    return store.with_name(store.name + ".items") / f"{group}.json"


def open_cube(store: str | os.PathLike, group: str) -> xr.Dataset:
    """Open a stored cube with its CRS; only periods marked complete are returned.

    Examples
    --------
    >>> from minecube import demo
    >>> from minecube.stac import search
    >>> world = demo.generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                       dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> site = world.sites.iloc[0]
    >>> with demo.serve(world) as server:
    ...     items = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
    ...     written = to_zarr(build(site, items, composite="year"), "/tmp/tiny-cubes.zarr")
    >>> cube = open_cube("/tmp/tiny-cubes.zarr", "hunter-coal")
    >>> cube.rio.crs.to_epsg(), [str(t)[:4] for t in cube.time.values]
    (32756, ['2022', '2023'])
    """
    import xarray as xr
    import zarr

    root = zarr.open_group(store, mode="r")
    if group not in root:
        raise CubeError(
            f"no cube {group!r} in {os.fspath(store)!r}; it holds {sorted(root.group_keys())}"
        )
    ds = xr.open_zarr(store, group=group, decode_coords="all", consolidated=False)
    done = set(root[group].attrs.get("minecube:complete_periods", []))
    keep = [str(t)[:10] in done for t in ds.time.values]
    return ds.isel(time=np.flatnonzero(keep))
