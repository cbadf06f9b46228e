"""segment() on a GPU: the labels against the CPU's, and seam-freeness and batch invariance there.

* CUDA (autocast bf16/fp16) against CPU float32 on the same cube and model: the share of pixels
  with the same label (rounding in half precision flips a few near-ties);
* on CUDA, the cube as one block against 256 px chunks, and batch sizes 4 against 32: the share
  of identical labels (1.0 means bit-identical).

Run: python benchmarks/check_gpu.py  (needs demo-output/cubes.zarr from `make demo`)
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    import xarray as xr
    from bench_segment import _cube, _model

    from minecube.segment import segment

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    print(
        f"device: {torch.cuda.get_device_name()} ({platform.machine()}), torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(Path(tmp))
        cube = xr.open_zarr(_cube(Path(tmp), 2048, 2), decode_coords="all")

        def run(**kwargs):
            t0 = time.perf_counter()
            labels = segment(cube, model, **kwargs).values
            return labels, time.perf_counter() - t0

        cpu, t_cpu = run(device="cpu", batch_size=8)
        gpu, t_gpu = run(device="cuda", batch_size=8)
        chunked, _ = run(device="cuda", batch_size=8, chunks=256)
        small, _ = run(device="cuda", batch_size=4)
        large, _ = run(device="cuda", batch_size=32)
    print(f"cube: {cube.sizes['time']} × {cube.sizes['y']} × {cube.sizes['x']} px")
    print("| check | same labels |")
    print("|---|---|")
    print(f"| CUDA autocast vs CPU float32 | {np.mean(cpu == gpu):.5f} |")
    print(f"| CUDA: one block vs 256 px chunks | {np.mean(gpu == chunked):.5f} |")
    print(f"| CUDA: batch size 4 vs 32 | {np.mean(small == large):.5f} |")
    print(f"\nseconds: CPU {t_cpu:.1f}, CUDA {t_gpu:.1f} (first CUDA call includes the model load)")


if __name__ == "__main__":
    main()
