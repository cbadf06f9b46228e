"""COG readers on the same items: GDAL through stackstac and odc-stac against async-geotiff.

Run: .venv/bin/python benchmarks/bench_reader.py [--sites 3] [--turns 3] [--cubes]
(async-geotiff and obstore are not minecube dependencies: `pip install async-geotiff obstore`.)

For each of the first sites of the default demo world (generated into a temporary folder),
the items of 2022–2024 are searched once on the world's STAC API, then the site's five assets
(four 10 m bands and the 20 m SCL) are read over HTTP range requests from the world's COG
server onto the site's grid, with each reader in turn (the order rotated between turns, all
warm: the files are read once before any timing):

* ``stackstac``, ``odc-stac``: GDAL, one file at a time per dask thread;
* ``async-geotiff``: :mod:`minecube.asyncread`, the Rust TIFF decoder of async-tiff over
  obstore's HTTP client, all assets of an item fetched at once per dask task;

each through minecube's own ``cube._load`` (raw digital numbers on the site grid, dask
threads). odc-stac fills the area outside a scene's swath with 0 where the others give NaN
(the cube masks both), so its pixels are not "the same" here though its cubes are.

Prints seconds, Mpx/s and the ratio to stackstac (medians over turns), the HTTP requests the
COG server saw, and whether each reader's pixels equal stackstac's exactly (a digest).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _read(items, keys, grid, engine: str) -> np.ndarray:
    from minecube.cube import _load

    return _load(items, keys, grid, engine, 512, 3).compute().values


READERS = {
    "stackstac": lambda i, k, g: _read(i, k, g, "stackstac"),
    "odc-stac": lambda i, k, g: _read(i, k, g, "odc-stac"),
    "async-geotiff": lambda i, k, g: _read(i, k, g, "async-geotiff"),
}


def _one(reader: str, world_path: str, stac_url: str, sites: int) -> dict:
    """In a fresh process: each site's read with ``reader`` cold (the process's first) and
    warm (again, whatever the reader caches kept), with the COG server's requests counted
    from its log; and a digest of the pixels."""
    import hashlib

    import dask

    from minecube.cube import site_grid
    from minecube.demo import open_world
    from minecube.stac import band_assets, search

    warnings.simplefilter("ignore")
    dask.config.set(scheduler="threads", num_workers=os.cpu_count())
    world = open_world(world_path)
    found = []
    for site in list(world.sites.itertuples())[:sites]:
        items = search(site, "2022-01-01", "2024-12-31", catalog=stac_url)
        found.append((items, [a.key for a in band_assets(items[0]).values()], site_grid(site)))
    digest, out = hashlib.sha256(), {"pixels": 0}
    for when in ("cold", "warm"):
        start = time.perf_counter()
        for items, keys, grid in found:
            pixels = READERS[reader](items, keys, grid)
            if when == "cold":
                digest.update(np.ascontiguousarray(pixels).tobytes())
                out["pixels"] += pixels.size
        out[when] = time.perf_counter() - start
    return out | {"digest": digest.hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--cubes", action="store_true",
                        help="whole cube builds with each engine instead, warm")  # fmt: skip
    args = parser.parse_args()
    if args.cubes:
        _cubes(args)
        return
    if args.one:
        print(json.dumps(_one(*args.one, args.sites)))
        return
    from minecube.demo import generate, serve

    runs = {name: [] for name in READERS}
    with tempfile.TemporaryDirectory() as tmp:
        world = generate(Path(tmp) / "world")
        with serve(world) as server:
            names = list(READERS)
            for turn in range(args.turns):
                for name in names[turn % len(names) :] + names[: turn % len(names)]:
                    before = len(server.requests)
                    command = [sys.executable, __file__, "--sites", str(args.sites), "--one",
                               name, str(world.path), server.stac_url]  # fmt: skip
                    done = subprocess.run(command, capture_output=True, text=True, check=True)
                    found = json.loads(done.stdout.strip().splitlines()[-1])
                    runs[name].append(found | {"requests": len(server.requests) - before})
    pixels = runs["stackstac"][0]["pixels"]
    print(f"{args.sites} sites of the default demo world, 2022–2024, five assets; {args.turns} "
          f"turns, {os.cpu_count()} cores; {pixels / 1e6:.1f} Mpx per read\n")  # fmt: skip
    print("| reader | cold s | warm s | cold Mpx/s | cold ÷ stackstac | warm ÷ stackstac "
          "| HTTP requests (cold + warm) | same pixels as stackstac |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    median = {n: {w: statistics.median(r[w] for r in rs) for w in ("cold", "warm")}
              for n, rs in runs.items()}  # fmt: skip
    for name, found in runs.items():
        cold, warm = median[name]["cold"], median[name]["warm"]
        same = all(r["digest"] == runs["stackstac"][0]["digest"] for r in found)
        print(f"| {name} | {cold:.2f} | {warm:.2f} | {pixels / 1e6 / cold:.1f} "
              f"| {cold / median['stackstac']['cold']:.2f} "
              f"| {warm / median['stackstac']['warm']:.2f} "
              f"| {statistics.median(r['requests'] for r in found):.0f} "
              f"| {'yes' if same else 'no'} |")  # fmt: skip


def _cubes(args) -> None:
    """Seconds to build and compute the sites' quarterly cubes with each engine, alternating
    the order each turn, in one process after an untimed build (all warm)."""
    import dask

    from minecube.cube import build
    from minecube.demo import generate, serve
    from minecube.stac import search

    warnings.simplefilter("ignore")
    dask.config.set(scheduler="threads", num_workers=os.cpu_count())
    engines = ["stackstac", "async-geotiff"]
    seconds = {e: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        world = generate(Path(tmp) / "world")
        with serve(world) as server:
            found = [(s, search(s, "2022-01-01", "2024-12-31", catalog=server.stac_url))
                     for s in list(world.sites.itertuples())[: args.sites]]  # fmt: skip
            for site, items in found:
                build(site, items, composite="quarter").compute()
            for turn in range(args.turns):
                for engine in engines if turn % 2 == 0 else engines[::-1]:
                    start = time.perf_counter()
                    for site, items in found:
                        build(site, items, composite="quarter", engine=engine).compute()
                    seconds[engine].append(time.perf_counter() - start)
    median = {e: statistics.median(v) for e, v in seconds.items()}
    print(f"{args.sites} sites, quarterly cubes 2022–2024, {args.turns} turns\n")
    print("| engine | s per turn (median) | each turn | ÷ stackstac |")
    print("|---|---|---|---|")
    for engine, took in median.items():
        each = " ".join(f"{v:.2f}" for v in seconds[engine])
        print(f"| {engine} | {took:.2f} | {each} | {took / median['stackstac']:.2f} |")


if __name__ == "__main__":
    main()
