"""The ``async-geotiff`` engine: COG windows read by a Rust TIFF decoder over obstore.

:func:`minecube.cube.build` reads the assets of its items onto the site grid with one of three
engines. ``stackstac`` and ``odc-stac`` go through GDAL, one file at a time per dask thread;
``async-geotiff`` (``pip install 'minecube[async]'``) fetches the windows of all of an item's
assets at once, on one asyncio loop per dask task, with the decoder of `async-tiff` and the HTTP
client of `obstore`. It reads GeoTIFFs over ``http(s)://`` and from local paths whose CRS is the
grid's, and gives the same pixels as stackstac there (nearest neighbour: each grid pixel takes
the file's pixel under its centre; the file's nodata becomes NaN).
``benchmarks/bench_reader.py`` measures the three side by side. Items it cannot read that way
— another CRS, another scheme (``s3://``: credentials are GDAL's business here), a signed URL,
another format — are read by stackstac in the same graph. In a process forked after the engine
read in its parent (obstore's Rust runtime cannot run there), GDAL reads, with a warning.
"""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np

from minecube.errors import find_stack_level

if TYPE_CHECKING:
    import pystac
    import xarray as xr

IN_FLIGHT = 16
"""Files read at once by one dask task (an item's assets, a window each)."""

_local = threading.local()  # per thread: its obstore stores (connection pools)
_runtime = {"pid": None}  # the process that started obstore's Rust (tokio) runtime
# async-geotiff warns before failing on a stripped file, which GDAL then reads (_window)
warnings.filterwarnings("ignore", "Striped GeoTIFFs are not supported", UserWarning)


def available() -> bool:
    """Whether async-geotiff and obstore are installed."""
    try:
        import async_geotiff  # noqa: F401
        import obstore  # noqa: F401
    except ImportError:
        return False
    return True


def readable(item: pystac.Item, keys: Sequence[str], epsg: int) -> bool:
    """Whether this engine reads all of ``keys`` of ``item`` onto a grid in ``epsg``: GeoTIFFs
    over http(s) without a query string (signed URLs go to stackstac) or on local disk, in the
    grid's CRS (the item's or the asset's ``proj:code`` or ``proj:epsg``)."""
    for key in keys:
        asset = item.assets[key]
        parts = urlsplit(asset.href)
        if parts.scheme not in ("http", "https", "", "file") or parts.query:
            return False  # a signed URL's token is in its query, which obstore's paths drop
        if "tiff" not in (asset.media_type or "image/tiff"):
            return False
        fields = {**item.properties, **asset.extra_fields}
        code = fields.get("proj:code") or (
            f"EPSG:{fields['proj:epsg']}" if fields.get("proj:epsg") else None
        )
        if code != f"EPSG:{epsg}":
            return False
    return True


def _store(href: str, retries: int):
    """The obstore store of an href's server (one per thread, reused: its connection pool)
    and the path inside it."""
    from obstore.store import HTTPStore, LocalStore

    parts = urlsplit(href)
    stores = _local.__dict__.setdefault("stores", {})
    if parts.scheme in ("http", "https"):
        base = f"{parts.scheme}://{parts.netloc}"
        if base not in stores:
            stores[base] = HTTPStore.from_url(
                base,
                client_options={"allow_http": parts.scheme == "http"},
                retry_config={"max_retries": retries, "retry_timeout": _timedelta(60)},
            )
        return stores[base], parts.path.lstrip("/")
    path = os.path.abspath(parts.path if parts.scheme == "file" else href)
    if "/" not in stores:
        stores["/"] = LocalStore("/")
    return stores["/"], path.lstrip("/")


def _timedelta(seconds: float):
    import datetime as dt

    return dt.timedelta(seconds=seconds)


async def _open(href: str, retries: int):
    """The file's header, fetched anew by every task (a header cached by URL could outlive
    the file behind it)."""
    from async_geotiff import GeoTIFF

    store, path = _store(href, retries)
    return await GeoTIFF.open(path, store=store)


async def _window(href: str, x: np.ndarray, y: np.ndarray, retries: int, limit) -> np.ndarray:
    """The file's pixels under the grid pixel centres ``x`` (columns) and ``y`` (rows), float32,
    NaN outside the file and where it holds its nodata value. A file the Rust decoder does not
    read (stripped rather than tiled, say) is read by GDAL in the same way."""
    async with limit:
        try:
            return await _window_rust(href, x, y, retries)
        except Exception as e:
            if "Not a tiled TIFF" not in str(e):
                raise
        return await asyncio.to_thread(_window_gdal, href, x, y, retries)


async def _window_rust(href: str, x: np.ndarray, y: np.ndarray, retries: int) -> np.ndarray:
    from async_geotiff import Window

    tiff = await _open(href, retries)
    rows, cols, inside = _pixels(href, tiff, x, y)
    if inside is None:
        return np.full((len(y), len(x)), np.nan, np.float32)
    r0, r1, c0, c1 = inside
    array = await tiff.read(window=Window(c0, r0, c1 - c0, r1 - r0))
    return _sample(np.asarray(array.data)[0], tiff.nodata, rows, cols, r0, c0)


def _pixels(href: str, file, x: np.ndarray, y: np.ndarray):
    """The ``file``'s (an async-geotiff or a rasterio dataset) row of each grid row and column
    of each grid column (its pixel under their centres), and the window that holds those inside
    it (None if none is). A file of several bands is refused, as stackstac refuses it."""
    if file.count != 1:
        raise ValueError(
            f"{href} has {file.count} bands; minecube reads one band per asset (as STAC's "
            "eo:bands asks), so split the file into one asset per band"
        )
    t, height, width = file.transform, file.height, file.width
    cols = np.floor((x - t.c) / t.a).astype(int)
    rows = np.floor((y - t.f) / t.e).astype(int)
    cin, rin = (cols >= 0) & (cols < width), (rows >= 0) & (rows < height)
    if not (cin.any() and rin.any()):
        return rows, cols, None
    r0, c0 = int(rows[rin].min()), int(cols[cin].min())
    return rows, cols, (r0, int(rows[rin].max()) + 1, c0, int(cols[cin].max()) + 1)


def _sample(data: np.ndarray, nodata, rows, cols, r0: int, c0: int) -> np.ndarray:
    """The grid's pixels from a window of the file starting at (r0, c0)."""
    data = data.astype(np.float32)
    if nodata is not None:
        data[data == nodata] = np.nan
    out = np.full((len(rows), len(cols)), np.nan, np.float32)
    rin = (rows >= r0) & (rows < r0 + data.shape[0])
    cin = (cols >= c0) & (cols < c0 + data.shape[1])
    out[np.ix_(rin, cin)] = data[np.ix_(rows[rin] - r0, cols[cin] - c0)]
    return out


def _window_gdal(href: str, x: np.ndarray, y: np.ndarray, retries: int) -> np.ndarray:
    """:func:`_window` by GDAL (rasterio), for the files the Rust decoder does not read."""
    import rasterio
    from rasterio.windows import Window

    from minecube.cube import _gdal_env

    with rasterio.Env(**_gdal_env(retries)), rasterio.open(href) as src:
        rows, cols, inside = _pixels(href, src, x, y)
        if inside is None:
            return np.full((len(y), len(x)), np.nan, np.float32)
        r0, r1, c0, c1 = inside
        data = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
        return _sample(data, src.nodata, rows, cols, r0, c0)


def _read_block(hrefs: tuple[str, ...], x: np.ndarray, y: np.ndarray, retries: int) -> np.ndarray:
    """One dask block: the windows of one item's assets, (1, band, y, x). In a process forked
    after the Rust runtime started in its parent, GDAL reads them (the same pixels): the
    runtime's threads stay in the parent (a PyTorch DataLoader's workers, multiprocessing's
    default on Linux), so the child would wait on it for ever."""
    if _runtime["pid"] not in (None, os.getpid()):
        _warn_forked()
        return np.stack([_window_gdal(h, x, y, retries) for h in hrefs])[None]
    _runtime["pid"] = os.getpid()

    async def everything():
        limit = asyncio.Semaphore(IN_FLIGHT)
        return await asyncio.gather(*(_window(h, x, y, retries, limit) for h in hrefs))

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread: the dask worker's or thread pool's case
        return np.stack(asyncio.run(everything()))[None]
    # a loop runs here already (a notebook computing on the synchronous scheduler): use a
    # thread of its own
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return np.stack(pool.submit(asyncio.run, everything()).result())[None]


def _warn_forked() -> None:
    warnings.warn(
        "this process was forked after the async-geotiff engine had read in its parent, and "
        "that engine's Rust runtime cannot run in a forked child: reading with GDAL here (the "
        "same pixels, slower). Start workers with 'spawn' or 'forkserver' "
        "(multiprocessing.set_start_method, DataLoader(multiprocessing_context=...)), or pass "
        "engine='stackstac'",
        RuntimeWarning,
        stacklevel=find_stack_level(),
    )


def load(
    items: Sequence[pystac.Item], keys: Sequence[str], grid, *, chunks: int, retries: int
) -> xr.DataArray:
    """Raw digital numbers (time, band, y, x) float32 on ``grid``, NaN where no scene, as
    :func:`minecube.cube._load` returns them: one dask task per item and spatial chunk, each
    reading the item's assets at once. Every item must be :func:`readable`."""
    import dask.array as da
    import xarray as xr
    from dask.highlevelgraph import HighLevelGraph
    from dask.tokenize import tokenize

    ny, nx = grid.shape
    west, _, _, north = grid.bounds
    x = west + (np.arange(nx) + 0.5) * grid.resolution
    y = north - (np.arange(ny) + 0.5) * grid.resolution
    ystarts, xstarts = range(0, ny, chunks), range(0, nx, chunks)
    hrefs = [tuple(item.assets[k].href for k in keys) for item in items]
    name = "async-geotiff-" + tokenize(hrefs, grid.bounds, grid.resolution, chunks)
    graph = {}
    for t in range(len(items)):
        for i, y0 in enumerate(ystarts):
            for j, x0 in enumerate(xstarts):
                window = (x[x0 : x0 + chunks], y[y0 : y0 + chunks])
                graph[name, t, 0, i, j] = (_read_block, hrefs[t], *window, retries)
    blocks = (
        (1,) * len(items),
        (len(keys),),
        tuple(min(chunks, ny - s) for s in ystarts),
        tuple(min(chunks, nx - s) for s in xstarts),
    )
    array = da.Array(HighLevelGraph.from_collections(name, graph), name, blocks, np.float32)
    times = [np.datetime64(_when(item), "ns") for item in items]
    return xr.DataArray(
        array,
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": list(keys), "y": y, "x": x},
    )


def _when(item) -> str:
    import pandas as pd

    when = pd.Timestamp(item.datetime or item.properties["start_datetime"])
    return (when.tz_convert(None) if when.tzinfo else when).isoformat()
