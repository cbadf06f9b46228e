"""Cube building: minecube's build + to_zarr against the bare engine on the same items.

For each engine (stackstac, odc-stac) and site size (1×, 4×, 16× the area), one subprocess
measures wall time and peak resident memory of

* bare: the engine loading the items' five assets onto the site grid and computing them;
* minecube: ``build`` (scaling, SCL masking, quarterly median composite) + ``to_zarr``.

Each measurement runs in a fresh process so peak memory is its own. Prints a Markdown table of
the ratios. Run: .venv/bin/python benchmarks/bench_cube.py
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
            for engine in ("stackstac", "odc-stac"):
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
    for engine in ("stackstac", "odc-stac"):
        peaks = [r["minecube"]["peak_mb"] for _, _, e, r in rows if e == engine]
        print(f"\n{engine}: minecube peak memory at 16× ÷ 1× area = {peaks[-1] / peaks[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        print(json.dumps(_measure(*sys.argv[2:5])))
    else:
        main()
