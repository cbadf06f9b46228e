"""segment() end to end against the bare model on the same batches, in one run.

* bare: the model's forward pass (+ softmax) on pre-built tensors of chips of the same size as
  segment() uses, already normalised, in memory, in batches as segment() runs them (one chip
  at a time on the CPU, ``batch_size`` on a GPU) — nothing else;
* segment: ``segment_to_zarr`` from a cube stored in Zarr to predictions in Zarr: reading,
  NDVI/normalisation, chips by xbatcher, batches, cosine blending over the overlap, the fold of
  the halos, uint8 labels, writing.

Output px/s ÷ bare px/s is the throughput ratio (goal ≥ 0.9 with overlap). Each measurement
runs in its own process, so its peak RSS (goal: flat as the area grows 1×, 4×, 16×) is its own.
The threaded scheduler is compared with a LocalCluster(processes=True), with and without
segment()'s fix for distributed's MALLOC_TRIM_THRESHOLD_. Last, a per-stage table of the 4×
cube on the threaded scheduler: reading the features, normalising, the forward pass, blending
into the accumulators, the arg-max of a block's own pixels (finish), the fold of its borders,
and writing Zarr (seconds summed over threads, and shares of their sum).

Run: .venv/bin/python benchmarks/bench_segment.py [--device cuda] [--base 1024] [--batch-size 8]
[--quick]. Another commit's segment() against the same script: PYTHONPATH=<its checkout> first.
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
    import xarray as xr

    from minecube.segment import segment, segment_to_zarr

    cube = xr.open_zarr(args.cube, decode_coords="all")
    pixels = cube.sizes["time"] * cube.sizes["y"] * cube.sizes["x"]
    if args.case == "ratio":
        return _alternate(args, cube, pixels)
    store = Path(args.cube).with_name(f"pred-{Path(args.cube).stem}-{args.case}.zarr")
    kwargs = {"batch_size": args.batch_size, "device": args.device, "progress": False}
    segment(cube.isel(time=[0], y=slice(0, 64), x=slice(0, 64)), args.model).compute()  # warm
    if args.case == "stages":
        return _stages(cube, store, args.model, kwargs)
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


def _bare(model, size: int, batch: int, device: str, chips: int) -> float:
    """Seconds of the bare forward pass (+ softmax, to the host) over ``chips`` chips, with
    segment()'s autocast on a GPU."""
    import torch

    x = torch.randn(batch, 4, size, size, device=device)
    cuda = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=cuda):
        t0 = time.perf_counter()
        for _ in range(-(-chips // batch)):
            model(x).softmax(1).cpu().numpy()
        return time.perf_counter() - t0


def _alternate(args, cube, pixels: int, repeats: int = 3) -> dict:
    """The bare model and segment_to_zarr, in turn ``repeats`` times in this process (the
    machine's speed drifts between runs): their medians' ratio. The bare rate is measured
    on up to 8 chips per turn; segment() runs chips one at a time on the CPU, so does bare."""
    import dask
    import numpy as np

    from minecube.models import load
    from minecube.segment import _axis, segment, segment_to_zarr

    model = load(args.model, device=args.device)
    size = _axis(cube.sizes["y"], None, 32, None, model.stride).size
    batch = 1 if args.device == "cpu" else args.batch_size
    chips = min(8 * batch, -(-pixels // (size * size)))
    _bare(model, size, batch, args.device, batch)  # warm-up
    kwargs = {"batch_size": args.batch_size, "device": args.device, "progress": False}
    bare, seg, memory = [], [], []
    for i in range(repeats):
        chip_px = -(-chips // batch) * batch * size * size
        bare.append(chip_px / _bare(model, size, batch, args.device, chips))
        store = Path(args.cube).with_name(f"pred-{Path(args.cube).stem}-{i}.zarr")
        with dask.config.set(scheduler="threads"):
            t0 = time.perf_counter()
            segment_to_zarr(cube, args.model, store, group="g", **kwargs)
            seg.append(pixels / (time.perf_counter() - t0))
            t0 = time.perf_counter()  # the same, computed in memory: no store's fixed cost
            segment(cube, args.model, batch_size=args.batch_size, device=args.device).compute()
            memory.append(pixels / (time.perf_counter() - t0))
    return {"bare_px_s": float(np.median(bare)), "px_s": float(np.median(seg)), "chip": size,
            "memory_px_s": float(np.median(memory)),
            "ratios": [s / b for s, b in zip(seg, bare, strict=True)]}  # fmt: skip


def _stages(cube, store: Path, model: str, kwargs: dict) -> dict:
    """Seconds per stage of one segment_to_zarr on the threaded scheduler (summed over its
    threads): reading and features alone, segment()'s own stages, and writing (the call's
    time less that of the same segment() computed in memory)."""
    import dask

    import minecube.segment as ms

    with dask.config.set(scheduler="threads"):
        t0 = time.perf_counter()
        ms._cube_features(cube, ("red", "green", "blue", "nir")).compute()
        read = time.perf_counter() - t0
        ms._STAGES = {}
        t0 = time.perf_counter()
        ms.segment(cube, model, **{k: v for k, v in kwargs.items() if k != "progress"}).compute()
        memory = time.perf_counter() - t0
        stages = dict(ms._STAGES)
        ms._STAGES = None
        t0 = time.perf_counter()
        ms.segment_to_zarr(cube, model, store, group="g", **kwargs)
        whole = time.perf_counter() - t0
    return {"read": read, **stages, "write": max(0.0, whole - memory), "wall": whole}


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
    parser.add_argument("--batch-size", type=int, default=8, help="segment()'s default")
    parser.add_argument("--quick", action="store_true", help="the 1× cube only: its ratios")
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
              "| ratio of each turn | in memory: ratio | segment MB |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        peaks = {}
        for scale in (1,) if args.quick else (1, 2, 4):
            side = args.base * scale
            cube = _cube(folder, side, args.periods)
            both = _run(case="ratio", cube=cube, **common)
            seg = _run(case="threads", cube=cube, **common)  # alone: its own peak memory
            peaks[scale] = seg["peak_mb"]
            turns = " ".join(f"{r:.2f}" for r in both["ratios"])
            print(
                f"| {scale * scale}× | {side}² | {both['chip']}² | "
                f"{both['bare_px_s'] / 1e6:.2f} | {both['px_s'] / 1e6:.2f} | "
                f"{both['px_s'] * 1e-4:.1f} | {both['px_s'] / both['bare_px_s']:.2f} | {turns} "
                f"| {both['memory_px_s'] / both['bare_px_s']:.2f} | {seg['peak_mb']:.0f} |"
            )
            if args.quick:
                return
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
        _print_stages(_run(case="stages", cube=_cube(folder, 2 * args.base, args.periods),
                           **common), 2 * args.base)  # fmt: skip


def _print_stages(found: dict, side: int) -> None:
    wall = found.pop("wall")
    total = sum(found.values())
    print(f"\nstages at 4× ({side}², threaded scheduler; segment_to_zarr took {wall:.2f} s):")
    print("| stage | seconds | share |")
    print("|---|---|---|")
    for name in ("read", "normalise", "forward", "blend", "finish", "fold", "write"):
        seconds = found.get(name, 0.0)
        print(f"| {name} | {seconds:.2f} | {seconds / total:.1%} |")


if __name__ == "__main__":
    main()
