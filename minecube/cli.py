"""The ``minecube`` command line: a thin layer over the Python API."""

from __future__ import annotations

import time
from pathlib import Path

import click

from minecube import __version__, pipeline
from minecube.stac import redact

_DEFAULT_WORLD = "demo-world"


class _Main(click.Group):
    """The command group: an error in any command becomes one line and its fix (_errors)."""

    def invoke(self, ctx: click.Context):
        with _errors(debug=bool(ctx.params.get("debug"))):
            return super().invoke(ctx)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minecube")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of option defaults per command, e.g. {segment: {batch_size: 16}}.",
)
@click.option("--scheduler", default=None, help="Address of a running dask scheduler to run on.")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.option(
    "--cluster",
    "cluster_kind",
    type=click.Choice(["local", "gateway", "slurm"]),
    default=None,
    help="Make a dask cluster for the command: a LocalCluster, Dask-Gateway or SLURM "
    "(dask-jobqueue); closed at its end [default with --workers: local].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Workers of that cluster (N ≥ 1); its dashboard link is printed.",
)
@click.option(
    "--adapt",
    default=None,
    metavar="MIN:MAX",
    help="Scale the cluster adaptively between MIN and MAX workers instead of --workers.",
)
@click.option(
    "--cluster-option",
    "cluster_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting of the cluster (address, proxy_address, auth, shared_filesystem, timeout) "
    "or an option of its manager (SLURM: cores=8, memory=32GB, walltime=02:00:00; gateway: "
    "worker_cores=4…); repeatable. Values are read as YAML.",
)
@click.option(
    "--sensors",
    "sensor_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML file of sensors to register first (minecube.sensors.read_sensors).",
)
@click.pass_context
def main(
    ctx: click.Context,
    config: Path | None,
    scheduler: str | None,
    debug: bool,
    cluster_kind: str | None,
    workers: int | None,
    adapt: str | None,
    cluster_options: tuple[str, ...],
    sensor_file: Path | None,
):
    """Map the footprint of mines in multispectral satellite image cubes.

    \b
    Examples:
      minecube demo run                 # the whole job on the demo world
      minecube sites sites.geojson      # check a site table
      minecube items 'exports/*.tif' --out items.json   # your own rasters as STAC items
      minecube search sites.geojson --catalog https://earth-search.aws.element84.com/v1 \\
          --start 2022-01-01 --end 2024-12-31 --out items
      minecube cube build sites.geojson --items items --out cubes.zarr
      minecube train cubes.zarr --sites sites.geojson --labels labels --out model/fpn
      minecube --workers 2 segment cubes.zarr model/fpn --out predictions.zarr
      minecube stats predictions.zarr --sites sites.geojson --out tables
      minecube report predictions.zarr --cubes cubes.zarr --out report
      minecube experiment grid.yaml     # compare models and band presets
    """
    ctx.with_resource(_echo_logs())  # the library's step summaries, as this command's output
    if sensor_file is not None:
        from minecube.sensors import read_sensors

        read_sensors(sensor_file, replace=True)
    if config is not None:
        ctx.default_map = _read_config(config)
        _check_defaults(ctx.command, ctx.default_map, str(config))
    settings = _cluster_settings(scheduler, cluster_kind, workers, adapt, cluster_options)
    ctx.obj = {"cluster": None, "client": None}
    if settings is not None:
        from minecube.cluster import _settings, connect

        ctx.obj["cluster"] = _settings(settings, {})  # checked once, here
        ctx.obj["client"] = ctx.with_resource(connect(ctx.obj["cluster"]))


def _echo_logs():
    """Print the ``minecube`` logger's INFO lines (the library's step summaries) with click."""
    import logging

    class Echo(logging.Handler):
        def emit(self, record):
            click.echo(record.getMessage(), err=record.levelno >= logging.WARNING)

    return pipeline._logged(Echo())


def _yaml_mapping(path: Path, what: str, error=click.ClickException) -> dict:
    """A YAML file that must hold a mapping, or ``error`` saying what it should hold."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a mapping of {what}")
    return data


def _read_config(path: Path) -> dict:
    """Option defaults per command from YAML; nested groups nest (``cube: {build: {...}}``)."""
    data = _yaml_mapping(path, "command names to options", click.BadParameter)

    def options(d):  # YAML keys as written on the command line: batch-size → batch_size
        return {k.replace("-", "_"): options(v) if isinstance(v, dict) else v for k, v in d.items()}

    return options(data)


def _check_defaults(command: click.Command, defaults: dict, where: str, path: str = "") -> None:
    """Refuse a --config key that names no command or option, suggesting the closest one."""
    import difflib

    if isinstance(command, click.Group):
        allowed = list(command.commands)
        what = "a command"
    else:
        allowed = [p.name for p in command.params if p.name]
        what = f"an option of `{path.strip()}`"
    for key, value in defaults.items():
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"choose from {sorted(allowed)}"
            raise click.BadParameter(
                f"{where}: {key!r} is not {what}; {hint}", param_hint="--config"
            )
        if isinstance(command, click.Group):
            if not isinstance(value, dict):
                raise click.BadParameter(
                    f"{where}: {key!r} must hold a mapping of its options, not {value!r}",
                    param_hint="--config",
                )
            _check_defaults(command.commands[key], value, where, f"{path} {key}")


def _cluster_settings(scheduler, kind, workers, adapt, options) -> dict | None:
    """The global cluster options as :class:`minecube.cluster.ClusterSettings` keys."""
    import yaml

    from minecube.cluster import ClusterSettings

    if scheduler and (kind or workers or adapt or options):
        raise click.UsageError(
            "--scheduler uses a running scheduler as it is; drop --cluster, --workers, --adapt "
            "and --cluster-option"
        )
    if scheduler:
        return {"kind": "address", "address": scheduler}
    if not (kind or workers or adapt or options):
        return None
    settings: dict = {"kind": kind or "local", "options": {}}
    if workers:
        settings["workers"] = workers
    if adapt:
        low, sep, high = adapt.partition(":")
        if not (sep and low.isdigit() and high.isdigit()):
            raise click.BadParameter(f"{adapt!r} is not MIN:MAX, e.g. 1:20", param_hint="--adapt")
        settings["adapt"] = {"minimum": int(low), "maximum": int(high)}
    own = set(ClusterSettings.model_fields) - {"kind", "workers", "adapt", "options"}
    for option in options:
        key, sep, value = option.partition("=")
        if not (sep and key):
            raise click.BadParameter(
                f"{option!r} is not KEY=VALUE, e.g. memory=32GB", param_hint="--cluster-option"
            )
        key = key.replace("-", "_")
        target = settings if key in own else settings["options"]
        target[key] = yaml.safe_load(value)
    return settings


def _require_reachable(**paths) -> None:
    """Refuse, before any work, local paths that the command's cluster workers cannot see."""
    from minecube.cluster import require_reachable

    obj = click.get_current_context().find_root().obj or {}
    if obj.get("client") is None:
        return
    named = {name.replace("_", " "): value for name, value in paths.items()}
    require_reachable(named, settings=obj["cluster"], client=obj["client"])


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
        click.option(
            "--many",
            type=click.IntRange(1, 480),
            default=None,
            help="Instead: N small mines across the districts, one tile each (a many-site world).",
        ),
        click.option(
            "--sensor",
            type=click.Choice(["sentinel-2", "landsat"]),
            default="sentinel-2",
            show_default=True,
            help="Sentinel-2 L2A (10 m) or Landsat Collection 2 Level-2 (30 m; tile size ÷ 6).",
        ),
        click.option(
            "--offset-from",
            default="2022-01-25",
            show_default=True,
            help="Sentinel-2: first day whose files carry the +1000 DN of baseline 04.00.",
        ),
        click.option("--overwrite", is_flag=True, help="Replace a world made with other settings."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _generate(
    path,
    seed,
    years,
    dates_per_year,
    tile_size,
    site_size,
    sites,
    overwrite,
    many=None,
    sensor="sentinel-2",
    offset_from="2022-01-25",
):
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
            sites=many or sites or None,
            sensor=sensor,
            offset_from=offset_from,
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
      minecube demo generate many-world --many 200 --tile-size 160 --site-size 128
    """
    _generate(path, **kwargs)


@demo.command("serve")
@click.argument("path", type=click.Path(path_type=Path), default=_DEFAULT_WORLD)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--stac-port", type=int, default=None, help="STAC API port [default: free port]")
@click.option("--data-port", type=int, default=None, help="COG server port [default: free port]")
@click.option(
    "--style",
    type=click.Choice(["earth-search", "planetary-computer", "earth-search-v0", "cdse"]),
    default="earth-search",
    show_default=True,
    help="Catalogue style of the items (a Sentinel-2 world's files are the same).",
)
def demo_serve(path, host, stac_port, data_port, style) -> None:
    """Serve the demo world at PATH: a STAC API and its COGs, until Ctrl-C.

    \b
    Example:
      minecube demo serve demo-world --stac-port 7822
    """
    from minecube.demo import serve
    from minecube.errors import MinecubeError

    try:
        server = serve(path, host=host, stac_port=stac_port, data_port=data_port, style=style)
    except MinecubeError as e:
        raise click.ClickException(str(e)) from e
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C even where the shell or parent started us with SIGINT ignored (inherited across
    # exec, and Python then installs no handler of its own)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)  # `kill` stops the servers too, not only Ctrl-C
    signal.signal(signal.SIGHUP, stop)  # and so does closing the terminal
    with server:
        try:  # a signal may come as soon as the addresses are out
            click.echo(f"STAC API:  {server.stac_url}\nCOGs:      {server.data_url}\nCtrl-C stops.")
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

    if kwargs["sensor"] != "sentinel-2":
        raise click.UsageError(
            "demo run follows the Sentinel-2 world; make a Landsat world with "
            "`minecube demo generate PATH --sensor landsat --tile-size 288 --site-size 240`, "
            "serve it and use `minecube cube build --collection landsat-c2-l2`"
        )
    world = _generate(path, **kwargs)
    with serve(world) as server:
        click.echo(f"serving: STAC API {server.stac_url}, COGs {server.data_url}\n")
        pipeline.run(world.run_config(server.stac_url, out=out, composite=composite,
                                      epochs=epochs), verbose=False)  # fmt: skip


def _errors(debug: bool):
    """Turn minecube's errors, bad input and network, scheduler or filesystem failures into
    one line and the fix, instead of a traceback (``minecube --debug`` shows it)."""
    import contextlib

    from pystac_client.exceptions import APIError

    from minecube.errors import MinecubeError, explain

    def one_line(e: Exception) -> str:
        if (known := explain(e)) is not None:  # object storage, a damaged chunk, a vector file
            return redact(known)
        if isinstance(e, MinecubeError | ValueError | KeyError | FileNotFoundError):
            return redact(str(e))
        if isinstance(e, OSError | TimeoutError | APIError):  # network, filesystem, scheduler
            return (
                f"{type(e).__name__}: {_first_line(e)}. "
                "Check the path, the URL or the scheduler address and that it is reachable; "
                "run again with `minecube --debug ...` for the traceback"
            )
        return (  # anything else: one line, redacted; --debug shows it all
            f"{type(e).__name__}: {_first_line(e)} (an unexpected error; run again with "
            "`minecube --debug ...` for the traceback, and report it if it is minecube's)"
        )

    @contextlib.contextmanager
    def reported():
        try:
            yield
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            if debug:
                raise
            raise click.ClickException(one_line(e)) from e

    return reported()


def _first_line(error: BaseException) -> str:
    """An error's first line, redacted (:func:`minecube.stac.redact`)."""
    return redact(str(error)).splitlines()[0] if str(error) else repr(error)


def _site_table(path: Path, only: tuple[str, ...] = ()):
    from minecube.sites import read_sites

    sites = read_sites(path)
    if only:
        unknown = sorted(set(only) - set(sites.site_id))
        if unknown:
            raise click.BadParameter(f"sites {unknown} are not in {path}", param_hint="--site")
        sites = sites[sites.site_id.isin(only)]
    return sites


_DAY = click.DateTime(formats=["%Y-%m-%d"])
"""A day, YYYY-MM-DD: checked (with the option's name) before anything is searched or read."""


def _as_day(ctx, param, value):
    return value.date() if value is not None else None


_SITES = click.argument("sites", type=click.Path(exists=True, dir_okay=False, path_type=Path))
_ONLY = click.option("--site", "only", multiple=True, help="Only these site ids (repeatable).")


@main.command("sites")
@_SITES
def sites_command(sites: Path) -> None:
    """Check a site table (GeoJSON, GeoPackage or CSV) and list its sites.

    \b
    Example:
      minecube sites demo-world/sites.geojson
    """
    from minecube.sites import describe_sites

    table = describe_sites(_site_table(sites))
    click.echo(f"{'site':20s} {'commodity':12s} {'climate':12s} {'UTM':>6s} {'area':>9s}")
    for row in table.itertuples():
        click.echo(
            f"{row.site_id:20s} {row.commodity:12s} {row.climate:12s} {row.epsg:>6d} "
            f"{row.area_km2:6.2f} km²"
        )
    click.echo(f"\n{len(table)} sites")


@main.command()
@_SITES
@click.option("--catalog", required=True, help="STAC API URL.")
@click.option("--start", required=True, type=_DAY, callback=_as_day, help="First day, YYYY-MM-DD.")
@click.option("--end", required=True, type=_DAY, callback=_as_day, help="Last day, YYYY-MM-DD.")
@click.option("--collection", default="sentinel-2-l2a", show_default=True)
@click.option("--max-cloud", type=float, default=None, help="Most scene cloud cover, %.")
@click.option(
    "--cover",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Keep items covering at least this share of a site (0–1).",
)
@click.option(
    "--one-per",
    type=click.Choice(["date", "orbit"]),
    default=None,
    help="Keep one item per date (or date and orbit), the one covering most of the site.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default="items",
    show_default=True,
    help="Folder for one item collection (JSON) per site.",
)
@_ONLY
def search(sites, catalog, start, end, collection, max_cloud, cover, one_per, out, only) -> None:
    """Search a STAC API for each site's scenes and save them per site.

    \b
    Example:
      minecube search sites.geojson --catalog https://earth-search.aws.element84.com/v1 \\
          --start 2023-01-01 --end 2023-12-31 --max-cloud 40 --out items
    """
    pipeline.search_sites(_site_table(sites, only), catalog=catalog, start=start, end=end,
                          collection=collection, max_cloud=max_cloud, cover=cover,
                          one_per=one_per, out=out)  # fmt: skip


@main.command("items")
@click.argument("paths", nargs=-1, required=True)
@click.option("--sensor", default="sentinel-2-l2a", show_default=True, help="Registered sensor.")
@click.option(
    "--bands",
    default=None,
    help="Band names of each file, comma-separated (blue,green,red), or token=band pairs "
    "(B4=red,B8=nir) [default: the files' descriptions or names].",
)
@click.option("--datetime", "when", default=None, help="Acquisition date of every file.")
@click.option("--pattern", default=None, help="Regex on file names: (?P<scene>…), (?P<date>…).")
@click.option("--scale", type=float, default=None, help="Scale of every band's numbers.")
@click.option("--offset", type=float, default=None, help="Offset of every band's numbers.")
@click.option("--nodata", type=float, default=None, help="Nodata value of every band.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="items.json",
    show_default=True,
    help="Item collection (JSON) to write; `cube build --items` reads it.",
)
@click.option(
    "--sites-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a site table with one site per item (its footprint), GeoJSON.",
)
def items_command(paths, sensor, bands, when, pattern, scale, offset, nodata, out, sites_out):
    """STAC items from GeoTIFFs/COGs on disk (files, folders or globs), one per scene.

    \b
    Example:
      minecube items 'exports/*.tif' --bands blue,green,red --out items.json \\
          --sites-out sites.geojson
      minecube cube build sites.geojson --items items.json --out cubes.zarr
    """
    from minecube.sites import from_items
    from minecube.stac import items_from_files

    for path in filter(None, (out, sites_out)):  # before any work
        if path.exists():
            raise click.ClickException(f"{path} exists; remove it or choose another --out")
    if bands is not None:
        parts = [b.strip() for b in bands.split(",") if b.strip()]
        bands = dict(p.split("=", 1) for p in parts) if all("=" in p for p in parts) else parts
    found = items_from_files(
        list(paths), sensor=sensor, bands=bands, datetime=when, pattern=pattern, scale=scale,
        offset=offset, nodata=nodata,
    )  # fmt: skip
    found.save_object(str(out))
    click.echo(f"{len(found)} items from {sum(len(i.assets) for i in found)} bands → {out}")
    if sites_out is not None:
        from_items(found).to_file(sites_out, driver="GeoJSON")
        click.echo(f"{len(found)} sites (one per item) → {sites_out}")


@main.group()
def cube() -> None:
    """Per-site cubes in Zarr.

    \b
    Example:
      minecube cube build sites.geojson --items items --out cubes.zarr
    """


@cube.command("build")
@_SITES
@click.option(
    "--items",
    "items_dir",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Folder written by `minecube search`, or an item file of `minecube items`.",
)
@click.option(
    "--bands",
    default=None,
    help="Bands, comma-separated (blue,green,red,nir,swir16) [default: the sensor's "
    "blue, green, red and NIR that the items have].",
)
@click.option("--catalog", default=None, help="Search this STAC API instead of --items.")
@click.option(
    "--start", default=None, type=_DAY, callback=_as_day, help="First day (with --catalog)."
)
@click.option("--end", type=_DAY, callback=_as_day, help="Last day (with --catalog).")
@click.option("--out", default="cubes.zarr", show_default=True, help="Zarr store (path or URL).")
@click.option(
    "--composite",
    type=click.Choice(["day", "month", "quarter", "year"]),
    default="month",
    show_default=True,
)
@click.option(
    "--resolution",
    type=float,
    default=None,
    help="Pixel size, metres [default: the sensor's, 10 Sentinel-2, 30 Landsat/HLS].",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "stackstac", "odc-stac", "async-geotiff"]),
    default="auto",
    show_default=True,
    help="COG reader; auto: async-geotiff where installed, else stackstac.",
)
@click.option(
    "--collection",
    default="sentinel-2-l2a",
    show_default=True,
    help="STAC collection (with --catalog), e.g. landsat-c2-l2.",
)
@click.option(
    "--mask",
    type=click.Choice(["scl", "qa_pixel", "fmask", "csmask", "none"]),
    default=None,
    help="Cloud mask [default: the sensor's: scl Sentinel-2, qa_pixel Landsat, fmask HLS; "
    "csmask: a learned mask, pip install 'minecube[csmask]'].",
)
@click.option(
    "--quicklooks",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for a PNG quicklook per site.",
)
@_ONLY
def cube_build(
    sites,
    items_dir,
    catalog,
    start,
    end,
    out,
    composite,
    resolution,
    engine,
    collection,
    mask,
    quicklooks,
    only,
    bands,
) -> None:
    """Build each site's cloud-masked, composited cube into a Zarr store, many sites at once
    on the dask scheduler (--workers/--scheduler, else threads); a site that fails is listed
    and does not stop the others.

    Re-running appends only periods not yet stored, resumes an interrupted write and retries
    failed sites.

    \b
    Examples:
      minecube cube build sites.geojson --items items --out cubes.zarr --composite quarter
      minecube cube build sites.geojson --catalog URL --start 2023-01-01 --end 2023-12-31
      minecube cube build sites.geojson --catalog URL --collection landsat-c2-l2 \\
        --start 1990-01-01 --end 2023-12-31 --composite year
    """
    if (items_dir is None) == (catalog is None) or (catalog and not (start and end)):
        raise click.UsageError("give --items, or --catalog with --start and --end")
    _require_reachable(cube_store=out)
    table = _site_table(sites, only)
    if items_dir is None:  # search first, keeping nothing
        items_dir = pipeline.search_sites(
            table, catalog=catalog, start=start, end=end, collection=collection
        )
    bands = None if bands is None else tuple(b.strip() for b in bands.split(",") if b.strip())
    pipeline.build_cubes(table, items_dir, out, composite=composite, quicklooks=quicklooks,
                         resolution=resolution, engine=engine, mask=mask, bands=bands)  # fmt: skip


@main.command()
@click.argument("cubes")
@click.option(
    "--sites",
    "site_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--labels",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <site_id>.gpkg label polygons.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Checkpoint path (writes .safetensors and its .json card).",
)
@click.option("--architecture", default="fpn", show_default=True)
@click.option("--encoder-name", default="resnet18", show_default=True)
@click.option(
    "--encoder-weights",
    default=None,
    help="Pretrained encoder: csmask-l2a, imagenet (local cache) or a weights file.",
)
@click.option("--bands", default="rgbn", show_default=True, help="Band preset or list.")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--val-site", multiple=True, help="Validation site (repeatable).")
@click.option("--test-site", multiple=True, help="Held-out test site (repeatable).")
@click.option("--label-time-column", default="year", show_default=True)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a checkpoint already at --out.",
)
def train(cubes, site_file, labels, out, val_site, test_site, **options) -> None:
    """Train a segmentation model on the cubes' sites and score it on held-out ones.

    Without --val-site/--test-site one site each is held out, across climates.

    \b
    Example:
      minecube train cubes.zarr --sites sites.geojson --labels labels --out model/fpn \\
          --test-site hunter-coal --val-site atacama-copper --epochs 20
    """
    pipeline.train_model(cubes, _site_table(site_file), labels, out, val_site=val_site,
                         test_site=test_site, **options)  # fmt: skip


@main.command()
@click.argument("cubes")
@click.argument("model")
@click.option("--out", default="predictions.zarr", show_default=True, help="Zarr store.")
@click.option("--site", "only", multiple=True, help="Only these sites (default: every cube).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--overlap", default=32, show_default=True, help="Chip overlap, pixels.")
@click.option("--tta", type=click.Choice(["d4"]), default=None, help="Test-time augmentation.")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace predictions that minecube wrote with another model or settings.",
)
def segment(cubes, model, out, only, batch_size, overlap, tta, device, overwrite) -> None:
    """Segment each site's cube with a trained model into a Zarr store, resumably.

    CUBES, MODEL (the checkpoint, without its suffix) and --out are paths or fsspec URLs
    (s3://bucket/model/fpn). Runs on the dask cluster given by the global options
    (--workers, --cluster, --scheduler), else on local threads.

    \b
    Examples:
      minecube --workers 2 segment cubes.zarr model/fpn --out predictions.zarr
      minecube --cluster slurm --workers 4 --cluster-option cores=8 \\
        --cluster-option memory=32GB segment s3://b/cubes.zarr s3://b/model/fpn --out s3://b/p.zarr
    """
    _require_reachable(cube_store=cubes, checkpoint=model, prediction_store=out)
    pipeline.segment_cubes(cubes, model, out, sites=list(only) or None, batch_size=batch_size,
                           overlap=overlap, tta=tta, device=device,
                           overwrite=overwrite)  # fmt: skip


@main.command()
@click.argument("predictions")
@click.option("--out", type=click.Path(path_type=Path), default="tables", show_default=True)
@click.option(
    "--sites",
    "site_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Site table: adds tables by commodity and climate.",
)
@click.option("--units", type=click.Choice(["ha", "km2", "m2"]), default="ha", show_default=True)
@click.option("--min-observed", default=0.8, show_default=True)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Labelled sample (from `minecube sample`): adds error-adjusted areas with 95 % intervals.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace files in --out that minecube did not write.",
)
def stats(predictions, out, site_file, units, min_observed, reference, overwrite) -> None:
    """Class areas, mine expansion and summaries of a prediction store, as CSV and Parquet;
    with a labelled sample, error-adjusted areas with their 95 % intervals.

    \b
    Example:
      minecube stats predictions.zarr --sites sites.geojson --units km2 --out tables
      minecube stats predictions.zarr --reference sample.gpkg --out tables
    """
    pipeline.write_area_tables(predictions, out, units=units, min_observed=min_observed,
                               sites=_site_table(site_file) if site_file else None,
                               reference=reference, overwrite=overwrite)  # fmt: skip


@main.command("sample")
@click.argument("predictions")
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Points per map.")
@click.option(
    "--allocation",
    type=click.Choice(["proportional", "equal", "neyman"]),
    default="proportional",
    show_default=True,
)
@click.option("--min-per-stratum", default=0, show_default=True, help="Fewest points per class.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--change",
    nargs=2,
    default=None,
    metavar="FIRST LAST",
    help="Instead: strata of the mining change between two periods (gain, loss, stable).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="sample.gpkg",
    show_default=True,
    help="GeoPackage (for QGIS) or .csv.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a file at --out that minecube did not write (a labelled sample never is).",
)
def sample_command(
    predictions, n, allocation, min_per_stratum, seed, change, out, overwrite
) -> None:
    """Draw a stratified random sample of every map (site and period) to label, for
    error-adjusted areas (Olofsson et al. 2014): fill its `reference` column, then
    `minecube stats --reference`.

    \b
    Example:
      minecube sample predictions.zarr --n 300 --min-per-stratum 50 --out sample.gpkg
      minecube sample predictions.zarr --n 300 --change 2022-01-01 2024-01-01
    """
    pipeline.write_sample(predictions, out, n=n, allocation=allocation, seed=seed,
                          min_per_stratum=min_per_stratum, periods=change,
                          overwrite=overwrite)  # fmt: skip


@main.command("lineage")
@click.argument("table", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--row", default=0, show_default=True, help="Row of the table (0-based).")
def lineage_command(table: Path, row: int) -> None:
    """Show where one row of a run's table came from: run, model, cube period, STAC items.

    \b
    Example:
      minecube lineage run-output/report/tables/class_areas.csv --row 3
    """
    found = pipeline.lineage(table, row=row)
    period = " to ".join(found.get("period", [])) or "every period"
    click.echo(f"run {found['run_id']} ({found['record']})")
    click.echo(f"site {found['site_id']}, {period}")
    if found.get("cube_period"):
        click.echo(f"cube period: {found['cube_period']['status']}")
    click.echo(f"model: {found['model']['file']} sha256 {found['model']['sha256']}")
    click.echo(f"{len(found['items'])} items:")
    for item in found["items"]:
        click.echo(f"  {item['id']}  {item['datetime']}")


@main.command("check")
@click.argument("store")
@click.option("--no-read", is_flag=True, help="Only compare the listing with the manifests.")
def check_command(store, no_read) -> None:
    """Verify a cube or prediction store end to end: manifests, chunk files and checksums.

    Exits with status 1 and names every missing, truncated or corrupt chunk.

    \b
    Example:
      minecube check cubes.zarr
    """
    from minecube.store import check

    report = check(store, read=not no_read)
    click.echo(str(report))
    if not report.ok:
        raise SystemExit(1)


@main.command("publish")
@click.argument("stores", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the static catalogue (catalog.json and a folder per collection).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="A model's STAC MLM item (<name>.mlm.json, written with its weights); repeatable.",
)
@click.option("--overwrite", is_flag=True, help="Replace files in --out minecube did not write.")
def publish_command(stores, out, models, overwrite) -> None:
    """Write a static STAC catalogue of cube and prediction stores (and models) for a STAC
    browser or pystac (xpystac opens the items): a Collection per store, an Item per site.

    \b
    Example:
      minecube publish out/cubes.zarr out/predictions.zarr --out out/catalog \\
          --model out/model/fpn.mlm.json
    """
    from minecube.catalog import publish

    path = publish(list(stores), out=out, models=list(models), overwrite=overwrite)
    click.echo(f"STAC catalogue: {path}")


@main.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def run_command(config: Path) -> None:
    """Run a whole job from one YAML file: search, cubes, a model (given or trained),
    segmentation and the report (``minecube.run``). The whole file is checked before any
    search; re-running reuses what is built. Settings: docs/run.md.

    \b
    Example (run.yaml):
      sites: sites.geojson
      catalog: https://earth-search.aws.element84.com/v1
      start: 2022-01-01
      end: 2024-12-31
      max_cloud: 60
      cube: {composite: quarter}
      model: models/fpn-resnet18-rgbn   # or labels: labels/ and train: {epochs: 20}
      report: {units: km2}
    \b
      minecube --workers 2 run run.yaml
    \b
    The file's `cluster:` section (or the global --cluster options, which win) says where to
    compute, e.g. cluster: {kind: slurm, workers: 4, options: {cores: 8, memory: 32GB}}.
    """
    client = (click.get_current_context().find_root().obj or {}).get("client")
    pipeline.run(config, client=client, verbose=False)


@main.command()
@click.argument("grid", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default=None, help="Results folder (overrides the grid's `out`).")
@click.option(
    "--budget",
    type=float,
    default=None,
    help="Minutes after which no new run starts; run again to resume.",
)
def experiment(grid, out, budget) -> None:
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

    from minecube.experiment import read_grid, run

    config = read_grid(grid)
    if out:
        config = dataclasses.replace(config, out=out)
    results = run(config, budget_s=None if budget is None else budget * 60)
    columns = ["run", "val_miou", "test_miou", "test_overall_accuracy", "train_s"]
    click.echo("\n" + results[columns].round(3).to_string(index=False))
    click.echo(f"\nresults: {Path(config.out) / 'results.md'} (and results.csv, groups.csv)")


@main.command()
@click.argument("predictions")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default="report",
    show_default=True,
    help="Folder for index.html, figures, tables and exports.",
)
@click.option(
    "--cubes",
    default=None,
    help="Cube store (Zarr path or URL): adds true-colour composites to the maps.",
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
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Labelled sample (from `minecube sample`): adds error-adjusted areas with intervals.",
)
@click.option(
    "--truth",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of <site_id>/<year>.tif class rasters: the truth, instead of --labels.",
)
@click.option(
    "--sample",
    "n",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Points per map of a sample labelled from the truth: adds error-adjusted areas.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace files in --out that minecube did not write.",
)
def report(
    predictions,
    out,
    cubes,
    sites,
    labels,
    label_time_column,
    units,
    min_observed,
    reference,
    truth,
    n,
    overwrite,
):
    """Write the HTML report of a prediction store: class areas, mine expansion, transitions,
    maps, and CSV/Parquet, COG and GeoPackage exports.

    \b
    Example:
      minecube report demo-output/predictions.zarr --cubes demo-output/cubes.zarr \\
          --sites demo-world/sites.geojson --labels demo-world/labels --out my-report
    """
    pipeline.report_predictions(predictions, out, cubes=cubes, sites=sites, labels=labels,
                                label_time_column=label_time_column, units=units,
                                min_observed=min_observed, reference=reference,
                                truth=truth, sample=n, overwrite=overwrite)  # fmt: skip


if __name__ == "__main__":
    main()
