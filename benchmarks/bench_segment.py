"""segment() end to end against the bare model on the same batches, in one run.

* bare: the model's forward pass (+ softmax) on pre-built tensors of ``batch_size`` chips of the
  same size as segment() uses, already normalised, in memory — nothing else;
* segment: ``segment_to_zarr`` from a cube stored in Zarr to predictions in Zarr: reading,
  NDVI/normalisation, chips by xbatcher, batches, cosine blending over the overlap, the fold of
  the halos, uint8 labels, writing.

Output px/s ÷ bare px/s is the throughput ratio (goal ≥ 0.9 with overlap). Each measurement
runs in its own process, so its peak RSS (goal: flat as the area grows 1×, 4×, 16×) is its own.
The threaded scheduler is compared with a LocalCluster(processes=True), with and without
segment()'s fix for distributed's MALLOC_TRIM_THRESHOLD_.

Run: .venv/bin/python benchmarks/bench_segment.py [--device cuda] [--base 1024] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CUBE_SOURCE = ("demo-output/cubes.zarr", "hunter-coal")


def _model(folder: Path) -> str:
    """An FPN-ResNet-18 on 4 bands with a card (random weights: speed does not need training)."""
    import torch

    from minecube.chips import Normalisation
    from minecube.classes import DEFAULT_CLASSES
    from minecube.models import card_for, create, save

    torch.manual_seed(0)
    model = create("fpn", encoder_name="resnet18", in_channels=4).eval()
    norm = Normalisation(("red", "green", "blue", "nir"), (0.08,) * 4, (0.04,) * 4)
    model.card = card_for(model, bands=norm.bands, normalisation=norm, schema=DEFAULT_CLASSES)
    return str(save(model, folder / "fpn-resnet18").with_suffix(""))


def _cube(folder: Path, side: int, periods: int) -> str:
    """A side × side px cube of ``periods`` periods in Zarr: a demo cube tiled, 1024² chunks."""
    import numpy as np
    import rioxarray  # noqa: F401
    import xarray as xr

    from minecube.cube import open_cube

    source = open_cube(*CUBE_SOURCE).isel(time=slice(1, 1 + periods))
    refl = source.reflectance.transpose("time", "band", "y", "x").values
    reps = -(-side // refl.shape[-1])
    tiled = np.tile(refl, (1, 1, reps, reps))[..., :side, :side]
    cube = xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), tiled)},
        coords={
            "time": source.time.values,
            "band": [str(b) for b in source.band.values],
            "y": 6_400_000 - 10 * np.arange(side),
            "x": 300_000 + 10 * np.arange(side),
        },
    ).rio.write_crs(source.rio.crs)
    path = folder / f"cube-{side}.zarr"
    cube.chunk({"time": 1, "band": -1, "y": 1024, "x": 1024}).to_zarr(path, mode="w")
    return str(path)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _case(args) -> dict:
    """One measurement, in this process."""
    import dask
    import torch
    import xarray as xr

    from minecube.segment import _axis, segment, segment_to_zarr

    cube = xr.open_zarr(args.cube, decode_coords="all")
    pixels = cube.sizes["time"] * cube.sizes["y"] * cube.sizes["x"]
    if args.case == "bare":
        from minecube.models import load

        model = load(args.model, device=args.device)
        size = _axis(cube.sizes["y"], None, 32, None, model.stride).size
        n = -(-pixels // (size * size))  # as many chip pixels as the cube has
        x = torch.randn(args.batch_size, 4, size, size, device=args.device)
        with torch.inference_mode():
            model(x).softmax(1)  # warm-up
            t0 = time.perf_counter()
            for _ in range(-(-n // args.batch_size)):
                out = model(x).softmax(1).cpu().numpy()
            seconds = time.perf_counter() - t0
        chip_px = -(-n // args.batch_size) * args.batch_size * size * size
        del out
        return {"px_s": chip_px / seconds, "seconds": seconds, "chip": size, "peak_mb": _peak_mb()}
    store = Path(args.cube).with_name(f"pred-{Path(args.cube).stem}-{args.case}.zarr")
    kwargs = {"batch_size": args.batch_size, "device": args.device, "progress": False}
    segment(cube.isel(time=[0], y=slice(0, 64), x=slice(0, 64)), args.model).compute()  # warm
    if args.case == "threads":
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads"):
            segment_to_zarr(cube, args.model, store, group="g", **kwargs)
        seconds = time.perf_counter() - t0
    else:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            if args.case == "cluster-no-fix":
                client.run(_disable_malloc_fix)
            # warm the workers: imports and the model load, once per worker process
            warm = segment(cube.isel(time=[0], y=slice(0, 128), x=slice(0, 128)), args.model,
                           input_dims={"y": 64, "x": 64}, chunks=32)  # fmt: skip
            warm.compute()
            t0 = time.perf_counter()
            segment_to_zarr(cube, args.model, store, group="g", **kwargs)
            seconds = time.perf_counter() - t0
    stored = xr.open_zarr(store, group="g")
    assert int((stored.prediction > 0).sum()) > 0
    return {"px_s": pixels / seconds, "seconds": seconds, "peak_mb": _peak_mb(), "px": pixels}


def _disable_malloc_fix() -> None:
    import minecube.segment

    minecube.segment._relax_malloc_trim = lambda: None


def _run(**kwargs) -> dict:
    argv = [sys.executable, __file__, "--json"] + [f"--{k.replace('_', '-')}={v}" for k, v in
                                                    kwargs.items()]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--base", type=int, default=1024, help="side of the 1× cube, px")
    parser.add_argument("--periods", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--cube", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(_case(args)))
        return
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = _model(folder)
        common = {"model": model, "device": args.device, "batch_size": args.batch_size}
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
        print(f"device: {args.device} ({name}, {platform.machine()}), torch "
              f"{torch.__version__}, batch size {args.batch_size}, FPN-ResNet-18, 4 bands, "
              f"{args.periods} period(s), overlap 32 px, blend cosine\n")  # fmt: skip
        print("| area | pixels | chip | bare Mpx/s | segment Mpx/s | km²/s at 10 m | ratio "
              "| bare MB | segment MB |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        peaks = {}
        for scale in (1, 2, 4):
            side = args.base * scale
            cube = _cube(folder, side, args.periods)
            bare = _run(case="bare", cube=cube, **common)
            seg = _run(case="threads", cube=cube, **common)
            peaks[scale] = seg["peak_mb"]
            print(
                f"| {scale * scale}× | {side}² | {bare['chip']}² | {bare['px_s'] / 1e6:.2f} | "
                f"{seg['px_s'] / 1e6:.2f} | {seg['px_s'] * 1e-4:.1f} | "
                f"{seg['px_s'] / bare['px_s']:.2f} | {bare['peak_mb']:.0f} | {seg['peak_mb']:.0f} |"
            )
            if scale == 4:
                cluster = {c: _run(case=c, cube=cube, **common)
                           for c in ("cluster", "cluster-no-fix")}  # fmt: skip
                threads = seg
        print(f"\npeak memory of segment at 16× ÷ 4×: {peaks[4] / peaks[2]:.2f}, "
              f"16× ÷ 1×: {peaks[4] / peaks[1]:.2f}")  # fmt: skip
        print(f"\nscheduler at 16× ({4 * args.base}²):")
        print("| scheduler | seconds | Mpx/s | ÷ threaded |")
        print("|---|---|---|---|")
        rows = [("threaded (2 threads)", threads)]
        rows += [("LocalCluster 2 processes × 1 thread", cluster["cluster"])]
        rows += [("same, MALLOC_TRIM fix disabled", cluster["cluster-no-fix"])]
        for label, r in rows:
            print(f"| {label} | {r['seconds']:.1f} | {r['px_s'] / 1e6:.2f} | "
                  f"{r['px_s'] / threads['px_s']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
