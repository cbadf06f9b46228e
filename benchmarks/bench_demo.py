"""Demo world: generation time and size, and COG window reads over HTTP vs from disk.

Run: .venv/bin/python benchmarks/bench_demo.py
Prints a Markdown table; the HTTP/disk ratio is measured in this run on the same windows.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import rasterio

from minecube.demo import generate, serve


def _read_windows(hrefs: list[str], size: int = 128) -> tuple[float, int]:
    start, pixels = time.perf_counter(), 0
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", VSI_CACHE=False):
        for href in hrefs:
            with rasterio.open(href) as src:
                pixels += src.read(1, window=((64, 64 + size), (64, 64 + size))).size
    return time.perf_counter() - start, pixels


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        world = generate(Path(tmp) / "world")
        seconds = time.perf_counter() - t0
        size_mb = world.summary["bytes"] / 1e6
        disk = [a["href"] for i in world.items()[:60] for k, a in i["assets"].items() if k != "scl"]
        with serve(world) as server:
            remote = [
                a["href"]
                for i in world.items(base_url=server.data_url)[:60]
                for k, a in i["assets"].items()
                if k != "scl"
            ]
            t_http, px = _read_windows(remote)
            requests = len(server.requests)
        t_disk, _ = _read_windows(disk)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| measure | value |\n|---|---|")
    print(
        f"| default world: sites / tiles / items | {world.summary['sites']} / "
        f"{world.summary['tiles']} / {world.summary['items']} |"
    )
    print(f"| generation time | {seconds:.1f} s (goal < 60 s) |")
    print(f"| size on disk | {size_mb:.0f} MB (goal < 300 MB) |")
    print(f"| window reads from disk | {len(disk) / t_disk:.0f} windows/s |")
    print(
        f"| window reads over HTTP | {len(remote) / t_http:.0f} windows/s "
        f"({requests} requests, {px / 1e6:.1f} Mpx) |"
    )
    print(f"| HTTP ÷ disk throughput | {t_disk / t_http:.2f} |")


if __name__ == "__main__":
    main()
