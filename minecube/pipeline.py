"""The whole job as one call: a validated configuration and :func:`run`.

A run searches a STAC API for every site, builds and stores a cube per site, takes a model (a
checkpoint, or one trained on the sites' labels), segments every cube into a prediction store
and writes the HTML report with class areas and mine expansion. The configuration is checked
as a whole before anything is searched, read or written (:func:`load_config`): every error
names the key (``segment.batch_size``), the value and what is allowed, and a misspelt key
suggests the right one. Re-running the same configuration reuses what is built: cubes append
only new periods, a trained model is kept, finished predictions are skipped.

Each step is also a function of its own — :func:`search_sites`, :func:`build_cubes`,
:func:`train_model`, :func:`segment_cubes`, :func:`write_area_tables`, :func:`write_sample`,
:func:`report_predictions` — which the ``minecube`` commands call; each logs its summary to
the ``minecube`` logger (INFO), which the commands print.

Why pydantic: it is the ecosystem's validation library (STAC's own ``stac-pydantic``, FastAPI,
stac-fastapi), gives typed, documented models and their JSON Schema
(``RunConfig.model_json_schema()``, published in the docs) from one definition.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from minecube.cluster import ClusterSettings, connect, require_reachable
from minecube.errors import MinecubeError
from minecube.stac import redact
from minecube.store import _fs, _is_url

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ConfigError",
    "CubeSettings",
    "ReportSettings",
    "RunConfig",
    "RunResult",
    "SearchSettings",
    "SegmentSettings",
    "TrainSettings",
    "build_cubes",
    "lineage",
    "load_config",
    "report_predictions",
    "run",
    "search_sites",
    "segment_cubes",
    "train_model",
    "write_area_tables",
    "write_sample",
]

log = logging.getLogger("minecube")


class ConfigError(MinecubeError, ValueError):
    """A run configuration is not valid; the message names each key, its value and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchSettings(_Section):
    """Which scenes to search for (:func:`minecube.stac.search`)."""

    catalog: str = Field(description="STAC API URL, e.g. https://earth-search.aws.element84.com/v1")
    start: dt.date = Field(description="First day, YYYY-MM-DD.")
    end: dt.date = Field(description="Last day, YYYY-MM-DD (inclusive).")
    collection: str = Field("sentinel-2-l2a", description="STAC collection id.")
    max_cloud: float | None = Field(
        None, ge=0, le=100, description="Most scene cloud cover, percent."
    )
    cover: float | None = Field(
        None, gt=0, le=1, description="Keep items covering at least this share of a site (0–1)."
    )
    one_per: Literal["date", "orbit"] | None = Field(
        None, description="Keep one item per date (or date and orbit): the one covering most."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SearchSettings:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}; swap them")
        return self


class CubeSettings(_Section):
    """How each site's cube is built (:func:`minecube.cube.build`)."""

    composite: Literal["day", "month", "quarter", "year"] = Field(
        "month", description="Period of the median composites."
    )
    resolution: float | None = Field(
        None, gt=0, description="Pixel size, metres (default: the sensor's)."
    )
    engine: Literal["auto", "stackstac", "odc-stac", "async-geotiff"] = Field(
        "auto", description="COG reader; auto: async-geotiff where installed, else stackstac."
    )
    mask: Literal["scl", "qa_pixel", "fmask", "csmask", "none"] | None = Field(
        None, description="Cloud mask (default: the sensor's)."
    )
    chunks: int = Field(512, ge=16, description="Spatial chunk size, pixels.")


class TrainSettings(_Section):
    """The model trained when no ``model`` is given (:func:`minecube.train.fit`)."""

    architecture: str = Field("fpn", description="unet, deeplabv3plus, fpn, segformer, prithvi.")
    encoder_name: str = Field("resnet18", description="Encoder of the architecture.")
    encoder_weights: str | None = Field(
        None,
        description="Pretrained encoder: csmask-l2a, imagenet (local cache) or a weights file; "
        "none: from scratch.",
    )
    bands: str = Field("rgbn", description="Band preset: rgb, rgbn, ndvi, rgb+ndvi, rgbn+ndvi.")
    epochs: int = Field(8, ge=1, description="Training epochs.")
    batch_size: int = Field(8, ge=1, description="Chips per step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate.")
    val_site: list[str] = Field([], description="Validation sites (default: one, chosen).")
    test_site: list[str] = Field([], description="Held-out test sites (default: one, chosen).")
    overwrite: bool = Field(
        False,
        description="Train again, replacing the run's model, when it was trained with other "
        "settings (else such a re-run is refused).",
    )

    @property
    def name(self) -> str:
        """The checkpoint's name in the run folder: ``<architecture>-<encoder_name>-<bands>``,
        and ``-<weights>`` for a pretrained encoder."""
        name = f"{self.architecture}-{self.encoder_name}-{self.bands.replace('+', '-')}"
        return name + (f"-{Path(self.encoder_weights).stem}" if self.encoder_weights else "")

    @model_validator(mode="after")
    def _weights_fit_the_encoder(self):
        from minecube.pretrained import encoder_for

        encoder_for(self.encoder_weights, self.encoder_name)  # the check create() makes
        return self

    @field_validator("architecture", "bands")
    @classmethod
    def _known(cls, value: str, info) -> str:
        from minecube.chips import PRESETS
        from minecube.models import ARCHITECTURES

        what, known = {
            "architecture": ("architecture", ARCHITECTURES),
            "bands": ("band preset", PRESETS),
        }[info.field_name]
        if value not in known:
            raise ValueError(f"unknown {what}; choose one of {list(known)}")
        return value


class SegmentSettings(_Section):
    """How cubes are segmented (:func:`minecube.segment.segment`)."""

    batch_size: int = Field(8, ge=1, description="Chips per forward pass.")
    overlap: int = Field(32, ge=0, description="Chip overlap, pixels.")
    tta: Literal["d4"] | None = Field(None, description="Test-time augmentation.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    chunks: int | None = Field(
        None, ge=16, description="Output block size, pixels (default: auto)."
    )
    overwrite: bool = Field(
        False, description="Replace this run's predictions made with another model or settings."
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("unknown device; use auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("overlap")
    @classmethod
    def _overlap_fits_a_chip(cls, value: int) -> int:
        from minecube.segment import _MAX_CHIP

        if 2 * value > _MAX_CHIP:
            raise ValueError(
                f"overlap is more than half of the largest chip ({_MAX_CHIP} px); use at most "
                f"{_MAX_CHIP // 2} (32–64 is usual)"
            )
        return value


class ReportSettings(_Section):
    """The HTML report (:func:`minecube.report.write_report`)."""

    units: Literal["ha", "km2", "m2"] = Field("ha", description="Area unit of tables and figures.")
    min_observed: float = Field(
        0.8, ge=0, le=1, description="Share of a site observed for a period to count in changes."
    )
    title: str = Field("minecube report", description="Title of the report page.")
    overwrite: bool = Field(
        False, description="Replace files in the report folder that minecube did not write."
    )
    sample: int = Field(
        0,
        ge=0,
        description="Points per map (site and period) of a stratified sample labelled from "
        "the truth (`truth`, else `labels`), for error-adjusted areas with 95 % intervals "
        "(0: none).",
    )
    truth: Path | None = Field(
        None,
        description="Folder of <site_id>/<year>.tif class-id rasters (0: unlabelled): the "
        "truth the report compares with and labels its sample from, pixel by pixel (default: "
        "`labels` burnt onto each grid).",
    )


_FLAT_SEARCH = ("catalog", "start", "end", "collection", "max_cloud", "cover", "one_per")


class RunConfig(_Section):
    """A whole job: sites, search, cubes, a model (given or trained), segmentation, report.

    Paths are relative to the working folder. The search settings may also be written at the
    top level (``catalog:``, ``start:``…), as ``minecube run`` files have been so far.
    """

    sites: Path = Field(description="Site table: GeoJSON, GeoPackage or CSV.")
    search: SearchSettings
    out: Path = Field(Path("run-output"), description="Folder for every output of the run.")
    stores: str | None = Field(
        None,
        description="Folder or fsspec URL (s3://bucket/run) for what the workers read and "
        "write: cubes.zarr, predictions.zarr and the trained model (default: out).",
    )
    model: str | None = Field(
        None, description="Checkpoint to segment with, a path or fsspec URL (else trained)."
    )
    labels: Path | None = Field(
        None, description="Folder of <site_id>.gpkg labels: training, and truth in the report."
    )
    label_time_column: str = Field("year", description="Label column holding the year.")
    cube: CubeSettings = CubeSettings()
    train: TrainSettings = TrainSettings()
    segment: SegmentSettings = SegmentSettings()
    report: ReportSettings = ReportSettings()
    cluster: ClusterSettings | None = Field(
        None, description="The dask cluster to run on (default: the active one, else threads)."
    )
    sensors: list[dict[str, Any]] | Path | None = Field(
        None,
        description="Sensors to register before the search: a list of sensors (the fields of "
        "minecube.sensors.Sensor) or a YAML file of them.",
    )

    @field_validator("sensors")
    @classmethod
    def _valid_sensors(cls, value: Any) -> Any:
        from minecube.sensors import Sensor

        if isinstance(value, Path):
            if not value.exists():
                raise ValueError(f"sensor file {str(value)!r} does not exist")
            return value
        if value is not None:
            sensors = [Sensor.from_dict(s) for s in value]  # each checked, none registered
            names = [s.name for s in sensors]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"sensors {twice} are defined more than once")
        return value

    @field_validator("model", "stores", mode="before")
    @classmethod
    def _path_or_url(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="before")
    @classmethod
    def _flat_search(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and any(k in data for k in _FLAT_SEARCH):
            data = dict(data)
            search = dict(data.get("search") or {})
            twice = [k for k in _FLAT_SEARCH if k in data and k in search]
            if twice:
                raise ValueError(
                    f"{twice} given both at the top level and under search:; keep one of each"
                )
            for key in _FLAT_SEARCH:
                if key in data:
                    search[key] = data.pop(key)
            data["search"] = search
        return data

    @model_validator(mode="after")
    def _model_or_labels(self) -> RunConfig:
        if self.model is None and self.labels is None:
            raise ValueError("give model: (a checkpoint to segment with) or labels: (to train one)")
        return self


def load_config(source: RunConfig | Mapping | str | os.PathLike) -> RunConfig:
    """Read and validate a run configuration, before any work.

    Parameters
    ----------
    source
        A YAML file, a mapping of the same keys, or a :class:`RunConfig`.

    Raises
    ------
    ConfigError
        Every problem at once, one line each: the key's path, the value and what is allowed;
        an unknown key with the closest allowed one.

    Examples
    --------
    >>> config = load_config({"sites": "sites.geojson", "catalog": "https://stac.example/v1",
    ...                       "start": "2022-01-01", "end": "2023-12-31", "model": "m/fpn",
    ...                       "segment": {"batch_size": 16}})
    >>> config.search.start, config.segment.batch_size, config.cube.composite
    (datetime.date(2022, 1, 1), 16, 'month')
    >>> load_config({"sites": "s.geojson", "catalog": "x", "start": "2022-01-01",
    ...              "end": "2023-12-31", "model": "m", "segment": {"batch_sise": 16}})
    Traceback (most recent call last):
    ...
    minecube.pipeline.ConfigError: the run configuration has 1 problem:
      segment.batch_sise: unknown key (value 16); did you mean 'batch_size'?
    """
    if isinstance(source, RunConfig):
        return source
    where = "the run configuration"
    if not isinstance(source, Mapping):
        import yaml

        path = Path(source)
        where = str(path)
        try:
            source = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"run configuration {where!r} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where} is not valid YAML: {e}") from None
        if not isinstance(source, Mapping):
            raise ConfigError(f"{where} must hold a mapping of settings, not {source!r}")
    source = {str(k).replace("-", "_"): v for k, v in source.items()}
    try:
        return RunConfig.model_validate(source)
    except ValidationError as e:
        lines = [_describe(error) for error in e.errors()]
        raise ConfigError(
            f"{where} has {len(lines)} problem{'s' if len(lines) > 1 else ''}:\n  "
            + "\n  ".join(lines)
        ) from None


def _describe(error: dict) -> str:
    """One line for one pydantic error: ``path: what is wrong (value …); the fix``."""
    loc = [str(p) for p in error["loc"]]  # flat search keys are already under "search"
    key = ".".join(loc) or "(top level)"
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        allowed = sorted(_fields(loc[:-1]))
        near = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"allowed: {allowed}"
        return f"{key}: unknown key (value {value!r}); {hint}"
    if error["type"] == "missing":
        inner = sorted(_fields(loc)) if loc else []
        return f"{key}: missing; it is required" + (f" (with keys {inner})" if inner else "")
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message}" + (f" (value {value!r})" if loc else "")


def _fields(loc: list[str]) -> set[str]:
    """The keys allowed at ``loc`` of a :class:`RunConfig`."""
    model: type[BaseModel] = RunConfig
    for name in loc:
        field = model.model_fields.get(name)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return set()
        model = annotation
    names = set(model.model_fields)
    return names | set(_FLAT_SEARCH) if model is RunConfig else names


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` made: where everything is, and the tables a notebook shows."""

    config: RunConfig
    cubes: Path | str
    model: Path | str
    predictions: Path | str
    report: Path
    areas: pd.DataFrame
    """Class areas per site, period and class (:func:`minecube.stats.class_areas`)."""
    expansion: pd.DataFrame
    """Mining footprint per site, first and last reliable period, growth per year."""
    run_id: str = ""
    """Stamped on every table row; ``<out>/runs/<run_id>.json`` is the run's record."""

    def __repr__(self) -> str:
        return (
            f"RunResult({len(self.expansion)} sites; cubes {self.cubes}, predictions "
            f"{self.predictions}, report {self.report})"
        )


def run(
    config: RunConfig | Mapping | str | os.PathLike, *, client=None, verbose: bool = True
) -> RunResult:
    """Run a whole job: search, cubes, a model (given or trained), segmentation, report.

    The configuration is validated first (:func:`load_config`), so a bad key fails before any
    search. Re-running reuses what is built.

    Parameters
    ----------
    config
        A YAML file, a mapping, or a :class:`RunConfig`.
    client
        A ``dask.distributed.Client`` to compute on (default: the configuration's
        ``cluster``, made for the run and closed after it; else the active scheduler, else
        threads). Workers that share no disk with this machine need ``stores`` and ``model``
        as URLs: local paths are refused before any work.
    verbose
        Log each step's summary to standard output (the ``minecube`` logger, INFO).

    Returns
    -------
    RunResult
        Paths of the stores, the model and the report, and the area tables.

    Examples
    --------
    ``result = minecube.run("run.yaml"); result.areas`` — class areas per site, period and
    class; ``result.report`` is the HTML report.
    """
    import pandas as pd

    from minecube.segment import open_predictions
    from minecube.sites import read_sites

    config = load_config(config)
    _require_inputs(config)
    if config.sensors is not None:  # before the search, which maps items to sensors
        from minecube.sensors import read_sensors

        read_sensors(config.sensors, replace=True)
    run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{os.urandom(4).hex()}"
    with contextlib.ExitStack() as stack:
        if verbose and not log.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            stack.enter_context(_logged(handler))
        out = Path(config.out)
        train = config.train
        stores = config.stores or out
        store, predictions = _under(stores, "cubes.zarr"), _under(stores, "predictions.zarr")
        model = config.model or _under(stores, "model", train.name)
        needed = {"cube store": store, "prediction store": predictions, "checkpoint": model}
        made = config.cluster if client is None else None  # a client given wins
        if made is not None:
            require_reachable(needed, settings=made)  # before a cluster is asked for
            client = stack.enter_context(connect(made))
        if client is not None:
            require_reachable(needed, settings=made, client=client)
            stack.enter_context(client.as_current())
        sites = read_sites(config.sites)
        search = config.search
        found = search_sites(sites, **search.model_dump(), out=out / "items")
        built = build_cubes(sites, found, store, quicklooks=out / "quicklook",
                            **config.cube.model_dump(exclude_none=True))  # fmt: skip
        failed = built[built.status != "ok"]
        if len(failed) == len(built):
            raise MinecubeError(
                "no site's cube could be built: "
                + "; ".join(f"{r.site_id}: {r.error}" for r in failed.itertuples())
            )
        if len(failed):  # the others go on; a re-run retries these
            log.warning(f"\n{len(failed)} sites failed and are left out: {list(failed.site_id)}")
            sites = sites[~sites.site_id.isin(failed.site_id)]
        trained = config.model is None and _needs_training(model, config)
        if trained:
            train_model(store, sites, config.labels, model, overwrite=True,
                        label_time_column=config.label_time_column,
                        **train.model_dump(exclude={"overwrite"}))  # fmt: skip
        segment = config.segment.model_dump(exclude_none=True)
        segment["overwrite"] |= trained  # a model trained anew replaces this run's predictions
        segment_cubes(store, model, predictions, sites=list(sites.site_id), **segment)
        preds = {  # exactly this run's sites and periods: the stores may hold more
            s: _periods_of(open_predictions(predictions, s), search, config.cube.composite)
            for s in sites.site_id
        }
        page = report_predictions(preds, out / "report", cubes=store, sites=sites,
                                  labels=config.labels, run_id=run_id,
                                  label_time_column=config.label_time_column,
                                  **config.report.model_dump())  # fmt: skip
        tables = {
            name: pd.read_parquet(page.parent / "tables" / f"{name}.parquet").drop(columns="run_id")
            for name in ("class_areas", "expansion_summary")
        }
        _publish(store, predictions, model, out / "catalog", config.report.overwrite)
        record = _record(run_id, config, sites, found, store, model, predictions, page)
        log.info(f"run record: {record}")
    return RunResult(config, store, model, predictions, page, tables["class_areas"],
                     tables["expansion_summary"], run_id)  # fmt: skip


def _publish(store, predictions, model, out: Path, overwrite: bool) -> Path:
    """The run's static STAC catalogue: its stores' collections and its model's MLM item."""
    from minecube.catalog import publish
    from minecube.models import _mlm_item

    item = _mlm_item(model)
    models = [item] if item is not None else []
    path = publish([store, predictions], out=out, models=models, overwrite=overwrite)
    log.info(f"STAC catalogue: {path}")
    return path


def _require_inputs(config: RunConfig) -> None:
    """Refuse, before any search or build, a ``model:``, ``labels:`` or ``report.truth:`` that
    is not there."""
    from minecube.models import _paths
    from minecube.store import _is_url

    problems = []
    if config.model is not None and not _is_url(config.model):
        missing = [p.name for p in _paths(config.model) if not p.is_file()]
        if missing:
            problems.append(
                f"model: {config.model!r} has no {' or '.join(missing)} (a checkpoint is "
                "<name>.safetensors with its <name>.json card, written by `minecube train`); "
                "give an existing checkpoint, or leave model: out to train one from labels:"
            )
    if config.labels is not None:
        labels = Path(config.labels)
        if not labels.is_dir():
            problems.append(f"labels: {str(labels)!r} is not a folder of <site_id>.gpkg files")
        elif not any(labels.glob("*.gpkg")):
            problems.append(f"labels: {str(labels)!r} holds no <site_id>.gpkg file")
    truth = config.report.truth
    if truth is not None and not Path(truth).is_dir():
        problems.append(f"report.truth: {str(truth)!r} is not a folder of <site_id>/<year>.tif")
    if problems:
        raise ConfigError("the run cannot start:\n  " + "\n  ".join(problems))


def _periods_of(pred, search: SearchSettings, composite: str):
    """The periods of ``pred`` that the search's dates cover (a store appended by earlier runs
    may hold others)."""
    import pandas as pd

    from minecube.cube import COMPOSITES

    first = pd.Timestamp(search.start).to_period(COMPOSITES[composite]).start_time
    return pred.sel(time=slice(first, pd.Timestamp(search.end)))


def _needs_training(model: str | os.PathLike, config: RunConfig) -> bool:
    """Whether the run's model must be trained: none yet, or (with ``train.overwrite``) one
    trained with other settings; a :class:`ConfigError` names the settings that differ."""
    if not _exists(f"{model}.json"):
        return True
    fs, inner = _fs(f"{model}.json")
    with fs.open(inner, "r") as f:
        recorded = json.load(f).get("training", {}).get("settings")
    wanted = {**config.train.model_dump(exclude={"overwrite"}),
              "label_time_column": config.label_time_column}  # fmt: skip
    shown = redact(os.fspath(model))
    if recorded is None:
        log.warning(f"\nmodel: reusing {shown}; its training settings were not recorded")
        return False
    differ = {k: (recorded.get(k), v) for k, v in wanted.items() if recorded.get(k) != v}
    if not differ:
        log.info(f"\nmodel: reusing {shown} (trained with these settings)")
        return False
    named = "; ".join(
        f"{'train.' * (k in TrainSettings.model_fields)}{k}: {old!r} then, {new!r} now"
        for k, (old, new) in differ.items()
    )
    if config.train.overwrite:
        log.info(f"\nmodel: training again ({named})")
        return True
    raise ConfigError(
        f"the run's model {shown} was trained with other settings ({named}); set "
        "train.overwrite: true to train again and replace it (and this run's predictions), "
        "put the settings back, or use another stores/out folder"
    )


def _under(base: str | os.PathLike, *parts: str) -> Path | str:
    """``base/part/…``: a path, or a URL string for an fsspec URL."""
    if _is_url(base):
        return "/".join([os.fspath(base).rstrip("/"), *parts])
    return Path(base).joinpath(*parts)


def _exists(path: str | os.PathLike) -> bool:
    fs, inner = _fs(path)
    return fs.isfile(inner)


@contextlib.contextmanager
def _logged(handler: logging.Handler):
    """Send the ``minecube`` logger's INFO lines (each step's summary) to ``handler`` for the
    duration of a ``with`` block."""
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _sites(sites):
    """A site table: read and validated from a file, or given."""
    from minecube.sites import read_sites

    return read_sites(sites) if isinstance(sites, str | os.PathLike) else sites


def search_sites(
    sites: pd.DataFrame | str | os.PathLike,
    *,
    catalog: str,
    start: str | dt.date,
    end: str | dt.date,
    collection: str = "sentinel-2-l2a",
    max_cloud: float | None = None,
    cover: float | None = None,
    one_per: str | None = None,
    out: str | os.PathLike | None = None,
) -> dict[str, list]:
    """Search a STAC API for every site's scenes, one search per group of nearby sites
    (:func:`minecube.stac.search_many`); a site without items is logged, not an error.

    Parameters
    ----------
    sites
        The site table, or its file.
    catalog, start, end, collection, max_cloud, cover, one_per
        As for :func:`minecube.stac.search`.
    out
        Folder to keep each site's items in, as ``<site_id>.json`` (an ItemCollection that
        ``build_cubes`` and ``minecube cube build --items`` read back).

    Returns
    -------
    dict of str to list of pystac.Item
        Each site's items, sorted by time.

    Examples
    --------
    ``search_sites("sites.geojson", catalog="https://earth-search.aws.element84.com/v1",
    start="2023-01-01", end="2023-12-31", max_cloud=40, out="items")``
    """
    import statistics

    from minecube.stac import search_many

    sites = _sites(sites)
    found = search_many(sites, start, end, catalog=catalog, max_cloud=max_cloud,
                        collection=collection, cover=cover, one_per=one_per)  # fmt: skip
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    for site in sites.itertuples():
        items = found[site.site_id]
        if out is not None:
            frozen = redact(items.to_dict(transform_hrefs=False))  # no token kept
            (Path(out) / f"{site.site_id}.json").write_text(json.dumps(frozen))
        clouds = [i.properties.get("eo:cloud_cover", float("nan")) for i in items]
        log.info(
            f"{site.site_id} ({site.commodity}, {site.climate}): {len(items)} items, median "
            f"cloud cover {statistics.median(clouds) if clouds else float('nan'):.1f} %"
        )
    empty = [s for s, items in found.items() if not items]
    log.info(
        f"\n{sum(map(len, found.values()))} items found for {len(found)} sites in {start}/{end}"
        + (f"; items: {out}/<site_id>.json" if out is not None else "")
        + (f"; no items for {empty}" if empty else "")
    )
    return {s: list(items) for s, items in found.items()}


def _read_items(source: Path, site_ids, sites=None) -> dict[str, list]:
    """Each site's items: ``<site_id>.json`` of a folder :func:`search_sites` wrote, or, from
    one item collection (``minecube items --out items.json``), the items over each site, one
    per date (the one covering most of it: a patch's own scene, not its neighbours')."""
    import pystac

    from minecube.stac import _coverage, select_items

    if Path(source).is_file():
        if sites is None:
            raise ValueError("items from one file need the site table to place them")
        items = list(pystac.ItemCollection.from_file(str(source)))
        geometries = dict(zip(sites.site_id, sites.geometry, strict=True))
        found = {}
        for s in site_ids:
            over = [i for i in items if _coverage(i, geometries[s]) > 0]
            found[s] = select_items(over, geometries[s], one_per="date")
        empty = [s for s, v in found.items() if not v]
        if empty:
            raise FileNotFoundError(f"no item of {source} covers the sites {empty}")
        return found
    found = {}
    for site in site_ids:
        path = Path(source) / f"{site}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no items for {site!r} at {path}; search first (`minecube search`)"
            )
        found[site] = list(pystac.ItemCollection.from_file(str(path)))
    return found


def _split(sites, val: Sequence[str] = (), test: Sequence[str] = ()):
    """The training split: the given validation and test sites (the rest train), else one of
    each chosen from the table."""
    from minecube.chips import SiteSplit, split_sites

    val, test = tuple(val), tuple(test)
    if val or test:
        unknown = sorted({*val, *test} - set(sites.site_id))
        if unknown:
            raise ConfigError(f"validation or test sites {unknown} are not in the site table")
        return SiteSplit(tuple(s for s in sites.site_id if s not in {*val, *test}), val, test)
    return split_sites(sites, test=1 if len(sites) > 2 else 0, val=1 if len(sites) > 1 else 0)


def _truth(labels: Path, grids: Mapping, time_column: str = "year") -> dict:
    """Each site's ``<labels>/<site_id>.gpkg`` burnt onto its grid (a cube or a prediction)."""
    import warnings

    from minecube.labels import MissingLabelsWarning, rasterize

    labels = Path(labels)
    missing = [s for s in grids if not (labels / f"{s}.gpkg").is_file()]
    if missing:
        raise FileNotFoundError(
            f"no label file for sites {missing} in {labels} (expected <site_id>.gpkg)"
        )
    with warnings.catch_warnings():  # periods after the last labelled year stay unlabelled
        warnings.simplefilter("ignore", MissingLabelsWarning)
        return {
            s: rasterize(labels / f"{s}.gpkg", g, time_column=time_column) for s, g in grids.items()
        }


def _truth_rasters(folder: Path, grids: Mapping) -> dict:
    """Each site's ``<folder>/<site_id>/<year>.tif`` on its grid, one layer per period (that
    of the period's year); pixels outside a raster are unlabelled (0)."""
    import rioxarray
    import xarray as xr
    from rasterio.enums import Resampling

    from minecube.classes import ClassSchema

    out = {}
    for site, grid in grids.items():
        layers = []
        for when in grid.time.values:
            path = folder / site / f"{str(when)[:4]}.tif"
            if not path.is_file():
                raise FileNotFoundError(
                    f"no truth raster {path} for site {site!r}, period {str(when)[:10]} "
                    "(expected <truth>/<site_id>/<year>.tif)"
                )
            raster = rioxarray.open_rasterio(path).squeeze("band", drop=True)
            layers.append(raster.rio.reproject_match(grid, resampling=Resampling.nearest,
                                                     nodata=0).astype("uint8"))  # fmt: skip
        truth = xr.concat(layers, "time").assign_coords(time=grid.time.values)
        schema = ClassSchema.from_cf_attrs(grid.attrs).cf_attrs()  # the predictions' classes
        out[site] = truth.assign_attrs(schema).rio.write_crs(grid.rio.crs).rio.write_nodata(0)
    return out


def build_cubes(
    sites: pd.DataFrame | str | os.PathLike,
    items: Mapping[str, Sequence] | str | os.PathLike,
    store: str | os.PathLike,
    *,
    composite: str = "month",
    quicklooks: str | os.PathLike | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Build and store every site's cube, many at once, appending only periods not yet stored.

    Parameters
    ----------
    sites
        The site table, or its file.
    items
        Each site's items by site id, the folder :func:`search_sites` kept them in, or one item
        collection file for all sites (:func:`minecube.stac.items_from_files`): each site gets
        the items over it, one per date (the one covering most of it).
    store
        The cube Zarr store (path or URL); a store minecube may not write is refused first.
    composite
        Period of the median composites: ``day``, ``month``, ``quarter`` or ``year``.
    quicklooks
        Folder for a PNG quicklook per site.
    **kwargs
        Passed to :func:`minecube.cube.build` (``bands``, ``resolution``, ``engine``,
        ``mask``, ``chunks``).

    Returns
    -------
    pandas.DataFrame
        Per site (:func:`minecube.cube.build_many`): ``status``, ``periods`` stored,
        ``written`` by this call, ``degraded``, ``skipped_items``, ``seconds``, ``error``, and
        ``valid_pct`` and ``bytes`` on disk (local stores). A site that fails does not stop
        the others.

    Examples
    --------
    ``build_cubes("sites.geojson", "items", "cubes.zarr", composite="quarter")``
    """
    from minecube.cube import build_many, open_cube
    from minecube.plot import quicklook

    sites = _sites(sites)
    if not isinstance(items, Mapping):
        items = _read_items(Path(items), sites.site_id, sites)
    log.info(f"\nbuilding {composite} cubes in {store}")
    table = build_many(sites, items, store, composite=composite, **kwargs)
    local = not _is_url(store)
    table["bytes"] = [
        sum(p.stat().st_size for p in (Path(store) / s).rglob("*") if p.is_file()) if local else 0
        for s in table.site_id
    ]
    if quicklooks is not None:
        quicklooks = Path(quicklooks)
        quicklooks.mkdir(parents=True, exist_ok=True)
    table["valid_pct"] = float("nan")
    for row in table[table.status == "ok"].itertuples():
        stored = open_cube(store, row.site_id)
        table.loc[row.Index, "valid_pct"] = 100 * float((stored.valid_count > 0).mean())
        if quicklooks is not None:
            quicklook(stored, quicklooks / f"{row.site_id}.png")
    log.info(
        f"\n{'site':20s} {'periods':>8s} {'new':>4s} {'valid':>7s} {'on disk':>9s} {'time':>7s}"
    )
    for r in table.itertuples():
        if r.status != "ok":
            log.info(f"{r.site_id:20s} failed: {r.error}")
            continue
        log.info(
            f"{r.site_id:20s} {r.periods:8d} {r.written:4d} {r.valid_pct:6.1f}% "
            f"{r.bytes / 1e6:7.1f} MB {r.seconds:6.1f} s"
        )
    if quicklooks is not None:
        log.info(f"\nquicklooks: {quicklooks}/<site>.png")
    return table


def train_model(
    store: str | os.PathLike,
    sites: pd.DataFrame | str | os.PathLike,
    labels: str | os.PathLike,
    path: str | os.PathLike,
    *,
    val_site: Sequence[str] = (),
    test_site: Sequence[str] = (),
    architecture: str = "fpn",
    encoder_name: str = "resnet18",
    encoder_weights: str | None = None,
    bands: str = "rgbn",
    epochs: int = 8,
    batch_size: int = 8,
    lr: float = 2e-3,
    label_time_column: str = "year",
    overwrite: bool = False,
) -> Path:
    """Train a model on chips of the stored cubes, score it on held-out sites and save it.

    Parameters
    ----------
    store
        The cube Zarr store.
    sites
        The site table, or its file.
    labels
        Folder of ``<site_id>.gpkg`` label polygons.
    path
        Checkpoint path: writes ``<path>.safetensors`` and its card ``<path>.json``.
    val_site, test_site
        Validation (early stopping) and held-out test sites; default: one of each, across
        climates; the rest train.
    architecture, encoder_name, encoder_weights, bands, epochs, batch_size, lr
        As for :func:`minecube.models.create` and :func:`minecube.train.fit`.
    label_time_column
        Label column holding the year each polygon describes.
    overwrite
        Replace a checkpoint already at ``path``; without it one is refused before training.

    Returns
    -------
    pathlib.Path
        ``path``; the card records the test sites' scores and these settings
        (``training["settings"]``, compared by :func:`run` before it reuses the model).

    Examples
    --------
    ``train_model("cubes.zarr", "sites.geojson", "labels", "model/fpn", test_site=["hunter-coal"])``
    """
    from minecube.chips import ChipDataset
    from minecube.cube import open_cube
    from minecube.evaluate import evaluate
    from minecube.models import check_writable, create, save
    from minecube.train import fit

    if labels is None:
        raise ConfigError("training needs labels: a folder of <site_id>.gpkg label polygons")
    settings = {
        "architecture": architecture, "encoder_name": encoder_name,
        "encoder_weights": encoder_weights, "bands": bands, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "val_site": list(val_site),
        "test_site": list(test_site), "label_time_column": label_time_column,
    }  # fmt: skip
    sites = _sites(sites)
    split = _split(sites, val_site, test_site)
    check_writable(path)  # before training, not after
    if not overwrite and (_exists(f"{path}.json") or _exists(f"{path}.safetensors")):
        raise ConfigError(
            f"a checkpoint already exists at {redact(os.fspath(path))!r}; choose another path "
            "(--out) or pass overwrite=True (minecube train --overwrite) to replace it"
        )
    ids = [*split.train, *split.val, *split.test]
    cubes = {s: open_cube(store, s).load() for s in ids}
    truth = _truth(labels, cubes, label_time_column)

    def part(keys):
        return {s: cubes[s] for s in keys}, {s: truth[s] for s in keys}

    log.info(
        f"\ntraining {architecture}-{encoder_name} on {bands}, {epochs} epochs: train "
        f"{', '.join(split.train)}; validate {', '.join(split.val) or '—'}; test "
        f"{', '.join(split.test) or '—'}"
    )
    chips = {"input_dims": {"y": 128, "x": 128}, "input_overlap": {"y": 64, "x": 64}}
    train = ChipDataset(*part(split.train), bands=bands, augment=True, **chips)
    val = None
    if split.val:
        val = ChipDataset(*part(split.val), bands=bands, norm=train.norm, **chips)
    model = create(
        architecture, encoder_name=encoder_name, in_channels=len(train.bands),
        classes=len(train.schema), encoder_weights=encoder_weights, bands=list(train.bands),
    )  # fmt: skip
    if model.pretrained is not None:
        log.info(f"pretrained encoder: {model.pretrained}")
    model = fit(model, train, val, epochs=epochs, batch_size=batch_size, lr=lr,
                loss="ce+dice", class_weights="balanced", patience=epochs)  # fmt: skip
    if split.test:
        result = evaluate(model, *part(split.test), sites, train_labels=part(split.train)[1])
        model.card.metrics["test"] = result.summary.to_dict("records")
        for row in result.summary.itertuples():
            if row.level in ("all", "site_id"):
                log.info(
                    f"  held out {row.group:18s} mIoU {row.miou:.3f}, overall accuracy "
                    f"{row.overall_accuracy:.3f} (all {result.baselines['majority']}: mIoU "
                    f"{row.majority_miou:.3f}, accuracy {row.majority_accuracy:.3f})"
                )
    model.card.training["settings"] = settings  # what run() compares before reusing it
    # the cube store it learnt from (its STAC items are the model's training data), relative
    # to the card as every path a run records, so that the outputs folder can move
    model.card.training["cubes"] = (
        store
        if _is_url(store)
        else os.path.relpath(Path(store).absolute(), Path(path).absolute().parent)
    )
    save(model, path)
    log.info(f"model: {path}.safetensors + .json (card) + .mlm.json (STAC MLM item)")
    return Path(path)


def segment_cubes(
    store: str | os.PathLike,
    model: str | os.PathLike,
    predictions: str | os.PathLike,
    *,
    sites: Sequence[str] | None = None,
    overwrite: bool = False,
    **kwargs,
) -> pd.DataFrame:
    """Segment every site's cube into the prediction store; finished sites are reused.

    Parameters
    ----------
    store
        The cube Zarr store.
    model
        A checkpoint (``<model>.safetensors`` and its ``.json`` card).
    predictions
        The prediction Zarr store.
    sites
        Which site ids (default: every cube in the store).
    overwrite
        Replace predictions minecube wrote with another model or settings.
    **kwargs
        Passed to :func:`minecube.segment.segment_to_zarr` (``batch_size``, ``overlap``,
        ``tta``, ``device``, ``chunks``).

    Returns
    -------
    pandas.DataFrame
        Per site: ``periods``, ``observed_pct`` and ``seconds``.

    Examples
    --------
    ``segment_cubes("cubes.zarr", "model/fpn", "predictions.zarr", batch_size=16)``
    """
    import pandas as pd

    from minecube.cube import open_cube
    from minecube.segment import segment_to_zarr

    if sites is None:
        import zarr

        sites = sorted(k for k, _ in zarr.open_group(store, mode="r").groups())
    log.info(f"\nsegmenting {len(sites)} cubes into {predictions}")
    rows = []
    for site in sites:
        t0 = time.perf_counter()
        pred = segment_to_zarr(
            open_cube(store, site), model, predictions, group=site, overwrite=overwrite, **kwargs
        )
        observed = 100 * float((pred != pred.rio.nodata).mean())
        rows.append({"site_id": site, "periods": pred.sizes["time"], "observed_pct": observed,
                     "seconds": time.perf_counter() - t0})  # fmt: skip
    log.info(f"\n{'site':20s} {'periods':>8s} {'observed':>9s} {'time':>7s}")
    for r in rows:
        log.info(
            f"{r['site_id']:20s} {r['periods']:8d} {r['observed_pct']:8.1f}% {r['seconds']:6.1f} s"
        )
    return pd.DataFrame(rows)


def write_area_tables(
    predictions: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sites: pd.DataFrame | str | os.PathLike | None = None,
    reference: pd.DataFrame | str | os.PathLike | None = None,
    units: str = "ha",
    min_observed: float = 0.8,
    overwrite: bool = False,
) -> dict[str, pd.DataFrame]:
    """Class areas, mine expansion and (with ``sites``) their summaries by commodity and
    climate, of every prediction in a store, as CSV and Parquet in ``out``; with a labelled
    ``reference`` sample (:func:`write_sample`), the error-adjusted areas with their 95 %
    intervals too (``adjusted_areas``, :func:`minecube.stats.adjusted_areas`). Files in
    ``out`` that minecube did not write are refused unless ``overwrite``
    (:mod:`minecube.outputs`).

    Returns the tables (:func:`minecube.report.area_tables`) and logs each site's footprint,
    its growth and trend, and the mapped against the adjusted mining area.

    Examples
    --------
    ``write_area_tables("predictions.zarr", "tables", sites="sites.geojson", units="km2")``
    """
    import pandas as pd

    from minecube.outputs import staged
    from minecube.report import area_tables, open_all_predictions, write_tables
    from minecube.stats import _adjusted_tables, _unit_label

    preds = open_all_predictions(predictions)
    sites = _sites(sites) if sites is not None else None
    tables = area_tables(preds, sites=sites, units=units, min_observed=min_observed)
    if reference is not None:
        labelled = _read_sample(reference)
        tables |= _adjusted_tables(preds, labelled, units=units)
    with staged(out, overwrite=overwrite, prune=True) as tmp:
        write_tables(tables, tmp)
    u = _unit_label(units)
    footprint = f"footprint ({u})"
    log.info(
        f"{'site':20s} {'first':>10s} {'last':>10s} {footprint:>22s} {'growth':>9s} "
        f"{'trend (95 % interval)':>26s}"
    )
    for row in tables["expansion_summary"].itertuples():
        if row.reliable_periods < 2:
            log.info(f"{row.site_id:20s} fewer than two reliable periods")
            continue
        a0, a1 = getattr(row, f"first_{units}"), getattr(row, f"last_{units}")
        trend = getattr(row, f"trend_{units}_per_year")
        low, high = (getattr(row, f"trend_{e}_{units}_per_year") for e in ("low", "high"))
        shown = "—" if trend != trend else f"{trend:.1f} ({low:.1f} to {high:.1f}) {u}/yr"
        log.info(
            f"{row.site_id:20s} {row.first:%Y-%m-%d} {row.last:%Y-%m-%d} "
            f"{a0:10.1f} → {a1:9.1f} {row.growth_pct_per_year:6.1f} %/yr {shown:>26s}"
        )
    if "adjusted_mining" in tables:
        log.info(f"\nmining area, mapped and error-adjusted (95 % interval), {u}")
        for row in tables["adjusted_mining"].itertuples():
            mapped, area = getattr(row, f"mapped_{units}"), getattr(row, f"adjusted_{units}")
            low, high = getattr(row, f"ci_low_{units}"), getattr(row, f"ci_high_{units}")
            log.info(
                f"{row.site_id:20s} {pd.Timestamp(row.time):%Y-%m-%d} {mapped:10.1f} "
                f"{area:10.1f} ({low:.1f} to {high:.1f})"
            )
    log.info(f"\ntables: {out}/ ({', '.join(tables)}; .csv and .parquet)")
    return tables


def _read_sample(reference):
    """A labelled sample: a (Geo)DataFrame, or the GeoPackage or CSV :func:`write_sample` wrote."""
    import pandas as pd

    if isinstance(reference, pd.DataFrame):
        return reference
    path = Path(reference)
    if path.suffix == ".csv":
        table = pd.read_csv(path, dtype={"site_id": str, "reference": object})
    else:
        import geopandas as gpd

        table = gpd.read_file(path)
    for column in ("time0", "time"):
        if column in table:
            table[column] = pd.to_datetime(table[column])
    return table


def _refuse_labelled(path: Path) -> None:
    """A :class:`ConfigError` if ``path`` is a sample with labels in its ``reference`` column."""
    if not path.exists():
        return
    try:
        table = _read_sample(path)
    except Exception:  # not a sample: the folder record decides (write_sample's overwrite)
        return
    if "reference" in table and (labelled := int(table["reference"].notna().sum())):
        raise ConfigError(
            f"{str(path)!r} is a sample with {labelled} labelled points; it is never replaced. "
            "Write the new sample elsewhere (--out), or move this one first"
        )


def write_sample(
    predictions: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int,
    allocation: str = "proportional",
    min_per_stratum: int = 0,
    seed: int = 0,
    periods: tuple[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Draw a stratified random sample of every prediction in a store
    (:func:`minecube.stats.sample`) and write it to label: a GeoPackage (``.gpkg``, for QGIS)
    or CSV. Fill its ``reference`` column, then pass it to :func:`write_area_tables`. With
    ``periods=(first, last)`` the strata are the mining change between them.

    A sample whose ``reference`` column holds labels is never replaced; another file there
    that minecube did not write only with ``overwrite`` (:mod:`minecube.outputs`).

    Examples
    --------
    ``write_sample("predictions.zarr", "sample.gpkg", n=300, min_per_stratum=50)``
    """
    from minecube.outputs import staged
    from minecube.report import open_all_predictions
    from minecube.stats import sample

    path = Path(out)
    _refuse_labelled(path)  # before the draw
    points = sample(open_all_predictions(predictions), n=n, allocation=allocation,
                    min_per_stratum=min_per_stratum, seed=seed, periods=periods,
                    strata="change" if periods else "classes")  # fmt: skip
    with staged(path.parent, overwrite=overwrite) as tmp:  # whole or absent
        if path.suffix == ".csv":
            points.drop(columns="geometry").to_csv(tmp / path.name, index=False)
        else:
            points.to_file(tmp / path.name, driver="GPKG", layer="sample")
    counts = points.groupby("map_class").size()
    log.info(
        f"{len(points)} points over {points.groupby(['site_id', 'time']).ngroups} maps "
        f"({', '.join(f'{c} {k}' for c, k in counts.items())}): {path}; label its 'reference' "
        "column with the true class of each point"
    )
    return path


def report_predictions(
    predictions: str | os.PathLike | Mapping,
    out: str | os.PathLike,
    *,
    cubes: str | os.PathLike | None = None,
    sites: pd.DataFrame | str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    label_time_column: str = "year",
    truth: str | os.PathLike | None = None,
    **options,
) -> Path:
    """Write the HTML report of predictions (:func:`minecube.report.write_report`), with the
    areas against truth when ``labels`` are given, and log the mining footprint against truth.

    Parameters
    ----------
    predictions
        A prediction Zarr store (every complete site in it), or predictions by site id.
    out
        The report's folder.
    cubes, sites
        As for :func:`~minecube.report.write_report`.
    labels
        Folder of ``<site_id>.gpkg`` label polygons: adds predicted against true areas.
    label_time_column
        Label column holding the year each polygon describes.
    truth
        Folder of ``<site_id>/<year>.tif`` class-id rasters (0: unlabelled), read instead of
        ``labels`` as the truth: the areas are compared with it and the sample labelled from
        it, pixel by pixel (as a careful interpreter would label each point).
    **options
        Passed to :func:`~minecube.report.write_report` (``units``, ``min_observed``,
        ``title``, ``run_id``); ``reference=`` a labelled sample (or its file), or
        ``sample=n`` to draw ``n`` points per map (:func:`minecube.stats.sample`) labelled
        from ``labels``, adds the error-adjusted areas with their 95 % intervals.

    Returns
    -------
    pathlib.Path
        The report's ``index.html``.

    Examples
    --------
    ``report_predictions("predictions.zarr", "report", cubes="cubes.zarr", labels="labels")``
    """
    import pandas as pd

    from minecube.report import open_all_predictions, write_report
    from minecube.stats import _unit_label

    preds = predictions if isinstance(predictions, Mapping) else open_all_predictions(predictions)
    if truth is not None:
        truth = _truth_rasters(Path(truth), preds)
    elif labels is not None:
        truth = _truth(labels, preds, label_time_column)
    folder = Path(out)
    log.info(f"\nwriting the report to {folder}")
    n = options.pop("sample", 0)
    reference = options.pop("reference", None)
    if reference is not None:  # a sample labelled by hand
        reference = _read_sample(reference)
    elif n and truth is not None:  # a sample of each map, labelled from the truth
        from minecube.stats import reference_from, sample

        points = sample(preds, n=n, min_per_stratum=min(50, n // 10), seed=0)
        reference = reference_from(points, truth)
    page = write_report(preds, folder, cubes=cubes, sites=sites, truth=truth,
                        reference=reference, **options)  # fmt: skip
    units = options.get("units", "ha")
    if truth is not None:
        series = pd.read_csv(folder / "tables/mining_vs_truth.csv", dtype={"time": str})
        adjusted = {}
        if reference is not None:
            table = pd.read_csv(folder / "tables/adjusted_mining.csv", dtype={"time": str})
            adjusted = {(r.site_id, r.time[:10]): r for r in table.itertuples()}
        log.info(
            f"\nmining footprint against truth, {_unit_label(units)} (over pixels observed "
            "and labelled)" + ("; error-adjusted from a labelled sample" if adjusted else "")
        )
        header = (
            f"{'site':20s} {'period':>10s} {'compared':>9s} {'predicted':>10s} "
            f"{'truth':>9s} {'error':>8s}"
        )
        log.info(header + (f" {'adjusted':>10s} {'95 % interval':>15s}" if adjusted else ""))
        for row in series.itertuples():
            error = "—" if row.error_pct != row.error_pct else f"{row.error_pct:.1f}%"
            line = (
                f"{row.site_id:20s} {row.time:>10s} {row.compared_pct:8.1f}% "
                f"{getattr(row, f'predicted_{units}'):10.1f} "
                f"{getattr(row, f'truth_{units}'):9.1f} {error:>8s}"
            )
            estimate = adjusted.get((row.site_id, row.time[:10]))
            if estimate is not None:
                low, high = (getattr(estimate, f"ci_{e}_{units}") for e in ("low", "high"))
                line += f" {getattr(estimate, f'adjusted_{units}'):10.1f} {low:7.1f}–{high:.1f}"
            log.info(line)
        if adjusted:
            log.info(_held_line(series, adjusted, units, options.get("min_observed", 0.8)))
    log.info(f"\nreport: {page.resolve()}")
    return page


def _held_line(series, adjusted: dict, units: str, min_observed: float) -> str:
    """How many of the printed 95 % intervals hold the truth, and the median relative error of
    the mapped and the adjusted footprint, over the periods compared on at least
    ``min_observed`` of their pixels (and, for the intervals, over all)."""
    import numpy as np

    held, kept, mapped_error, adjusted_error = [], [], [], []
    for row in series.itertuples():
        estimate = adjusted.get((row.site_id, row.time[:10]))
        if estimate is None:
            continue
        truth = getattr(row, f"truth_{units}")
        low, high = (getattr(estimate, f"ci_{e}_{units}") for e in ("low", "high"))
        held.append(low <= truth <= high)
        kept.append(row.compared_pct >= 100 * min_observed)
        if kept[-1] and truth > 0:
            mapped_error.append(abs(getattr(row, f"predicted_{units}") / truth - 1))
            adjusted_error.append(abs(getattr(estimate, f"adjusted_{units}") / truth - 1))
    inside = sum(h for h, k in zip(held, kept, strict=True) if k)
    errors = (
        f"; median error against the truth: mapped {np.median(mapped_error):.1%}, adjusted "
        f"{np.median(adjusted_error):.1%}" if mapped_error else ""
    )  # fmt: skip
    return (
        f"95 % intervals holding the truth: {inside} of {sum(kept)} periods compared over "
        f"{min_observed:.0%} or more of their pixels ({sum(held)} of {len(held)} in all){errors}"
    )


def _sha256(path: str | os.PathLike) -> str:
    import hashlib

    import fsspec

    digest = hashlib.sha256()
    with fsspec.open(os.fspath(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record(run_id, config: RunConfig, sites, found, store, model, predictions, page) -> Path:
    """Write the run's record, ``<out>/runs/<run_id>.json``: what every number came from —
    the configuration, versions, the exact site table, the items, each cube period's chunk
    record, the model's checksums and each prediction's fingerprint. Paths are relative to
    the run folder, so the record stays true when the folder moves."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    from minecube import __version__
    from minecube.store import read_manifest

    out = Path(config.out)
    folder = out / "runs"
    folder.mkdir(parents=True, exist_ok=True)

    def rel(path) -> str:
        if _is_url(path):  # object storage: the URL itself
            return os.fspath(path)
        return os.path.relpath(Path(path).absolute(), out.absolute())

    table = out / "runs" / f"{run_id}-sites.geojson"
    sites.to_file(table, driver="GeoJSON")  # the exact table of this run
    versions = {}
    for name in ("xarray", "dask", "zarr", "stackstac", "odc-stac", "async-geotiff", "obstore",
                 "pystac-client", "torch", "segmentation-models-pytorch"):  # fmt: skip
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    settings = redact(config.model_dump(mode="json"))  # no token of a URL setting
    for key in ("sites", "out", "model", "labels"):
        if settings.get(key) is not None:
            settings[key] = rel(settings[key]) if key != "out" else "."
    cubes, preds = {}, {}
    for site in sites.site_id:
        units = (read_manifest(store, site) or {}).get("units", {})
        cubes[site] = {
            period: {
                "status": unit.get("status"),
                "chunks_sha256": hashlib.sha256(
                    json.dumps(unit.get("chunks", {}), sort_keys=True).encode()
                ).hexdigest(),
                **({"skipped": unit["skipped"]} if "skipped" in unit else {}),
            }
            for period, unit in sorted(units.items())
        }
        preds[site] = (read_manifest(predictions, site) or {}).get("fingerprint")
    weights = f"{model}.safetensors"
    record = {
        "run_id": run_id,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "minecube": __version__,
        "versions": versions,
        "config": settings,
        "sites": {"file": rel(table), "sha256": _sha256(table)},
        "items": {
            s: {"file": rel(out / "items" / f"{s}.json"), "ids": [i.id for i in found[s]]}
            for s in sites.site_id
        },
        "cubes": {"store": rel(store), "periods": cubes},
        "model": {
            "file": rel(weights),
            "sha256": _sha256(weights),
            "card_sha256": _sha256(f"{model}.json"),
        },
        "predictions": {"store": rel(predictions), "fingerprints": preds},
        "report": rel(page),
    }
    path = folder / f"{run_id}.json"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=1, default=str))
    os.replace(partial, path)  # whole or absent
    return path


def lineage(table: pd.DataFrame | str | os.PathLike, *, row: int = 0,
            run: str | os.PathLike | None = None) -> dict:  # fmt: skip
    """Walk one row of a run's table back to the STAC items, cube period, model and
    prediction behind it.

    Parameters
    ----------
    table
        A table written by :func:`run` (``report/tables/*.csv`` or ``.parquet``), or one read
        into a DataFrame (then give ``run``).
    row
        Which row (0-based).
    run
        The run folder (``out``) or the run's record (``runs/<run_id>.json``); default: found
        above the table's file.

    Returns
    -------
    dict
        ``run_id``, ``site_id``, ``period`` (first and last day), ``items`` (id, time and
        asset hrefs of each item in the period), ``cube_period`` (its status and chunk
        record), ``model`` (file and sha256), ``prediction`` (fingerprint) and ``record``
        (path of the run's record).

    Examples
    --------
    ``lineage("run-output/report/tables/class_areas.csv", row=3)["items"]`` — the scenes
    behind the fourth row.
    """
    import pandas as pd
    import pystac

    from minecube.cube import COMPOSITES

    path = None
    if not isinstance(table, pd.DataFrame):
        path = Path(table)
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if "run_id" not in table.columns:
        raise ConfigError("the table has no run_id column: it was not written by minecube.run")
    if not 0 <= row < len(table):
        raise ConfigError(f"row {row} is outside the table's {len(table)} rows")
    entry = table.iloc[row]
    run_id = str(entry["run_id"])
    record_path = _find_record(run_id, path, run)
    record = json.loads(record_path.read_text())
    out = record_path.parent.parent
    site = str(entry["site_id"])
    found = {"run_id": run_id, "site_id": site, "record": str(record_path), "row": entry.to_dict()}
    found["model"] = record["model"]
    found["prediction"] = record["predictions"]["fingerprints"].get(site)
    items = pystac.ItemCollection.from_file(str(out / record["items"][site]["file"]))
    when = None
    for column in ("time", "last", "first"):
        if column in entry and pd.notna(entry[column]):
            when = pd.Timestamp(entry[column])
            break
    chosen = list(items)
    if when is not None:
        period = when.to_period(COMPOSITES[record["config"]["cube"]["composite"]])
        start, end = period.start_time, period.end_time
        found["period"] = [str(start.date()), str(end.date())]
        found["cube_period"] = record["cubes"]["periods"][site].get(str(start.date()))
        chosen = [i for i in items if start <= pd.Timestamp(i.datetime).tz_localize(None) <= end]
    found["items"] = [
        {
            "id": i.id,
            "datetime": i.datetime.isoformat() if i.datetime else None,
            "assets": {k: redact(a.href) for k, a in i.assets.items()},
        }
        for i in chosen
    ]
    return found


def _find_record(run_id: str, table: Path | None, run: str | os.PathLike | None) -> Path:
    """The record of ``run_id``: from ``run`` (a record or a run folder), else above ``table``."""
    if run is not None:
        run = Path(run)
        candidates = [run] if run.suffix == ".json" else [run / "runs" / f"{run_id}.json"]
    elif table is not None:
        candidates = [p / "runs" / f"{run_id}.json" for p in table.absolute().parents]
    else:
        raise ConfigError("give run= (the run folder) for a table read into a DataFrame")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no record of run {run_id!r} (looked for {[str(c) for c in candidates][:3]}); "
        "pass run= the run's folder"
    )
