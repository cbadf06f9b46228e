"""Experiment grids: architectures × band presets × pretrained/scratch over one site split.

This is the comparison of Saputra et al. (2025, tables 3–5) as one call: every combination is
trained on the training sites, early-stopped on the validation sites and scored on the test
sites, and the results are written as CSV and Markdown. A grid is a YAML file::

    cubes: demo-output/cubes.zarr            # Zarr store, one group per site (minecube.cube)
    sites: demo-world/sites.geojson          # site table (minecube.sites.read_sites)
    labels: demo-world/labels/{site_id}.gpkg # one file per site, or one file with a site_id column
    time_column: year                        # label year column (omit for static labels)
    split: {test: [hunter-coal], val: [atacama-copper]}   # the other sites train
    # or {train: [...], val: [...], test: [...]}, or {hold_out: {climate: arid}, val: 1}
    models:
      - {architecture: fpn, encoder_name: resnet18}
      - {architecture: unet, encoder_name: resnet18}
      - {architecture: prithvi, frames: 3}   # three consecutive periods per chip
      - {architecture: fpn, encoder_name: efficientnet-b4,   # a model's own weights (and bands)
         encoder_weights: [null, csmask-l2a]}
    bands: [rgb, rgbn, rgbn+ndvi]
    encoder_weights: [null]   # null = from scratch; "imagenet"; "csmask-l2a"; or a file
    chips: {input_dims: {y: 128, x: 128}, input_overlap: {y: 64, x: 64}}
    train: {epochs: 10, batch_size: 8, lr: 0.001}
    out: experiment

Relative paths are taken from the current directory. Each finished run is written to
``<out>/runs/<run>.json`` with its checkpoint under ``<out>/models/``; running the grid again
skips finished runs, so an interrupted grid resumes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minecube.errors import MinecubeError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ExperimentError", "Grid", "read_grid", "run"]


class ExperimentError(MinecubeError, ValueError):
    """An experiment grid that cannot run as written."""


@dataclass(frozen=True)
class Grid:
    """An experiment grid; see the module documentation for the YAML form."""

    cubes: str
    sites: str
    labels: str
    split: Mapping[str, Any]
    models: tuple[Mapping[str, Any], ...] = ({"architecture": "fpn"},)
    bands: tuple[str, ...] = ("rgb", "rgbn")
    encoder_weights: tuple[str | None, ...] = (None,)
    time_column: str | None = "year"
    label_column: str = "class"
    schema: str | None = None
    """Class schema file (JSON/YAML); default :data:`minecube.classes.DEFAULT_CLASSES`."""
    chips: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of :class:`minecube.chips.ChipDataset`."""
    train: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of :func:`minecube.train.fit`."""
    out: str = "experiment"

    def runs(self) -> list[dict[str, Any]]:
        """Every combination, each with a unique file-safe name.

        A model entry may carry its own ``bands`` and ``encoder_weights`` (a value or a list),
        which replace the grid's for that model: pretrained weights fit one encoder.
        """
        out = []
        for entry in self.models:
            model = dict(entry)
            bands_list = _as_list(model.pop("bands", self.bands))
            weights_list = _as_list(model.pop("encoder_weights", self.encoder_weights))
            for bands in bands_list:
                for weights in weights_list:
                    tag = "scratch" if weights is None else Path(str(weights)).stem
                    encoder = model.get("encoder_name") or "default"
                    name = f"{model['architecture']}-{encoder}-{bands}-{tag}".replace("+", "_")
                    if model.get("frames", 1) > 1:
                        name += f"-t{model['frames']}"
                    out.append({"run": name, **model, "bands": bands, "encoder_weights": weights})
        return out


def _as_list(value) -> tuple:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def read_grid(path: str | os.PathLike) -> Grid:
    """Read an experiment grid from YAML, with errors that name the offending key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment grid {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in fields(Grid)}
    unknown = sorted(set(data) - known)
    missing = sorted({"cubes", "sites", "labels", "split"} - set(data))
    if unknown or missing:
        raise ExperimentError(
            f"{path}: unknown keys {unknown}, missing keys {missing}; a grid has {sorted(known)}"
        )
    for key in ("models", "bands", "encoder_weights"):
        if key in data:
            value = data[key]
            data[key] = tuple(value if isinstance(value, list) else [value])
    data["models"] = (
        tuple(
            {"architecture": m} if isinstance(m, str) else dict(m) for m in data.get("models", ())
        )
        or Grid.models
    )
    return Grid(**data)


def _labels_for(grid: Grid, site_id: str):
    if "{site_id}" in grid.labels:
        return grid.labels.format(site_id=site_id)
    import geopandas as gpd

    frame = gpd.read_file(grid.labels, engine="pyogrio")
    if "site_id" not in frame.columns:
        raise ExperimentError(
            f"labels {grid.labels!r} has no site_id column; give one file per site with a "
            "'{site_id}' placeholder in the path instead"
        )
    return frame[frame["site_id"].astype(str) == site_id]


def _split(grid: Grid, sites):
    from minecube.chips import SiteSplit, hold_out, split_sites

    spec = dict(grid.split)
    if "hold_out" in spec:
        return hold_out(sites, **spec.pop("hold_out"), **spec)
    if "train" in spec:  # every part listed: the other sites are left out
        parts = {k: tuple(map(str, spec.get(k, ()))) for k in ("train", "val", "test")}
        unknown = sorted(set(sum(parts.values(), ())) - set(sites["site_id"].astype(str)))
        if unknown:
            raise ExperimentError(f"split names sites {unknown} that are not in {grid.sites!r}")
        return SiteSplit(**parts)
    return split_sites(sites, **spec)


def _load(grid: Grid, site_ids: list[str], schema):
    """Cubes (in memory) and rasterised labels of ``site_ids``."""
    from minecube.cube import open_cube
    from minecube.labels import rasterize

    cubes, labels = {}, {}
    for site in site_ids:
        try:
            cubes[site] = open_cube(grid.cubes, site).load()
        except (FileNotFoundError, KeyError) as e:
            raise ExperimentError(
                f"site {site!r} has no cube in {grid.cubes!r} ({e}); build it with "
                "minecube.cube.to_zarr or `minecube demo run`"
            ) from e
        labels[site] = rasterize(
            _labels_for(grid, site),
            cubes[site],
            column=grid.label_column,
            time_column=grid.time_column,
            schema=schema,
        )
    return cubes, labels


def _model(run: Mapping[str, Any], schema):
    """The untrained model of one run of the grid."""
    from minecube.chips import resolve_bands
    from minecube.models import create

    bands = resolve_bands(run["bands"])
    return create(
        run["architecture"],
        encoder_name=run.get("encoder_name"),
        in_channels=len(bands),
        classes=len(schema),
        encoder_weights=run["encoder_weights"],
        frames=run.get("frames", 1),
        bands=list(bands),
    )


def _markdown(frame: pd.DataFrame) -> str:
    """A pipe table (without pandas' optional tabulate dependency)."""

    import pandas as pd

    def cell(v):
        if pd.isna(v):
            return "—"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines) + "\n"


def run(
    grid: Grid | str | os.PathLike, *, progress: bool = True, budget_s: float | None = None
) -> pd.DataFrame:
    """Run every combination of an experiment grid and write its results table.

    Parameters
    ----------
    grid
        A :class:`Grid` or the path of its YAML file.
    progress
        Show a progress bar per training run.
    budget_s
        Start no new run after this many seconds; the tables then hold the finished runs
        (``results.md`` says how many are left) and calling again resumes. For grids larger
        than one sitting, e.g. on a GPU machine lent for minutes at a time.

    Returns
    -------
    pandas.DataFrame
        One row per run: architecture, encoder, bands, weights, training time (s), validation
        and test mIoU, test overall accuracy and test IoU per class. Also written to
        ``<out>/results.csv`` and ``<out>/results.md``; test scores by site, climate and
        commodity go to ``<out>/groups.csv``.

    Examples
    --------
    ``minecube experiment grid.yaml`` runs the same from the command line.
    """
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from minecube.chips import ChipDataset
    from minecube.classes import DEFAULT_CLASSES, read_schema
    from minecube.evaluate import baselines, evaluate
    from minecube.export import safe_cells
    from minecube.models import save
    from minecube.sites import read_sites
    from minecube.train import fit

    if not isinstance(grid, Grid):
        grid = read_grid(grid)
    schema = read_schema(grid.schema) if grid.schema else DEFAULT_CLASSES
    sites = read_sites(grid.sites)
    split = _split(grid, sites)
    runs = grid.runs()
    for r in runs:  # fail fast: bad bands, architectures or weights before any training
        _model(r, schema)
    out = Path(grid.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    cubes, labels = _load(grid, [*split.train, *split.val, *split.test], schema)

    def subset(ids):
        return {s: cubes[s] for s in ids}, {s: labels[s] for s in ids}

    started = time.perf_counter()
    for r in tqdm(runs, desc="experiment", unit="run", disable=not progress):
        record_path = out / "runs" / f"{r['run']}.json"
        if record_path.exists():
            continue  # finished in an earlier call
        if budget_s is not None and time.perf_counter() - started > budget_s:
            break  # out of time: the next call resumes here
        torch.manual_seed(grid.train.get("seed", 0))
        chip_kwargs = {**grid.chips, "frames": r.get("frames", 1)}
        train = ChipDataset(
            *subset(split.train), bands=r["bands"], schema=schema, augment=True, **chip_kwargs
        )
        val = ChipDataset(*subset(split.val), bands=r["bands"], schema=schema, norm=train.norm,
                          **chip_kwargs) if split.val else None  # fmt: skip
        model = _model(r, schema)
        pretrained = model.pretrained
        model = fit(model, train, val, progress=progress, **grid.train)
        evaluation = evaluate(model, *subset(split.test), sites)
        model.card.metrics["test"] = evaluation.summary.to_dict("records")
        save(model, out / "models" / r["run"])
        overall = evaluation.classes[evaluation.classes.level == "all"]
        record = {
            **{k: v for k, v in r.items() if k != "encoder_weights"},
            "encoder_name": model.spec.encoder_name,
            "weights": "scratch" if r["encoder_weights"] is None else str(r["encoder_weights"]),
            "pretrained_tensors": None
            if pretrained is None
            else f"{pretrained.filled}/{pretrained.total}",
            "epochs_run": model.card.training["epochs_run"],
            "train_s": model.card.training["seconds"],
            "val_miou": model.card.metrics["val_miou"],
            "test_miou": float(evaluation.summary.iloc[0]["miou"]),
            "test_overall_accuracy": float(evaluation.summary.iloc[0]["overall_accuracy"]),
            **{f"iou_{c}": v for c, v in zip(overall["class"], overall["iou"], strict=True)},
            "groups": evaluation.summary.to_dict("records"),
        }
        tmp = record_path.with_suffix(".partial")
        tmp.write_text(json.dumps(record, indent=1, default=float))
        tmp.replace(record_path)  # a run is recorded only once complete
    finished = [out / "runs" / f"{r['run']}.json" for r in runs]
    records = [json.loads(p.read_text()) for p in finished if p.exists()]
    left = len(runs) - len(records)
    # the trivial models every model must beat: the training sites' most frequent class
    # everywhere, and no mine anywhere (all background)
    trivial = baselines(*subset(split.test), schema=schema, train_labels=subset(split.train)[1])
    for row in trivial.to_dict("records"):
        kind = "majority" if row["baseline"] == "majority" else "background"
        records.append(
            {
                "run": "baseline" if kind == "majority" else f"baseline-{kind}",
                "architecture": f"{kind} class: {row['class']}",
                "test_miou": row["miou"],
                "test_overall_accuracy": row["overall_accuracy"],
                **{k: v for k, v in row.items() if k.startswith("iou_")},
                "groups": [],
            }
        )
    groups = pd.DataFrame([{"run": rec["run"], **g} for rec in records for g in rec.pop("groups")])
    if groups.empty:  # no run finished yet (a first sitting out of time): the baseline alone
        groups = pd.DataFrame(columns=["run", "level", "group", "miou"])
    columns = ["run", "architecture", "encoder_name", "bands", "weights",
               "pretrained_tensors", "epochs_run", "train_s", "val_miou", "test_miou",
               "test_overall_accuracy"]  # fmt: skip
    results = pd.DataFrame(records)
    results = results.assign(**{c: None for c in columns if c not in results.columns})
    results = results.astype({"epochs_run": "Int64"})
    safe_cells(results).to_csv(out / "results.csv", index=False)
    safe_cells(groups).to_csv(out / "groups.csv", index=False)
    header = (
        f"# Experiment results\n\nTrain sites: {', '.join(split.train)}; validation: "
        f"{', '.join(split.val) or '—'}; test: {', '.join(split.test)}. Scores are on the test "
        "sites; IoU and mIoU are fractions (0–1), training time in seconds.\n\n"
    )
    if left:
        header += f"**{left} of {len(runs)} runs are not done yet**: run the grid again.\n\n"
    per_class = [c for c in results.columns if c.startswith("iou_")]
    by_group = groups[groups.level.isin(["climate", "commodity", "site_id"])].pivot_table(
        index=["level", "group"], columns="run", values="miou"
    )
    (out / "results.md").write_text(
        header
        + _markdown(results[columns])
        + "\n## Test IoU per class\n\n"
        + _markdown(results[["run", *per_class]])
        + "\n## Test mIoU by site, climate and commodity\n\n"
        + _markdown(by_group.reset_index())
    )
    return results
