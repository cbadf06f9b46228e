"""Per-site datacubes: STAC items → a cloud-masked, composited (time, band, y, x) cube → Zarr.

A cube lives on its site's own grid: the UTM zone of the site's centroid (north or south), at
``resolution`` metres, with bounds snapped outward to whole pixels. Everything up to the Zarr
write is lazy (dask).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from minecube import __version__
from minecube.errors import MinecubeError, find_stack_level
from minecube.sensors import (
    BASELINE_DN_OFFSET,
    LEARNED_MASKS,
    MASKED_SCL,
    MASKS,
    Radiometry,
    Sensor,
    dn_offset_evidence,
    mask_valid,
    radiometry,
    sensor_for,
)
from minecube.sites import check_grid, site_geometry, site_zone
from minecube.stac import item_order, redact

if TYPE_CHECKING:
    import pandas as pd
    import pystac
    import xarray as xr

__all__ = [
    "COMPOSITES",
    "ENGINES",
    "MASKED_SCL",
    "BrokenAssetWarning",
    "BuildFailedWarning",
    "DegradedPeriodWarning",
    "EmptyPeriodWarning",
    "LoadPlan",
    "RadiometryWarning",
    "SiteGrid",
    "build",
    "build_many",
    "items_path",
    "open_cube",
    "plan",
    "site_grid",
    "to_zarr",
]

Engine = Literal["auto", "stackstac", "odc-stac", "async-geotiff"]
Composite = Literal["month", "quarter", "year", "day"]
ENGINES: tuple[str, ...] = ("auto", "stackstac", "odc-stac", "async-geotiff")
COMPOSITES: dict[str, str] = {"day": "D", "month": "M", "quarter": "Q", "year": "Y"}
"""Composite rule → pandas period: one median per day (a mosaic of the day's scenes), month,
quarter or year."""


class EmptyPeriodWarning(UserWarning):
    """A composite period had no valid observation (all cloud or no data)."""


class CubeError(MinecubeError, ValueError):
    """A cube cannot be built or stored as asked."""


class DegradedPeriodWarning(UserWarning):
    """A stored period was built without some of its items (see ``attrs["degraded_periods"]``)."""


class BrokenAssetWarning(UserWarning):
    """An item was left out because one of its assets could not be read."""


class BuildFailedWarning(UserWarning):
    """Some sites of :func:`build_many` failed; the others were built."""


class RadiometryWarning(UserWarning):
    """A scene's declared or inferred radiometry was corrected, or could not be confirmed."""


_CHECK_SIZE = 128
"""Pixels on the long side of the decimated read of each asset that the scene check uses."""


_RETRY_DELAY = 0.5
"""Seconds GDAL waits before retrying a failed HTTP read (it doubles the wait each time)."""

SHARD_PIXELS = 4096
"""Largest side, in pixels, of a stored shard: a cube period up to 4096² pixels is one file
per variable (Zarr v3 sharding); larger ones are cut into shards of whole chunks."""


def _gdal_env(retries: int) -> dict[str, str]:
    """GDAL settings of every asset read, in the scene check and inside the dask graph: retry
    transient HTTP failures (429, 500, 502, 503, 504) in place, with backoff."""
    return {
        "GDAL_HTTP_MAX_RETRY": str(retries),
        "GDAL_HTTP_RETRY_DELAY": str(_RETRY_DELAY),
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    }


def _read_asset(href: str, retries: int, out_shape: tuple[int, int] | None):
    """Open a COG, read its last block (a truncated file fails there) and, for the scene check,
    a decimated copy (overviews make it cheap). Returns (error or None, array or None, shape)."""
    import time

    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    error = ""
    for attempt in range(retries):
        try:
            with rasterio.Env(**_gdal_env(retries)), rasterio.open(href) as src:
                h, w = src.block_shapes[0]
                row, col = (src.height - 1) // h * h, (src.width - 1) // w * w
                src.read(1, window=Window(col, row, min(w, src.width - col), 1))
                shape = out_shape or _decimated(src.height, src.width)
                small = src.read(1, out_shape=shape, resampling=Resampling.nearest)
            return None, small, shape
        except rasterio.errors.RasterioError as e:
            error = str(e).splitlines()[0][:200]
            if attempt + 1 < retries:
                time.sleep(0.2 * 2**attempt)
    return error, None, None


def _decimated(height: int, width: int) -> tuple[int, int]:
    f = max(height, width) / _CHECK_SIZE
    return max(1, round(height / max(f, 1))), max(1, round(width / max(f, 1)))


def _inspect_item(item, r: Radiometry, mask: str, retries: int, scl_codes) -> tuple[str, dict]:
    """Read every asset of an item once: (first error or "", scene figures for the check)."""
    arrays: dict[str, np.ndarray] = {}
    shape = None
    for band, asset in r.bands.items():
        error, small, shape = _read_asset(item.assets[asset.key].href, retries, shape)
        if error:
            return f"{asset.key}: {redact(error)}", {}  # no tokens kept
        arrays[band] = small
    refl = [b for b in r.bands if b not in MASKS]
    dn = np.stack([arrays[b].astype("float64") for b in refl])
    nodata = r.bands[refl[0]].nodata  # the same for every band of an item
    clear = np.all(dn != nodata, axis=0) if nodata is not None else np.ones(dn.shape[1:], bool)
    if mask in arrays:  # snow is bright and says nothing about the offset
        codes = (*scl_codes, 11) if mask == "scl" else scl_codes
        clear &= np.asarray(mask_valid(mask, arrays[mask].astype("float64"), scl_codes=codes))
    figures: dict[str, Any] = {"clear_pixels": int(clear.sum())}
    if clear.any():
        negative = (dn[:, clear] * r.scale + r.offset) < -0.02
        figures["negative_fraction"] = round(float(negative.mean(axis=1).max()), 4)
    if r.baseline_offset:  # every sensor with the Sentinel-2 convention, not one name
        carries, evidence = dn_offset_evidence(dn, clear, BASELINE_DN_OFFSET)
        figures.update(evidence, carries_offset=carries)
    return "", figures


def _check_scenes(readable, radiometries, mask: str, retries: int, scl_codes):
    """Read and check every item, one dask task each on the active scheduler (the workers of
    a cluster, else threads): item id → error, and the checked radiometry."""
    import dask
    import dask.threaded

    inspect = dask.delayed(_inspect_item)
    pairs = zip(readable, radiometries, strict=True)
    tasks = [inspect(item, r, mask, retries, scl_codes) for item, r in pairs]
    options = {}
    if dask.base.get_scheduler() in (None, dask.threaded.get):  # threads wait on the network
        options["num_workers"] = max(8, os.cpu_count() or 1)
    results = dask.compute(*tasks, **options)
    broken: dict[str, str] = {}
    checked, records, notes = [], {}, []
    for item, r, (error, figures) in zip(readable, radiometries, results, strict=True):
        if error:
            broken[item.id] = error
            continue
        r, rule, decision = _decide(r, figures)
        if decision and rule != "metadata":  # a kept declaration is recorded, not warned
            notes.append(f"{item.id}: {decision}")
        checked.append(r)
        records[item.id] = {
            **r.record(), "check": figures, "rule": rule, "decision": decision or "ok"
        }  # fmt: skip
    return broken, checked, records, notes


def _decide(r: Radiometry, figures: dict) -> tuple[Radiometry, str, str]:
    """The offset of a Sentinel-2 scene, the rule that decided it and why.

    Clear pixels below 1000 DN prove the files carry no offset: that overrules anything. The
    absence of such pixels only suggests an offset (a bright, arid scene has none either), so
    it overrules only metadata in doubt (:attr:`Radiometry.doubt`); settled metadata win."""
    carries = figures.get("carries_offset")
    seen = (
        f"{figures.get('below_offset_fraction', 0):.1%} of clear pixels below 1000 DN, darkest "
        f"1 % at {figures.get('p1_dn', float('nan')):.0f} DN"
    )
    if carries is not None and (r.offset != 0.0) != carries:
        offset = r.carried_offset if carries else 0.0
        if carries and r.doubt is None:
            return (
                r,
                "metadata",
                (
                    f"kept offset {r.offset} ({r.source}): no clear pixel below 1000 DN ({seen}), "
                    "as in a bright scene, cannot overrule it"
                ),
            )
        rule = "pixels below the offset" if not carries else "pixels, metadata in doubt"
        why = (
            f"declared/inferred offset {r.offset} contradicted by the pixels ({seen}"
            f"{'; ' + r.doubt if carries else ''}): corrected to offset {offset}"
        )
        return r.with_offset(offset, "scene check", why), rule, why
    if figures.get("negative_fraction", 0.0) > 0.01:
        return (
            r,
            "flag",
            (
                f"flagged: {figures['negative_fraction']:.1%} of clear pixels are below −0.02 "
                f"reflectance with offset {r.offset} (not corrected)"
            ),
        )
    if r.source == "acquisition date" and carries is None:
        return (
            r,
            "acquisition date",
            ("baseline unknown and the scene is too bright or cloudy to confirm it"),
        )
    return r, "metadata" if carries is None else "metadata, confirmed by the pixels", ""


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
    """The grid of a site: the UTM zone that holds most of its area, bounds snapped outward to
    whole pixels.

    Sites across the antimeridian get their own zone (1 or 60), not the centroid's of a
    geometry that wraps the globe; a site over two zones gets the one with most of its area and
    a warning (:func:`minecube.sites.site_zone`); a grid far larger than the site, or over
    :data:`minecube.sites.MAX_GRID_PIXELS`, is warned about or refused
    (:func:`minecube.sites.check_grid`).

    Examples
    --------
    >>> from shapely.geometry import box
    >>> site_grid(box(150.90, -32.46, 150.92, -32.44))
    SiteGrid(epsg=32756, bounds=(302570.0, 6406630.0, 304510.0, 6408890.0), resolution=10.0)
    """
    import geopandas as gpd

    geom = site_geometry(site)
    site_id = str(getattr(site, "site_id", "") or "") or None
    epsg, unwrapped = site_zone(geom, site_id=site_id)
    projected = gpd.GeoSeries([unwrapped], crs=4326).to_crs(epsg)
    minx, miny, maxx, maxy = projected.total_bounds
    r = resolution
    bounds = (
        float(np.floor(minx / r) * r),
        float(np.floor(miny / r) * r),
        float(np.ceil(maxx / r) * r),
        float(np.ceil(maxy / r) * r),
    )
    grid = SiteGrid(epsg, bounds, float(resolution))
    parts = len(getattr(unwrapped, "geoms", [unwrapped]))
    check_grid(grid.shape, float(projected.area.sum()) / r**2, site_id=site_id, parts=parts)
    return grid


def _load(
    items, keys: list[str], grid: SiteGrid, engine: str, chunks: int, retries: int
) -> xr.DataArray:
    """Raw digital numbers (time, band, y, x) float32 on the site grid; NaN where no scene.

    The GDAL engines carry :func:`_gdal_env` into the graph, async-geotiff its obstore retry
    settings, so each read retries transient HTTP failures where it runs (a thread or a dask
    worker)."""

    if engine == "async-geotiff":
        return _load_async(items, keys, grid, chunks, retries)
    if engine == "stackstac":
        import stackstac
        from rasterio.enums import Resampling

        # plain dicts without links: pystac would otherwise resolve each item's root link (the
        # API) to transform hrefs, which fails once the API is gone (frozen items, offline)
        plain = [
            {**i.to_dict(transform_hrefs=False, include_self_link=False), "links": []}
            for i in items
        ]
        da = stackstac.stack(
            plain,
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
            sortby_date=False,  # keep the caller's (time, id) order: one slice per item
            gdal_env=stackstac.DEFAULT_GDAL_ENV.updated(always=_gdal_env(retries)),
        )
        if list(da["id"].values) != [i.id for i in items]:
            raise CubeError("stackstac returned the items in another order; report this")
        da = da.drop_vars([c for c in da.coords if c not in ("time", "band", "y", "x")])
        return da.assign_coords(band=keys)
    if engine == "odc-stac":
        import odc.stac
        import rasterio
        from odc.geo.geobox import GeoBox

        geobox = GeoBox.from_bbox(grid.bounds, crs=f"EPSG:{grid.epsg}", resolution=grid.resolution)
        with rasterio.Env(**_gdal_env(retries)):  # odc-stac captures the active env into tasks
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


def _load_async(items, keys: list[str], grid: SiteGrid, chunks: int, retries: int):
    """:func:`_load` with :mod:`minecube.asyncread`; the items it cannot read (another CRS or
    scheme, a signed URL) by stackstac, in the same graph and order."""
    import xarray as xr

    from minecube import asyncread

    if not asyncread.available():
        raise CubeError(
            "engine='async-geotiff' needs the async-geotiff and obstore packages: "
            "pip install 'minecube[async]' (or use engine='stackstac')"
        )
    fast = [asyncread.readable(i, keys, grid.epsg) for i in items]
    if all(fast):
        return asyncread.load(items, keys, grid, chunks=chunks, retries=retries)
    parts, order = [], []
    for wanted in (True, False):
        chosen = [k for k, f in enumerate(fast) if f == wanted]
        if not chosen:
            continue
        subset = [items[k] for k in chosen]
        parts.append(
            asyncread.load(subset, keys, grid, chunks=chunks, retries=retries)
            if wanted
            else _load(subset, keys, grid, "stackstac", chunks, retries)
        )
        order += chosen
    joined = xr.concat(parts, "time", join="override", coords="minimal", compat="override")
    return joined.isel(time=np.argsort(order))


def build(
    site,
    items: Sequence[pystac.Item],
    *,
    bands: Sequence[str] | None = None,
    resolution: float | None = None,
    composite: Composite = "month",
    engine: Engine = "auto",
    chunks: int = 512,
    mask: str | Callable[[xr.DataArray], xr.DataArray] | None = None,
    mask_scl: Sequence[int] = MASKED_SCL,
    sign: Callable[[pystac.Item], Any] | None = None,
    retries: int = 3,
) -> xr.Dataset:
    """Build a site's cloud-masked, composited datacube (lazily).

    Each item is read with its own radiometry (:func:`minecube.sensors.radiometry`: its
    ``raster:bands``, or its Sentinel-2 processing baseline), and each scene is checked on a
    decimated read of its files before the cube is assembled: a Sentinel-2 scene whose pixels
    contradict the declared offset (the +1000 DN of baseline 04.00) is corrected, one whose
    clear pixels come out implausibly negative is flagged, both with a
    :class:`RadiometryWarning`; every decision is in ``attrs["radiometry"]``.

    Parameters
    ----------
    site
        A site row (:func:`minecube.sites.read_sites`) or a shapely geometry in lon/lat.
    items
        STAC items over the site from one sensor (:data:`minecube.sensors.SENSORS`), e.g. from
        :func:`minecube.stac.search`.
    bands
        Reflectance bands by name, any the sensor declares (``swir16``, ``rededge1``… for
        Sentinel-2); default the sensor's :attr:`~minecube.sensors.Sensor.default_bands` (blue,
        green, red and NIR where it has them) that the items have: items of three bands give a
        three-band cube. A band asked for that the sensor or the items lack is refused, naming
        the ``bands=`` that works.
    resolution
        Pixel size in metres; default the sensor's (10 m Sentinel-2, 30 m Landsat and HLS).
    composite
        ``"day"``, ``"month"``, ``"quarter"`` or ``"year"``: median of the valid observations
        in each period; periods without any scene are left out.
    engine
        ``"stackstac"`` or ``"odc-stac"`` (GDAL), or ``"async-geotiff"`` (a Rust COG reader
        over obstore, ``pip install 'minecube[async]'``: :mod:`minecube.asyncread`); all give
        the same pixels. ``"auto"`` (default): async-geotiff where it is installed (it reads
        the demo world's COGs in about 0.6 of stackstac's time: benchmarks/README.md), else
        stackstac; ``attrs["engine"]`` says which read the cube.
    chunks
        Spatial chunk size in pixels; a multiple of the chip size keeps chips aligned.
    mask
        Cloud mask: ``"scl"`` (Sentinel-2 L2A), ``"qa_pixel"`` (Landsat Collection 2 Level-2),
        ``"fmask"`` (HLS), ``"csmask"`` (a learned cloud and shadow mask for archives
        without a mask layer, :mod:`minecube.csmask`), ``"none"`` (only nodata is masked;
        recorded), or a callable that
        takes the per-scene reflectance (time, band, y, x) and returns where it is clear
        (time, y, x). Default: the sensor's own (:data:`minecube.sensors.MASKS`); items
        without its layer are refused, naming ``mask="none"`` and ``"csmask"``.
    mask_scl
        SCL codes that ``mask="scl"`` masks (default :data:`MASKED_SCL`).
    sign
        Called on a copy of each item before reading, e.g. ``planetary_computer.sign_inplace``.
        Signed URLs are never stored in the cube.
    retries
        Attempts to read each asset's header and last block before the item is skipped (skipped
        items and the reason are recorded in ``attrs["skipped_items"]`` with a warning), and
        retries of each HTTP read that fails with 429 or 5xx, inside the dask graph too.

    Returns
    -------
    xarray.Dataset
        ``reflectance`` (time, band, y, x) float32 surface reflectance, ``valid_count``
        (time, y, x) observations behind each pixel, ``ndvi`` (time, y, x), and the CRS as a CF
        ``spatial_ref`` coordinate. ``attrs`` hold JSON provenance: ``sensor``, ``mask``,
        ``radiometry`` (per item: scale, offset, where they came from, the scene check and its
        decision), ``item_ids``, ``skipped_items`` and the search.

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
    >>> dict(cube.reflectance.sizes), str(cube.rio.crs), cube.attrs["sensor"]
    ({'time': 2, 'band': 4, 'y': 98, 'x': 98}, 'EPSG:32756', 'sentinel-2-l2a')
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {list(ENGINES)}")
    if engine == "auto":
        from minecube import asyncread

        engine = "async-geotiff" if asyncread.available() else "stackstac"
    if composite not in COMPOSITES:
        raise ValueError(f"composite={composite!r} is not one of {list(COMPOSITES)}")
    search_record = getattr(items, "extra_fields", {}).get("minecube:search", {})
    the_plan = plan(site, items, bands=bands, resolution=resolution, mask=mask)
    items, grid, keys = list(the_plan.items), the_plan.grid, list(the_plan.keys)
    sensor, mask_name, asset_mask = the_plan.sensor, the_plan.mask, the_plan.asset_mask
    bands, resolution, declared = the_plan.bands, grid.resolution, list(the_plan.radiometry)
    readable = items
    if sign is not None:
        readable = [i.clone() for i in items]
        for item in readable:
            sign(item)
    broken, checked, records, notes = _check_scenes(
        readable, declared, asset_mask, retries, tuple(mask_scl)
    )
    if broken:
        warnings.warn(
            f"skipping {len(broken)} of {len(items)} items whose assets cannot be read: "
            + "; ".join(f"{k}: {v}" for k, v in broken.items()),
            BrokenAssetWarning,
            stacklevel=find_stack_level(),
        )
        lost = [i for i in items if i.id in broken]
        keep = [i.id not in broken for i in items]
        items = [i for i, k in zip(items, keep, strict=True) if k]
        readable = [i for i, k in zip(readable, keep, strict=True) if k]
        if not items:
            raise CubeError(f"no item could be read: {broken}")
    degraded: dict[str, dict[str, str]] = {}
    if broken:
        import pandas as pd

        for item in lost:
            when = pd.Timestamp(item.datetime or item.properties.get("start_datetime"))
            start = when.tz_localize(None).to_period(COMPOSITES[composite]).start_time
            degraded.setdefault(str(start)[:10], {})[item.id] = broken[item.id]
    guessed = [r.item for r in checked if r.source == "acquisition date"]
    if guessed:
        notes.append(
            f"{len(guessed)} items carry no processing baseline, so their offset follows the "
            "acquisition date (checked on their pixels; see attrs['radiometry'])"
        )
    if notes:
        warnings.warn(
            "radiometry: " + "; ".join(notes), RadiometryWarning, stacklevel=find_stack_level()
        )
    raw = _load(readable, keys, grid, engine, chunks, retries)
    raw = raw.assign_coords(item_id=("time", [i.id for i in items])).sortby("time")
    order = list(raw.item_id.values)  # before chunk(), which makes the coordinate lazy too
    # one time chunk per period, so writing a period reads only that period's scenes
    period = raw.time.to_index().tz_localize(None).to_period(COMPOSITES[composite])
    raw = raw.chunk({"time": tuple(period.value_counts(sort=False).loc[period.unique()])})
    by_item = {r.item: r for r in checked}

    def per_item(band: str, field: str) -> xr.DataArray:
        values = [getattr(by_item[i].bands[band], field) for i in order]
        values = [np.nan if v is None else v for v in values]
        return xr.DataArray(np.asarray(values, "float32"), dims="time")

    refl = []
    for band, key in zip(bands, keys[: len(bands)], strict=True):
        dn = raw.sel(band=key)
        dn = dn.where(dn != per_item(band, "nodata"))
        refl.append(dn * per_item(band, "scale") + per_item(band, "offset"))
    reflectance = xr.concat(refl, dim="band").assign_coords(band=list(bands))
    reflectance = reflectance.drop_vars("item_id")
    if callable(mask):
        valid = _callable_mask(mask, reflectance)
    elif mask_name == "csmask":
        from minecube.csmask import clear

        valid = clear(reflectance, resolution=resolution)
    elif asset_mask != "none":
        layer = raw.sel(band=keys[-1]).drop_vars(["band", "item_id"])
        valid = mask_valid(asset_mask, layer, scl_codes=tuple(mask_scl))
    else:
        valid = xr.ones_like(reflectance.isel(band=0, drop=True), dtype=bool)
    valid = valid & reflectance.notnull().all("band")
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
        "sensor": sensor.name,
        "composite": composite,
        "engine": engine,
        "resolution": resolution,
        "mask": mask_name,
        "masked_scl": list(mask_scl) if mask_name == "scl" else [],
        "item_ids": [i.id for i in items],
        "skipped_items": json.dumps(broken),
        "degraded_periods": json.dumps(degraded),
        "radiometry": json.dumps({i.id: records[i.id] for i in items}),
        "search": json.dumps(search_record),
    }
    return ds


@dataclass(frozen=True)
class LoadPlan:
    """What :func:`build` will read, decided from the items' metadata alone (no pixel read)."""

    items: tuple
    """The items, sorted by time then id."""
    sensor: Sensor
    bands: tuple[str, ...]
    mask: str
    """The mask's name as recorded (``"scl"``, ``"none"``, ``"callable:<name>"``…)."""
    asset_mask: str
    """The mask read from an asset (``"none"`` for a callable or no mask)."""
    grid: SiteGrid
    keys: tuple[str, ...]
    """Asset keys read, the bands' then the mask's."""
    radiometry: tuple[Radiometry, ...]
    """Per item, as declared or inferred from the metadata (before the scene check)."""


def plan(
    site,
    items: Sequence[pystac.Item],
    *,
    bands: Sequence[str] | None = None,
    resolution: float | None = None,
    mask: str | Callable | None = None,
) -> LoadPlan:
    """Decide how a cube will be read: sensor, grid, asset keys, mask and per-item radiometry.

    Reads no pixel, so it works on any catalogue's items offline; :func:`build` starts here.
    Raises :class:`CubeError` (no items, several sensors, the site outside every item, items
    naming their assets differently), :class:`minecube.sensors.UnknownSensorError` or
    ``ValueError`` (bad bands or mask) with the fix in the message.

    Examples
    --------
    >>> import pystac, datetime
    >>> from shapely.geometry import box
    >>> scene = box(150.5, -33, 151.5, -32)
    >>> item = pystac.Item("LC09_L2SP_089090_20240417_02_T1", scene.__geo_interface__,
    ...                    list(scene.bounds), datetime.datetime(2024, 4, 17), {},
    ...                    collection="landsat-c2-l2")
    >>> for key in ("blue", "green", "red", "nir08", "qa_pixel"):
    ...     item.add_asset(key, pystac.Asset(f"{key}.tif"))
    >>> p = plan(box(150.90, -32.46, 150.92, -32.44), [item])
    >>> p.sensor.name, p.grid.resolution, p.keys, p.mask, p.radiometry[0].bands["nir"].scale
    ('landsat-c2-l2', 30.0, ('blue', 'green', 'red', 'nir08', 'qa_pixel'), 'qa_pixel', 2.75e-05)
    """
    items = sorted(items, key=item_order)
    if not items:
        raise CubeError("no items to build a cube from; search() with wider dates or max_cloud")
    sensors = {i.id: sensor_for(i) for i in items}
    names = sorted({s.name for s in sensors.values()})
    if len(names) > 1:
        raise CubeError(
            f"the items come from several sensors {names}; build one sensor at a time "
            "(filter the items by collection)"
        )
    sensor = next(iter(sensors.values()))
    if bands is None:  # the sensor's default bands that the items have
        bands = sensor.bands_of(items[0]) or sensor.default_bands
    bands = sensor.check_bands(bands)
    mask_name = _mask_name(mask, sensor)
    asset_mask = mask_name if mask_name in sensor.masks else "none"
    grid = site_grid(site, resolution=float(resolution or sensor.resolution))
    geom = site_geometry(site)
    if not any(_item_shape(i).intersects(geom) for i in items):
        raise CubeError(
            f"the site (bounds {tuple(round(v, 4) for v in geom.bounds)}) lies outside every "
            f"one of the {len(items)} items; check the site's coordinates or the search"
        )
    declared = [radiometry(i, tuple(bands), mask=asset_mask, sensor=sensor) for i in items]
    keys = [a.key for a in declared[0].bands.values()]
    if any([a.key for a in r.bands.values()] != keys for r in declared):
        raise CubeError("items name their band assets differently; build one catalogue at a time")
    return LoadPlan(
        tuple(items),
        sensor,
        tuple(bands),
        mask_name,
        asset_mask,
        grid,
        tuple(keys),
        tuple(declared),
    )


def _mask_name(mask, sensor) -> str:
    if callable(mask):
        return f"callable:{getattr(mask, '__qualname__', type(mask).__name__)}"
    if mask is None:
        return sensor.default_mask
    if mask in LEARNED_MASKS:
        return mask
    if mask not in MASKS:
        raise ValueError(f"mask={mask!r} is not one of {[*MASKS, *LEARNED_MASKS]} or a callable")
    if mask != "none" and mask not in sensor.masks:
        raise ValueError(
            f"mask={mask!r} does not exist for {sensor.name} items; choose one of "
            f"{[*sensor.masks, 'none']} or a callable"
        )
    return mask


def _callable_mask(mask, reflectance):
    valid = mask(reflectance)
    dims = getattr(valid, "dims", None)
    if dims is None or set(dims) != {"time", "y", "x"} or valid.dtype != bool:
        raise CubeError(
            f"mask callable {_mask_name(mask, None)!r} must return a boolean DataArray with "
            f"dims (time, y, x), True where clear; it returned {type(valid).__name__} with "
            f"dims {dims} and dtype {getattr(valid, 'dtype', None)}"
        )
    return valid.transpose("time", "y", "x")


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
    overwrite: bool = False,
    progress: bool = False,
    fail_after: int | None = None,
) -> list[str]:
    """Write a cube to Zarr period by period, resuming, repairing and appending.

    The store and group are claimed first (:mod:`minecube.store`): a folder, Zarr store or group
    that minecube did not write is refused, never replaced. Each period is recorded in the
    group's manifest only after its data are written (one atomic replace), with the size of
    each chunk; so re-running the same call after a crash skips the whole periods, rewrites a
    half-written, damaged (missing or truncated chunk) or degraded one, and appends later ones.
    A period built with skipped items is recorded as *degraded* with the items and reasons, and
    upgraded (its history kept) once a re-run reads them. Periods must come after those stored.

    Parameters
    ----------
    cube
        A cube from :func:`build`.
    store
        Zarr store path or URL.
    group
        Group name (default: the cube's ``site_id``); it follows the site id rule
        (:func:`minecube.sites.check_site_id`).
    items
        The items the cube was built from; frozen beside the store (:func:`items_path`) so the
        cube can be rebuilt without the API (links and query strings removed).
    overwrite
        Empty the group first if minecube wrote it (never a group it did not write).
    progress
        Show a progress bar.
    fail_after
        For tests: raise after writing this many periods, as a crash would.

    Returns
    -------
    list of str
        The periods written by this call (ISO dates).
    """
    from minecube import store as stores
    from minecube.catalog import describe_group
    from minecube.sites import check_site_id

    group = group or cube.attrs.get("site_id") or None
    if not group:
        raise ValueError("give group= (the cube has no site_id to name its Zarr group)")
    check_site_id(group, what="group")
    with stores.writing(store, group, "cubes") as manifest:  # the group's only writer
        if overwrite and manifest["units"]:
            manifest = stores.clear_group(store, group, manifest)
        stores.require_meta(
            store, group, manifest,
            "Replace the site's cube (to_zarr(..., overwrite=True)) or build into a new store",
        )  # fmt: skip
        written = _write_cube(cube, store, group, manifest, progress, fail_after)
        if items is not None:
            _freeze_items(items, store, group)
        describe_group(store, group)  # its STAC item, once its data and items are in
    return written


def _write_cube(cube, store, group: str, manifest: dict, progress: bool, fail_after) -> list[str]:
    """The periods of ``cube`` that the group's manifest does not record whole, written and
    recorded batch by batch; then the group's attributes. The periods written."""
    import dask
    from tqdm.auto import tqdm

    from minecube import store as stores

    units = manifest["units"]
    periods = [str(t)[:10] for t in cube.time.values]
    variables = [str(v) for v in cube.variables]
    existing = _stored_periods(store, group, variables, _recorded_length(manifest))
    if existing is None:  # a first write killed before it completed
        manifest = stores.clear_group(store, group, manifest)
        units, existing = manifest["units"], []
    if existing and periods and periods[0] < existing[0]:
        raise CubeError(
            f"the cube starts at {periods[0]}, before the stored {existing[0]}; build "
            "from the stored start or write to a new group"
        )
    if existing:
        _check_same_settings(cube, store, group)
    damaged = stores.verify(store, group, manifest)
    whole = {p for p, u in units.items() if u.get("status") == "complete" and p not in damaged}
    degraded = json.loads(cube.attrs.get("degraded_periods", "{}"))
    cube = cube.drop_encoding().chunk({"time": 1})
    chunks = {d: c[0] for d, c in cube.chunks.items()}
    cube = cube.assign_coords(band=cube.band.values.astype(object))
    names = [str(v) for v in cube.data_vars]
    to_write = [p for p in periods if p not in whole]
    written = []
    batch = max(1, os.cpu_count() or 1)  # periods computed together, written in order
    bar = tqdm(total=len(to_write), desc=f"cube {group}", unit="period", disable=not progress)
    for first in range(0, len(to_write), batch):
        periods_ = to_write[first : first + batch]
        try:
            (computed,) = dask.compute(cube.sel(time=[np.datetime64(p) for p in periods_]))
        except Exception as e:
            if not _is_read_error(e):
                raise
            raise CubeError(
                f"reading the scenes of {periods_} for {group!r} failed after retries: "
                f"{redact(str(e).splitlines()[0])[:300]}. The {len(written)} periods written "
                "by this call are kept; run the same call again to resume"
            ) from None
        for period, count in zip(
            periods_, computed.valid_count.sum(("y", "x")).values, strict=True
        ):
            if int(count) == 0:
                warnings.warn(
                    f"no valid observation in the period starting {period} (all cloud or no "
                    "data): its reflectance is NaN and valid_count 0",
                    EmptyPeriodWarning,
                    stacklevel=find_stack_level(),
                )
        for run in _write_runs(periods_, existing):
            if fail_after is not None:
                if len(written) >= fail_after:
                    raise RuntimeError(
                        f"stopped after {len(written)} periods (fail_after={fail_after})"
                    )
                run = run[: fail_after - len(written)]
            at = periods_.index(run[0])  # a run is consecutive periods of the batch
            part = computed.isel(time=slice(at, at + len(run)))
            existing = _write_periods(part, run, store, group, existing, chunks)
            files = stores.listing(store, group)
            for period in run:
                index = existing.index(period)
                record = {
                    "status": "degraded" if period in degraded else "complete",
                    "chunks": stores.unit_chunks(files, [f"{n}/c/{index}/" for n in names]),
                    "written": stores._now(),
                }
                if period in degraded:
                    record["skipped"] = degraded[period]
                if period in units:  # a rewrite keeps what the period was before
                    old = units[period]
                    past = {k: old[k] for k in ("status", "written", "skipped") if k in old}
                    record["history"] = [*old.get("history", []), past]
                units[period] = record
            stores.write_manifest(store, group, manifest)  # only after their data are written
            written += run
            bar.update(len(run))
    bar.close()
    attrs = dict(cube.attrs)
    attrs.pop("degraded_periods", None)
    skipped = {}
    for u in units.values():
        if u.get("status") == "degraded":
            skipped |= u.get("skipped", {})
    attrs["skipped_items"] = json.dumps(skipped)
    import zarr

    zarr.open_group(store, path=group, mode="a").attrs.update(attrs)
    manifest["settings"] = {k: attrs.get(k) for k in _DEFINING}
    stores.write_manifest(store, group, manifest)
    return written


def _freeze_items(items, store, group: str) -> None:
    """Keep the items a cube was built from in its store (:func:`items_path`), redacted."""
    import pystac

    from minecube import store as stores

    fs, _ = stores._fs(store)
    path = stores.items_path(store, group)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    frozen = pystac.ItemCollection(list(items)).to_dict(transform_hrefs=False)
    stores._write_json(fs, path, redact(frozen))  # no token kept in any href


_DEFINING = ("sensor", "composite", "mask", "masked_scl", "resolution")
"""Attributes that define what a stored period is: an append must share them."""


def _check_same_settings(cube, store, group: str) -> None:
    """Refuse appending periods built with other defining settings (or bands) than the stored
    ones: the attributes would claim one composite or mask for every period."""
    import zarr

    opened = zarr.open_group(store, path=group, mode="r")
    stored = dict(opened.attrs)
    new = {k: cube.attrs.get(k) for k in _DEFINING}
    differ = {k: (stored.get(k), v) for k, v in new.items()
              if k in stored and _plain(stored[k]) != _plain(v)}  # fmt: skip
    bands = [str(b) for b in cube.band.values]
    stored_bands = [str(b) for b in opened["band"][:]] if "band" in opened else None
    if stored_bands is not None and stored_bands != bands:
        differ["bands"] = (stored_bands, bands)
    if differ:
        listed = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in differ.items())
        raise CubeError(
            f"site {group!r} of {redact(str(store))} was built with other settings than these "
            f"periods ({listed}); appending would mix them under one set of attributes. Build "
            "with the stored settings, write to a new store, or replace the site's cube "
            "(to_zarr(..., overwrite=True))"
        )


def _plain(value):
    """Settings compared as JSON would store them (tuples as lists, 10 as 10.0)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def build_many(
    sites,
    items: Mapping[str, Sequence[pystac.Item]],
    store: str | os.PathLike,
    *,
    composite: Composite = "month",
    concurrency: int | None = None,
    progress: bool = True,
    **kwargs,
) -> pd.DataFrame:
    """Build and store the cubes of many sites at once, on the active dask scheduler.

    Sites are built concurrently (each site's scene checks, reads and composites are tasks on
    the scheduler; its periods are written as they finish), under one progress bar. A site
    that fails does not stop the others: its error is in the returned table and a warning
    lists the failed sites at the end. Re-running resumes every site (:func:`to_zarr`).

    Parameters
    ----------
    sites
        The site table (:func:`minecube.sites.read_sites`).
    items
        Each site's items by site id (e.g. :func:`minecube.stac.search_many`).
    store
        The cube Zarr store (path or URL).
    composite
        Period of the median composites.
    concurrency
        Sites in flight at once; default twice the scheduler's threads (at least 2, at most
        32), so one site's fixed costs overlap another's reads.
    progress
        One progress bar over the sites.
    **kwargs
        Passed to :func:`build` (``resolution``, ``engine``, ``mask``, ``chunks``...).

    Returns
    -------
    pandas.DataFrame
        One row per site, in the table's order: ``site_id``, ``status`` (``ok`` or
        ``failed``), ``periods`` stored, ``written`` by this call, ``degraded`` periods,
        ``skipped_items``, ``seconds`` and ``error``.

    Examples
    --------
    >>> from minecube import demo
    >>> from minecube.stac import search_many
    >>> world = demo.generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                       dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> with demo.serve(world) as server:
    ...     found = search_many(world.sites, "2022-01-01", "2023-12-31", catalog=server.stac_url)
    ...     table = build_many(world.sites, found, "/tmp/tiny-many.zarr", composite="year",
    ...                        progress=False)
    >>> table[["site_id", "status", "periods"]].to_dict("records")
    [{'site_id': 'hunter-coal', 'status': 'ok', 'periods': 2}]
    """
    import contextvars
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import pandas as pd
    from tqdm.auto import tqdm

    from minecube.store import claim_store

    claim_store(store, "cubes")  # a store it may not write is refused before any read
    rows = {site.site_id: site for site in sites.itertuples()}
    missing = [s for s in rows if s not in items]
    if missing:
        raise CubeError(f"no items given for sites {missing}; search them first")
    if concurrency is None:
        concurrency = min(32, max(2, 2 * _scheduler_threads()))
    results = {}
    bar = tqdm(total=len(rows), desc="cubes", unit="site", disable=not progress)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {}
        for sid, site in rows.items():  # each in a copy of this context: a current client holds
            job = (_build_one, site, items[sid], store, composite, kwargs)
            futures[pool.submit(contextvars.copy_context().run, *job)] = sid
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    bar.close()
    table = pd.DataFrame([results[sid] for sid in rows])
    failed = table[table.status == "failed"]
    if len(failed):
        warnings.warn(
            f"{len(failed)} of {len(table)} sites failed and were not built: "
            + "; ".join(f"{r.site_id}: {r.error}" for r in failed.itertuples())
            + ". The others are built; run the same call again to retry the failed ones",
            BuildFailedWarning,
            stacklevel=find_stack_level(),
        )
    return table


def _scheduler_threads() -> int:
    """Threads of the active dask scheduler: a cluster's workers, else this machine's cores."""
    import dask

    get = dask.base.get_scheduler()
    client = getattr(get, "__self__", None)  # a distributed Client's bound get
    if client is not None and hasattr(client, "nthreads"):
        return max(1, sum(client.nthreads().values()))
    return os.cpu_count() or 1


def _build_one(site, items, store, composite: str, kwargs: dict) -> dict[str, Any]:
    """Build and store one site of :func:`build_many`: its row of the result table."""
    import time

    t0 = time.perf_counter()
    row: dict[str, Any] = {"site_id": site.site_id, "status": "ok", "periods": 0, "written": 0,
                           "degraded": 0, "skipped_items": 0}  # fmt: skip
    try:
        cube = build(site, items, composite=composite, **kwargs)
        written = to_zarr(cube, store, items=items)
        from minecube.store import read_manifest

        units = (read_manifest(store, site.site_id) or {}).get("units", {})
        skipped = {i for u in units.values() for i in u.get("skipped", {})}
        row |= {
            "periods": sum(u.get("status") in ("complete", "degraded") for u in units.values()),
            "written": len(written),
            "degraded": sum(u.get("status") == "degraded" for u in units.values()),
            "skipped_items": len(skipped),
        }
        error = ""
    except Exception as e:  # one site's failure is its row, not the run's end
        row["status"] = "failed"
        error = redact(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")[:300]
    return row | {"seconds": round(time.perf_counter() - t0, 2), "error": error}


def _is_read_error(e: BaseException) -> bool:
    """Whether an error of a compute came from reading the scenes (its text may hold a URL)."""
    readers = ("rasterio", "odc", "stackstac", "urllib3", "aiohttp", "fsspec", "obstore",
               "async_tiff", "async_geotiff")  # fmt: skip
    return type(e).__module__.startswith(readers) or "://" in str(e)


def _recorded_length(manifest: dict) -> int | None:
    """How many entries of the stored time axis the manifest vouches for: those of the last
    write it recorded (its sealed time values; an append killed part-way may have resized the
    axis without writing its values). None for a manifest of before digests."""
    if "meta" not in manifest:
        return None
    values = manifest["meta"].get("time/values", [])
    return None if values is None else len(values)


def _stored_periods(store, group: str, names: list[str], length: int | None) -> list[str] | None:
    """Periods on the stored time axis up to the ``length`` the manifest vouches for, which
    every array is trimmed to (an append killed part-way leaves arrays longer, with periods
    whose time values may never have been written): [] for an empty group, None when a first
    write was killed before it completed or before all its arrays (``names``) were whole."""
    import zarr

    node = zarr.open_group(store, path=group, mode="a")
    if not list(node.keys()):
        return []
    if length == 0:  # arrays, but no completed write: their time values cannot be trusted
        return None
    try:
        stored = _open_periods(store, group, length)
        periods = [str(t)[:10] for t in stored.time.values]
    except (KeyError, ValueError, OSError, AttributeError):
        return None
    if not periods or any(name not in node for name in names):
        return None
    for _, array in node.arrays():
        if (array.metadata.dimension_names or ("",))[0] == "time" and array.shape[0] > len(periods):
            array.resize((len(periods), *array.shape[1:]))
    return periods


def _encoding(part, chunks: dict[str, int]) -> dict:
    """Checksummed chunks (crc32c after zstd) for every variable written, one period deep and
    as wide as the cube's dask chunks (so chips read from the store stay aligned), in shards of
    one period and up to :data:`SHARD_PIXELS` square: a period of a site is one file per
    variable, not one per chunk."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    encoding = {}
    for v in part.data_vars:
        inner, outer = [], []
        for d, n in part[v].sizes.items():
            chunk = 1 if d == "time" else chunks.get(d, n)
            inner.append(chunk)
            per_shard = 1 if d == "time" else max(1, SHARD_PIXELS // chunk)
            outer.append(chunk * min(-(-n // chunk), per_shard))
        encoding[str(v)] = {
            "compressors": (ZstdCodec(), Crc32cCodec()),
            "chunks": tuple(inner),
            "shards": tuple(outer),
        }
    return encoding


def _drop_period_files(store, group: str, names: list[str], index: int) -> None:
    """Remove a stored period's files before it is rewritten: a shard reaching past the array's
    edge is otherwise read back and merged, and a damaged one cannot be. The manifest does not
    count the period whole while it is rewritten (it is damaged, degraded or unrecorded)."""
    from minecube.store import _fs

    fs, root = _fs(store)
    for name in names:
        folder = f"{root}/{group}/{name}/c/{index}"
        if fs.exists(folder):
            fs.rm(folder, recursive=True)


def _write_runs(periods: list[str], existing: list[str]) -> list[list[str]]:
    """The writes of a batch of periods: each stored period rewritten alone, in place; the new
    ones after the stored end appended together (one write, one completion mark)."""
    runs: list[list[str]] = []
    for period in periods:
        new = period not in existing
        if new and runs and runs[-1][0] not in existing:
            runs[-1].append(period)
        else:
            runs.append([period])
    return runs


def _write_periods(
    part, periods: list[str], store, group: str, existing: list[str], chunks: dict[str, int]
) -> list[str]:
    """Write computed periods: create the arrays, rewrite one period in place, or append."""
    keep = {"consolidated": False, "write_empty_chunks": True}
    if not existing:
        part.to_zarr(store, group=group, mode="a", encoding=_encoding(part, chunks), **keep)
        return list(periods)
    if periods[0] in existing:
        index = existing.index(periods[0])
        _drop_period_files(store, group, [str(v) for v in part.data_vars], index)
        part.drop_vars(["spatial_ref", "band", "y", "x"]).to_zarr(
            store, group=group, region={"time": slice(index, index + 1)}, **keep
        )
        return existing
    if periods[0] < existing[-1]:
        raise CubeError(
            f"period {periods[0]} falls before the stored {existing[-1]}; only later periods "
            "can be appended"
        )
    part.drop_vars("spatial_ref").to_zarr(store, group=group, append_dim="time", **keep)
    return [*existing, *periods]


def items_path(store: str | os.PathLike, group: str) -> Path | str:
    """Where :func:`to_zarr` freezes a cube's items: ``<store>/.minecube/items/<group>.json``,
    inside the store (so a copy of the store keeps them).

    A path for a local store, a URL for one in object storage (``s3://…``); a store of the
    earlier layout keeps them beside it until its first write moves them.
    """
    from minecube import store as stores

    inside = stores.items_path(store, group)
    if "://" in str(store):
        fs, _ = stores._fs(store)
        return fs.unstrip_protocol(inside)
    if not Path(inside).exists() and (old := Path(f"{Path(store).absolute()}.items")).is_dir():
        return old / f"{group}.json"
    return Path(inside)


def _open_periods(store, group: str, length: int | None = None) -> xr.Dataset:
    """A stored cube cut to the periods every one of its arrays holds, and to the ``length``
    its manifest vouches for (:func:`_recorded_length`): an append killed part-way leaves some
    arrays longer than others, or all of them longer than the time values written."""
    import xarray as xr
    import zarr

    node = zarr.open_group(store, path=group, mode="r")
    timed = [k for k, a in node.arrays() if (a.metadata.dimension_names or ("",))[0] == "time"]
    n = min([node[k].shape[0] for k in timed] + ([] if length is None else [length]))
    kw = {"group": group, "decode_coords": "all", "consolidated": False}
    others = [k for k in timed if k != "time"]
    times = xr.open_zarr(store, drop_variables=others, **kw).time[:n]
    parts = []
    for name in others:  # each alone: arrays of other lengths cannot conflict
        part = xr.open_zarr(store, drop_variables=[k for k in timed if k != name], **kw)
        parts.append(part.isel(time=slice(0, n)).assign_coords(time=times))
    return xr.merge(parts, compat="override", join="override", combine_attrs="override")


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
    import rioxarray  # noqa: F401 - registers .rio on the result
    import zarr

    from minecube import store as stores

    manifest = stores.read_manifest(store, group)
    if manifest is None or manifest.get("kind") != "cube":
        root = zarr.open_group(store, mode="r")
        if group in root:
            raise stores.StoreError(
                f"group {group!r} of {os.fspath(store)!r} has no cube manifest "
                f"({stores.manifest_path(store, group)}): it was not written by minecube's "
                "to_zarr"
            )
        raise CubeError(
            f"no cube {group!r} in {os.fspath(store)!r}; it holds {sorted(root.group_keys())}"
        )
    units = manifest["units"]
    if not units:  # before the integrity check: a first write may be killed before its group
        raise CubeError(
            f"cube {group!r} in {os.fspath(store)!r} has no complete period yet (its first "
            "write was interrupted); run the same cube build again"
        )
    stores.require_intact(
        store, group, manifest,
        "Run the same cube build again to rewrite those periods, or `minecube check` "
        "for the whole store",
    )  # fmt: skip
    ds = _open_periods(store, group, _recorded_length(manifest))
    recorded = manifest.get("settings") or {}
    changed = {k: (v, ds.attrs.get(k)) for k, v in recorded.items()
               if _plain(ds.attrs.get(k)) != _plain(v)}  # fmt: skip
    if changed:
        listed = "; ".join(f"{k}: built with {a!r}, the attributes say {b!r}"
                           for k, (a, b) in changed.items())  # fmt: skip
        raise stores.StoreIntegrityError(
            f"cube {group!r} of {os.fspath(store)!r}: its attributes were changed since minecube "
            f"wrote them ({listed}); rebuild the site (to_zarr(..., overwrite=True))"
        )
    keep = [str(t)[:10] in units for t in ds.time.values]
    ds = ds.isel(time=np.flatnonzero(keep))
    bad = {p: u.get("skipped", {}) for p, u in units.items() if u.get("status") == "degraded"}
    ds.attrs["degraded_periods"] = json.dumps(bad)
    if bad:
        warnings.warn(
            f"cube {group!r}: {len(bad)} periods are degraded (built without items that could "
            f"not be read): {sorted(bad)}; run the same cube build again to retry them",
            DegradedPeriodWarning,
            stacklevel=find_stack_level(),
        )
    return ds
