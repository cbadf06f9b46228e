"""Training input pipeline vs the model's own step rate.

On the demo world's cubes, for each model:

* loading: a DataLoader over :class:`minecube.chips.ChipDataset` (training set, D4 augmentation)
  producing batches, moved to the device — nothing else;
* step: forward + backward + AdamW step of the model on the same batches, pre-built on the device;
* fit: the whole :func:`minecube.train.fit` loop on the same chips.

Prints chips/s of each and the share of step time the loading costs (goal ≤ 10 %), in one run.
Run: .venv/bin/python benchmarks/bench_train.py [--device cuda] [--size 256] [--batches 6]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

MODELS = [("segformer", "mit_b0"), ("unet", "resnet34"), ("fpn", "densenet121")]
TRAIN = ["pilbara-iron", "kalimantan-coal", "cape-york-bauxite", "sudbury-nickel"]


def _lab(folder: Path):
    """Yearly cubes and labels of the training sites of a fresh default demo world."""
    from minecube.cube import build
    from minecube.demo import generate, serve
    from minecube.labels import rasterize
    from minecube.stac import search

    world = generate(folder / "world")
    cubes, labels = {}, {}
    with serve(world) as server:
        for site in world.sites.itertuples():
            if site.site_id in TRAIN:
                items = search(site, "2022-01-01", "2024-12-31", catalog=server.stac_url)
                cubes[site.site_id] = build(site, items, composite="quarter").compute()
                labels[site.site_id] = rasterize(
                    world.labels_path(site.site_id), cubes[site.site_id], time_column="year"
                )
    return cubes, labels


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    import torch

    from minecube.chips import ChipDataset
    from minecube.models import create
    from minecube.train import _loader, fit, pick_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=128, help="chip size, pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measure")
    args = parser.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cubes, labels = _lab(Path(tmp))
    dims = {"y": args.size, "x": args.size}
    t0 = time.perf_counter()
    overlap = {"y": args.size // 2, "x": args.size // 2}
    chips = ChipDataset(
        cubes, labels, bands="rgbn", input_dims=dims, input_overlap=overlap, augment=True
    )
    setup_s = time.perf_counter() - t0
    n = args.batches * args.batch_size
    loader = _loader(chips, args.batch_size, True, 0, 0)

    t0 = time.perf_counter()
    batches = []
    for batch in loader:
        batches.append((batch["image"].to(device), batch["mask"].to(device)))
        if len(batches) == args.batches:
            break
    _sync(device)
    load_s = time.perf_counter() - t0

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {device} ({name or platform.machine()}), torch threads "
          f"{torch.get_num_threads()}; {len(chips)} chips of {args.size}² × 4 bands from "
          f"{len(cubes)} sites, dataset built in {setup_s:.1f} s")  # fmt: skip
    print(f"input pipeline: {n / load_s:8.0f} chips/s ({load_s / args.batches * 1e3:.1f} ms per "
          f"batch of {args.batch_size})\n")  # fmt: skip
    print("| model | step chips/s | fit chips/s | loading ÷ step time | fit ÷ step throughput |")
    print("|---|---|---|---|---|")
    for architecture, encoder in MODELS:
        torch.manual_seed(0)
        model = create(architecture, encoder_name=encoder, in_channels=4, classes=10).to(device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model.train()

        def step(image, mask, model=model, optimiser=optimiser):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(image), mask, ignore_index=255)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        for image, mask in batches[:2]:  # warm-up: allocator and kernel selection
            step(image, mask)
        _sync(device)
        t0 = time.perf_counter()
        for image, mask in batches:
            step(image, mask)
        _sync(device)
        step_s = time.perf_counter() - t0
        part = chips.take(range(n))
        t0 = time.perf_counter()
        fit(model, part, epochs=1, batch_size=args.batch_size, device=str(device), progress=False)
        fit_s = time.perf_counter() - t0
        print(
            f"| {architecture}-{encoder} | {n / step_s:.1f} | {n / fit_s:.1f} | "
            f"{load_s / step_s:.1%} | {step_s / fit_s:.2f} |"
        )


if __name__ == "__main__":
    main()
