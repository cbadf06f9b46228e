"""The ``minecube`` command line: a thin layer over the Python API."""

from __future__ import annotations

import time
from pathlib import Path

import click

from minecube import __version__

_DEFAULT_WORLD = "demo-world"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minecube")
def main() -> None:
    """Map the footprint of mines in multispectral satellite image cubes.

    \b
    Examples:
      minecube demo run                 # generate, serve and search the demo world
      minecube demo serve demo-world    # serve it until Ctrl-C
      minecube experiment grid.yaml     # compare models and band presets
      minecube report demo-output/predictions.zarr --out report
    """


@main.group()
def demo() -> None:
    """The demo world: a synthetic Sentinel-2 L2A archive around fictional mines."""


def _world_options(f):
    options = [
        click.option("--seed", default=0, show_default=True, help="Random seed."),
        click.option(
            "--years",
            default="2022,2023,2024",
            show_default=True,
            help="Comma-separated years to observe.",
        ),
        click.option("--dates-per-year", default=5, show_default=True),
        click.option("--tile-size", default=384, show_default=True, help="Tile width, pixels."),
        click.option("--site-size", default=256, show_default=True, help="Site width, pixels."),
        click.option("--site", "sites", multiple=True, help="Only these site ids (repeatable)."),
        click.option("--overwrite", is_flag=True, help="Replace a world made with other settings."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _generate(path, seed, years, dates_per_year, tile_size, site_size, sites, overwrite):
    from minecube.demo import generate

    try:
        year_list = [int(y) for y in years.split(",") if y.strip()]
    except ValueError as e:
        raise click.BadParameter(f"{years!r} is not a comma-separated list of years") from e
    t0 = time.perf_counter()
    try:
        world = generate(
            path,
            seed=seed,
            years=year_list,
            dates_per_year=dates_per_year,
            tile_size=tile_size,
            site_size=site_size,
            sites=sites or None,
            overwrite=overwrite,
            progress=True,
        )
    except ValueError as e:  # bad parameters and DemoWorldError
        raise click.ClickException(str(e)) from e
    s = world.summary
    click.echo(
        f"demo world at {world.path}: {s['sites']} sites, {s['tiles']} tiles, {s['items']} items, "
        f"{s['bytes'] / 1e6:.1f} MB ({time.perf_counter() - t0:.1f} s)"
    )
    return world


@demo.command("generate")
@click.argument("path", type=click.Path(path_type=Path), default=_DEFAULT_WORLD)
@_world_options
def demo_generate(path, **kwargs) -> None:
    """Generate the demo world into PATH (reused if it is already there).

    \b
    Example:
      minecube demo generate demo-world --years 2022,2023 --dates-per-year 3
    """
    _generate(path, **kwargs)


@demo.command("serve")
@click.argument("path", type=click.Path(path_type=Path), default=_DEFAULT_WORLD)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--stac-port", type=int, default=None, help="STAC API port [default: free port]")
@click.option("--data-port", type=int, default=None, help="COG server port [default: free port]")
def demo_serve(path, host, stac_port, data_port) -> None:
    """Serve the demo world at PATH: a STAC API and its COGs, until Ctrl-C.

    \b
    Example:
      minecube demo serve demo-world --stac-port 7822
    """
    from minecube.demo import serve
    from minecube.errors import MinecubeError

    try:
        server = serve(path, host=host, stac_port=stac_port, data_port=data_port)
    except MinecubeError as e:
        raise click.ClickException(str(e)) from e
    with server:
        click.echo(f"STAC API:  {server.stac_url}\nCOGs:      {server.data_url}\nCtrl-C stops.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("stopped")


@demo.command("run")
@click.option("--path", type=click.Path(path_type=Path), default=_DEFAULT_WORLD, show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default="demo-output",
    show_default=True,
    help="Folder for cubes (Zarr) and quicklooks.",
)
@click.option(
    "--composite",
    type=click.Choice(["day", "month", "quarter", "year"]),
    default="quarter",
    show_default=True,
)
@click.option("--epochs", default=8, show_default=True, help="Training epochs of the demo model.")
@_world_options
def demo_run(path, out, composite, epochs, **kwargs) -> None:
    """Run the main job on the demo world: generate, serve, search, build a cube per site,
    train a model on some sites, segment every cube into Zarr and write the HTML report.

    Re-running reuses the world, appends only periods not yet in the cubes, reuses the
    trained model and skips predictions already complete; the report is written anew.

    \b
    Example:
      minecube demo run --path demo-world --out demo-output
    """
    from minecube.demo import serve

    world = _generate(path, **kwargs)
    with serve(world) as server:
        click.echo(f"serving: STAC API {server.stac_url}, COGs {server.data_url}\n")
        found = _search_sites(world, server.stac_url)
        _build_cubes(world, found, out, composite)
    model = _train_demo_model(world, out, epochs)
    _segment_cubes(world, out, model)
    _report_demo(world, out)


def _demo_split(world):
    """The demo's site split: the docs' held-out sites when the world has them."""
    from minecube.chips import SiteSplit, split_sites

    test, val = ("hunter-coal", "ashanti-gold"), ("atacama-copper",)
    ids = list(world.site_ids)
    if set(test + val) <= set(ids) and len(ids) > 3:
        return SiteSplit(tuple(s for s in ids if s not in test + val), val, test)
    return split_sites(world.sites, test=1 if len(ids) > 2 else 0, val=1 if len(ids) > 1 else 0)


def _train_demo_model(world, out: Path, epochs: int) -> Path:
    """Train (or reuse) an FPN-ResNet-18 on RGB+NIR chips of the training sites."""
    from minecube.chips import ChipDataset
    from minecube.cube import open_cube
    from minecube.evaluate import evaluate
    from minecube.labels import rasterize
    from minecube.models import create, save
    from minecube.train import fit

    path = out / "model" / "fpn-resnet18-rgbn"
    if path.with_suffix(".json").is_file():
        click.echo(f"\nmodel: reusing {path}.safetensors (delete it to train again)")
        return path
    split = _demo_split(world)
    store = out / "cubes.zarr"
    sites = [*split.train, *split.val, *split.test]
    cubes = {s: open_cube(store, s).load() for s in sites}
    labels = {s: rasterize(world.labels_path(s), cubes[s], time_column="year") for s in sites}

    def part(ids):
        return {s: cubes[s] for s in ids}, {s: labels[s] for s in ids}

    click.echo(
        f"\ntraining FPN-ResNet-18 on RGB+NIR, {epochs} epochs: train {', '.join(split.train)}; "
        f"validate {', '.join(split.val) or '—'}; test {', '.join(split.test) or '—'}"
    )
    chips = {"input_dims": {"y": 128, "x": 128}, "input_overlap": {"y": 64, "x": 64}}
    train = ChipDataset(*part(split.train), bands="rgbn", augment=True, **chips)
    val = (
        ChipDataset(*part(split.val), bands="rgbn", norm=train.norm, **chips) if split.val else None
    )
    model = create("fpn", encoder_name="resnet18", in_channels=4, classes=len(train.schema))
    model = fit(model, train, val, epochs=epochs, batch_size=8, lr=2e-3, loss="ce+dice",
                class_weights="balanced", patience=epochs)  # fmt: skip
    if split.test:
        result = evaluate(model, *part(split.test), world.sites)
        model.card.metrics["test"] = result.summary.to_dict("records")
        for row in result.summary.itertuples():
            if row.level in ("all", "site_id"):
                click.echo(f"  held out {row.group:18s} mIoU {row.miou:.3f}, overall accuracy "
                           f"{row.overall_accuracy:.3f}")  # fmt: skip
    save(model, path)
    click.echo(f"model: {path}.safetensors + .json (card)")
    return path


def _segment_cubes(world, out: Path, model: Path) -> None:
    """Segment every stored cube into predictions.zarr (finished sites are reused)."""
    from minecube.cube import open_cube
    from minecube.segment import segment_to_zarr

    store, predictions = out / "cubes.zarr", out / "predictions.zarr"
    click.echo(f"\nsegmenting every cube into {predictions}")
    rows = []
    for site in world.site_ids:
        t0 = time.perf_counter()
        pred = segment_to_zarr(
            open_cube(store, site), model, predictions, group=site, overwrite=True
        )
        observed = float((pred != pred.rio.nodata).mean())
        rows.append((site, pred.sizes["time"], 100 * observed, time.perf_counter() - t0))
    click.echo(f"\n{'site':20s} {'periods':>8s} {'observed':>9s} {'time':>7s}")
    for site, periods, observed, seconds in rows:
        click.echo(f"{site:20s} {periods:8d} {observed:8.1f}% {seconds:6.1f} s")


def _report_demo(world, out: Path, units: str = "ha") -> Path:
    """The HTML report of the demo run, with the demo's truth; print mining area vs truth."""
    import warnings

    from minecube.labels import MissingLabelsWarning, rasterize
    from minecube.report import open_all_predictions, write_report

    preds = open_all_predictions(out / "predictions.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingLabelsWarning)
        truth = {
            s: rasterize(world.labels_path(s), p, time_column="year") for s, p in preds.items()
        }
    click.echo(f"\nwriting the report to {out / 'report'}")
    page = write_report(
        preds,
        out / "report",
        cubes=out / "cubes.zarr",
        sites=world.sites,
        truth=truth,
        units=units,
        title="minecube demo world",
    )
    import pandas as pd

    series = pd.read_csv(out / "report/tables/mining_vs_truth.csv", dtype={"time": str})
    click.echo(
        f"\nmining footprint against truth, {units.replace('2', '²')} (over pixels observed "
        "and labelled)"
    )
    click.echo(
        f"{'site':20s} {'period':>10s} {'compared':>9s} {'predicted':>10s} "
        f"{'truth':>9s} {'error':>8s}"
    )
    for row in series.itertuples():
        error = "—" if row.error_pct != row.error_pct else f"{row.error_pct:.1f}%"  # NaN: no truth
        click.echo(
            f"{row.site_id:20s} {row.time:>10s} {row.compared_pct:8.1f}% "
            f"{getattr(row, f'predicted_{units}'):10.1f} {getattr(row, f'truth_{units}'):9.1f} "
            f"{error:>8s}"
        )
    click.echo(f"\nreport: {page.resolve()}")
    return page


def _build_cubes(world, found: dict, out: Path, composite: str) -> None:
    """Build, store and quicklook a cube per site; print a summary table."""
    from minecube.cube import build, open_cube, to_zarr
    from minecube.plot import quicklook

    store = out / "cubes.zarr"
    (out / "quicklook").mkdir(parents=True, exist_ok=True)
    click.echo(f"\nbuilding {composite} cubes in {store}")
    rows = []
    for site in world.sites.itertuples():
        t0 = time.perf_counter()
        cube = build(site, found[site.site_id], composite=composite)
        written = to_zarr(cube, store, items=found[site.site_id], progress=True)
        stored = open_cube(store, site.site_id)
        valid = float((stored.valid_count > 0).mean())
        size = sum(p.stat().st_size for p in (store / site.site_id).rglob("*") if p.is_file())
        quicklook(stored, out / "quicklook" / f"{site.site_id}.png")
        rows.append(
            (
                site.site_id,
                stored.sizes["time"],
                len(written),
                valid,
                size,
                time.perf_counter() - t0,
            )
        )
    click.echo(
        f"\n{'site':20s} {'periods':>8s} {'new':>4s} {'valid':>7s} {'on disk':>9s} {'time':>7s}"
    )
    for sid, n, new, valid, size, seconds in rows:
        click.echo(
            f"{sid:20s} {n:8d} {new:4d} {100 * valid:6.1f}% {size / 1e6:7.1f} MB {seconds:6.1f} s"
        )
    click.echo(f"\nquicklooks: {out / 'quicklook'}/<site>.png")


def _search_sites(world, stac_url: str) -> dict:
    """Search the served catalogue for each site and print what was found."""
    import pystac_client

    client = pystac_client.Client.open(stac_url)
    years = world.spec.years
    span = f"{years[0]}-01-01/{years[-1]}-12-31"
    total = 0
    found = {}
    for site in world.sites.itertuples():
        search = client.search(
            collections=["sentinel-2-l2a"], bbox=site.geometry.bounds, datetime=span, limit=100
        )
        items = sorted(search.items(), key=lambda i: (i.datetime, i.id))
        found[site.site_id] = items
        total += len(items)
        clouds = [i.properties["eo:cloud_cover"] for i in items]
        click.echo(
            f"{site.site_id} ({site.commodity}, {site.climate}, EPSG:{site.epsg}): "
            f"{len(items)} items on tiles {site.tiles}, median cloud cover "
            f"{sorted(clouds)[len(clouds) // 2] if clouds else float('nan'):.1f} %"
        )
        for item in items:
            cloud = item.properties["eo:cloud_cover"]
            nodata = item.properties.get("s2:nodata_pixel_percentage", 0)
            click.echo(
                f"    {item.id}  {item.datetime:%Y-%m-%d}  cloud {cloud:5.1f} %  "
                f"nodata {nodata:5.1f} %"
            )
    click.echo(f"\n{total} items found for {len(world.site_ids)} sites in {span}.")
    return found


@main.command()
@click.argument("grid", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default=None, help="Results folder (overrides the grid's `out`).")
def experiment(grid, out) -> None:
    """Train and score every combination of an experiment grid (YAML).

    Architectures × band presets × encoder weights, trained on the split's training sites,
    early-stopped on its validation sites and scored on its test sites. Writes
    results.csv, results.md, groups.csv and a checkpoint per run; finished runs are skipped
    when the grid is run again.

    \b
    Example:
      minecube experiment docs/examples/demo-grid.yaml --out experiment
    """
    import dataclasses

    from minecube.errors import MinecubeError
    from minecube.experiment import read_grid, run

    try:
        config = read_grid(grid)
        if out:
            config = dataclasses.replace(config, out=out)
        results = run(config)
    except (MinecubeError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    columns = ["run", "val_miou", "test_miou", "test_overall_accuracy", "train_s"]
    click.echo("\n" + results[columns].round(3).to_string(index=False))
    click.echo(f"\nresults: {Path(config.out) / 'results.md'} (and results.csv, groups.csv)")


@main.command()
@click.argument("predictions", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default="report",
    show_default=True,
    help="Folder for index.html, figures, tables and exports.",
)
@click.option(
    "--cubes",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Cube store (Zarr): adds true-colour composites to the maps.",
)
@click.option(
    "--sites",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Site table: adds summaries by commodity and climate.",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of <site_id>.gpkg label polygons: adds areas against truth.",
)
@click.option(
    "--label-time-column",
    default="year",
    show_default=True,
    help="Column of the labels with the year each polygon describes.",
)
@click.option("--units", type=click.Choice(["ha", "km2", "m2"]), default="ha", show_default=True)
@click.option(
    "--min-observed",
    default=0.8,
    show_default=True,
    help="Share of a site observed for a period to count in changes.",
)
def report(predictions, out, cubes, sites, labels, label_time_column, units, min_observed):
    """Write the HTML report of a prediction store: class areas, mine expansion, transitions,
    maps, and CSV/Parquet, COG and GeoPackage exports.

    \b
    Example:
      minecube report demo-output/predictions.zarr --cubes demo-output/cubes.zarr \\
          --sites demo-world/sites.geojson --labels demo-world/labels --out my-report
    """
    from minecube.errors import MinecubeError
    from minecube.labels import rasterize
    from minecube.report import open_all_predictions, write_report

    try:
        preds = open_all_predictions(predictions)
        truth = None
        if labels is not None:
            missing = [s for s in preds if not (labels / f"{s}.gpkg").is_file()]
            if missing:
                raise click.ClickException(
                    f"no label file for sites {missing} in {labels} (expected <site_id>.gpkg)"
                )
            truth = {
                s: rasterize(labels / f"{s}.gpkg", p, time_column=label_time_column)
                for s, p in preds.items()
            }
        page = write_report(
            preds,
            out,
            cubes=cubes,
            sites=sites,
            truth=truth,
            units=units,
            min_observed=min_observed,
        )
    except (MinecubeError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"report: {page.resolve()}")


if __name__ == "__main__":
    main()
