"""Cube building: minecube's build + to_zarr against the bare engine on the same items.

For each engine (stackstac, odc-stac, async-geotiff) and site size (1×, 4×, 16× the area), one
subprocess measures wall time and peak resident memory of

* bare: the engine loading the items' five assets onto the site grid and computing them;
* minecube: ``build`` (scaling, SCL masking, quarterly median composite) + ``to_zarr``.

Each measurement runs in a fresh process so peak memory is its own. Prints a Markdown table of
the ratios.

The many-site run (``many``): a demo world of 200 small mines (1.6 km² each, 25 per district);
``search_many`` and ``build_many`` on LocalClusters of 1 and 2 single-thread workers. Prints
STAC requests per site, the per-site fixed overhead (minecube's time per site minus the bare
engine's for the same sites, one at a time), sites per minute, files per site-period and a
projection of the world's mines per quarter on a 100-worker cluster.

Run: .venv/bin/python benchmarks/bench_cube.py [sizes|many]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITE = "sudbury-nickel"
ENGINES = ("stackstac", "odc-stac", "async-geotiff")
SIZES = {1: 256, 4: 512, 16: 1024}  # area factor → site width in pixels


def _measure(world_path: str, engine: str, mode: str) -> dict:
    import dask

    from minecube.cube import build, site_grid, to_zarr
    from minecube.demo import open_world, serve
    from minecube.stac import band_assets, search

    dask.config.set(scheduler="threads", num_workers=os.cpu_count())
    world = open_world(world_path)
    site = world.sites.iloc[0]
    with serve(world) as server:
        items = search(site, "2022-01-01", "2024-12-31", catalog=server.stac_url)
        start = time.perf_counter()
        if mode == "bare":
            from minecube.cube import _load

            keys = [a.key for a in band_assets(items[0]).values()]
            _load(items, keys, site_grid(site), engine, 512, 3).compute()
        else:
            cube = build(site, items, composite="quarter", engine=engine)
            with tempfile.TemporaryDirectory() as tmp:
                to_zarr(cube, Path(tmp) / "c.zarr")
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "items": len(items)}


MANY = {"sites": 200, "years": [2022, 2023], "dates_per_year": 2, "tile_size": 160,
        "site_size": 128}  # fmt: skip
WORLD_MINES = 45_000  # Maus et al. 2022: ~45,000 mine polygons, ~100,000 km² (mean ~2.2 km²)
S2_ITEMS_PER_QUARTER = 36  # a 5-day revisit over ~2 overlapping tiles (orbits) per site


def _many(world_path: str, workers: int) -> dict:
    """search_many + build_many of every site on a LocalCluster of ``workers`` workers."""
    import warnings

    from distributed import Client, LocalCluster

    from minecube.cube import build_many
    from minecube.demo import open_world, serve
    from minecube.stac import open_catalog, search, search_many

    warnings.simplefilter("ignore")
    world = open_world(world_path)
    sites = world.sites
    with serve(world) as server, tempfile.TemporaryDirectory() as tmp:
        client = open_catalog(server.stac_url)
        sent = []
        client._stac_io.session.hooks["response"].append(lambda r, *a, **k: sent.append(1))
        t0 = time.perf_counter()
        found = search_many(sites, "2022-01-01", "2023-12-31", catalog=client)
        search_s = time.perf_counter() - t0
        grouped = len(sent)
        for site in list(sites.itertuples())[:20]:  # the same, one search per site
            search(site, "2022-01-01", "2023-12-31", catalog=client)
        alone = (len(sent) - grouped) / 20
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
        with cluster, Client(cluster):
            t0 = time.perf_counter()
            table = build_many(sites, found, Path(tmp) / "c.zarr", composite="quarter",
                               progress=False)  # fmt: skip
            build_s = time.perf_counter() - t0
        site_period_files = []
        for row in table.itertuples():
            folder = Path(tmp) / "c.zarr" / row.site_id
            n = sum(len(f) for _, _, f in os.walk(folder))
            site_period_files.append(n / max(row.periods, 1))
    return {
        "sites": len(sites),
        "failed": int((table.status != "ok").sum()),
        "items": sum(len(v) for v in found.values()),
        "search_requests": grouped,
        "requests_alone": alone,
        "search_s": search_s,
        "build_s": build_s,
        "files_per_site_period": max(site_period_files),
    }


def _overhead(world_path: str, count: int = 20) -> dict:
    """Time per site of build + to_zarr against the bare engine, one site at a time, both
    reading files an untimed read has already brought into the page cache."""
    import warnings

    import dask

    from minecube.cube import _load, build, site_grid, to_zarr
    from minecube.demo import open_world, serve
    from minecube.stac import band_assets, search

    warnings.simplefilter("ignore")
    dask.config.set(scheduler="threads", num_workers=os.cpu_count())
    world = open_world(world_path)
    sites = list(world.sites.itertuples())[:count]
    bare = mine = 0.0
    with serve(world) as server, tempfile.TemporaryDirectory() as tmp:
        for site in sites:
            items = search(site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
            keys = [a.key for a in band_assets(items[0]).values()]
            _load(items, keys, site_grid(site), "stackstac", 512, 3).compute()  # both warm
            t0 = time.perf_counter()
            _load(items, keys, site_grid(site), "stackstac", 512, 3).compute()
            bare += time.perf_counter() - t0
            t0 = time.perf_counter()
            to_zarr(build(site, items, composite="quarter"), Path(tmp) / "c.zarr")
            mine += time.perf_counter() - t0
    return {"sites": len(sites), "bare_s": bare / len(sites), "minecube_s": mine / len(sites)}


def _subprocess(*args) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *map(str, args)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def many() -> None:
    from minecube.demo import generate

    with tempfile.TemporaryDirectory() as tmp:
        world = generate(Path(tmp) / "many", **MANY)
        one, two = (_subprocess("--many", world.path, w) for w in (1, 2))
        fixed = _subprocess("--overhead", world.path)
    n = one["sites"]
    per_site = one["items"] / n
    rate1, rate2 = (60 * n / r["build_s"] for r in (one, two))
    overhead = fixed["minecube_s"] - fixed["bare_s"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {n} sites of "
        f"{MANY['site_size'] * 10 / 1000:.2f} km side, {per_site:.0f} items each, quarterly "
        "median\n"
    )
    print("| measure | value | goal |")
    print("|---|---|---|")
    print(
        f"| STAC requests per site: search_many / search per site | "
        f"{one['search_requests'] / n:.3f} / {one['requests_alone']:.1f} | ≤ 0.2 |"
    )
    print(f"| search time per site | {1000 * one['search_s'] / n:.0f} ms | |")
    print(
        f"| per-site time, one at a time: bare engine / minecube | {fixed['bare_s']:.2f} s / "
        f"{fixed['minecube_s']:.2f} s | |"
    )
    print(f"| per-site fixed overhead (minecube − bare) | {overhead:.2f} s | ≤ 0.5 s |")
    print(f"| sites per minute, 1 worker | {rate1:.0f} | |")
    print(f"| sites per minute, 2 workers | {rate2:.0f} ({rate2 / rate1:.2f}×) | ≥ 1.8× |")
    print(f"| files per site-period (most) | {two['files_per_site_period']:.1f} | ≤ 10 |")
    print(f"| failed sites | {one['failed']} + {two['failed']} | 0 |")
    # a site on a cluster worker costs a fixed part and a part per item read; the bare engine's
    # time per item (one at a time) prices the reads, the rest of the 2-worker time is fixed
    site_s = 60 / (rate2 / 2)
    item_s = fixed["bare_s"] / per_site
    fixed_s = site_s - per_site * item_s
    quarter_s = fixed_s + S2_ITEMS_PER_QUARTER * item_s
    minutes = WORLD_MINES * quarter_s / 100 / 60
    print(
        f"\nprojection: a site costs a worker {site_s:.2f} s here ({fixed_s:.2f} s fixed + "
        f"{per_site:.0f} items × {item_s:.3f} s); with {S2_ITEMS_PER_QUARTER} Sentinel-2 items "
        f"a quarter, {quarter_s:.1f} s a site-quarter, so {WORLD_MINES:,} mines take "
        f"{minutes:.0f} min per quarter on 100 single-thread workers (reads over loopback; next "
        "to a cloud archive, each read's latency adds to the per-item part)."
    )


def main() -> None:
    from minecube.demo import generate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor, size in SIZES.items():
            world = generate(
                Path(tmp) / f"world{factor}",
                sites=[SITE],
                site_size=size,
                tile_size=size + 64,
            )
            for engine in ENGINES:
                result = {}
                for mode in ("bare", "minecube"):
                    out = subprocess.run(
                        [sys.executable, __file__, "--measure", str(world.path), engine, mode],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    result[mode] = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((factor, size, engine, result))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; site {SITE}, 2022–2024, "
        f"{rows[0][3]['bare']['items']} items, quarterly median\n"
    )
    print(
        "| area | pixels | engine | bare s | minecube s | time ratio | bare MB | "
        "minecube MB | memory ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for factor, size, engine, r in rows:
        b, m = r["bare"], r["minecube"]
        print(
            f"| {factor}× | {size}² | {engine} | {b['seconds']:.1f} | {m['seconds']:.1f} | "
            f"{m['seconds'] / b['seconds']:.2f} | {b['peak_mb']:.0f} | {m['peak_mb']:.0f} | "
            f"{m['peak_mb'] / b['peak_mb']:.2f} |"
        )
    for engine in ENGINES:
        peaks = [r["minecube"]["peak_mb"] for _, _, e, r in rows if e == engine]
        print(f"\n{engine}: minecube peak memory at 16× ÷ 1× area = {peaks[-1] / peaks[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        print(json.dumps(_measure(*sys.argv[2:5])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--many":
        print(json.dumps(_many(sys.argv[2], int(sys.argv[3]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--overhead":
        print(json.dumps(_overhead(sys.argv[2])))
    elif sys.argv[1:] == ["many"]:
        many()
    elif sys.argv[1:] == ["sizes"]:
        main()
    else:
        main()
        print()
        many()
