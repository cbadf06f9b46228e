"""minecube.run: one validated configuration, the whole job from Python, the CLI as its face."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from minecube.cli import main
from minecube.pipeline import ConfigError, RunConfig, lineage, load_config, run

# nothing listens there and the site table does not exist: an error about either would mean
# that work started before the configuration was checked
GOOD = {
    "sites": "no-such-sites.geojson",
    "catalog": "http://127.0.0.1:9/stac",
    "start": "2022-01-01",
    "end": "2023-12-31",
    "model": "models/fpn",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_cloud": "sixty"}, r"search\.max_cloud: Input should be a valid number.*'sixty'"),
        ({"max_cloud": 140}, r"search\.max_cloud: Input should be less than or equal to 100"),
        ({"cube": {"colour": "red"}}, r"cube\.colour: unknown key \(value 'red'\); allowed"),
        ({"segment": {"chunk": 256}}, r"segment\.chunk: unknown key .*did you mean 'chunks'\?"),
        ({"segment": {"batch_size": 0}}, r"segment\.batch_size: .*greater than or equal to 1"),
        ({"cube": {"composite": "week"}}, r"cube\.composite: Input should be 'day', 'month'"),
        ({"train": {"architecture": "resnet"}}, r"train\.architecture: unknown architecture"),
        ({"train": {"bands": "rgbnir"}}, r"train\.bands: unknown band preset"),
        ({"report": {"units": "acres"}}, r"report\.units: Input should be 'ha', 'km2' or 'm2'"),
        ({"start": "2023-13-01"}, r"search\.start: Input should be a valid date"),
        ({"start": "2024-01-01"}, r"search: start 2024-01-01 is after end 2023-12-31; swap"),
        ({"modle": "x"}, r"modle: unknown key .*did you mean 'model'\?"),
        ({"catalog": None}, r"search\.catalog: Input should be a valid string"),
        ({"model": None}, r"give model: .* or labels:"),
    ],
)
def test_a_bad_configuration_names_the_key_before_any_work(change, message):
    config = {**GOOD, **change}
    with pytest.raises(ConfigError, match=message):
        load_config(config)
    with pytest.raises(ConfigError, match="problem"):
        run(config, verbose=False)  # not a connection error, not a missing file


def test_every_problem_is_listed_at_once_and_missing_keys_are_named():
    with pytest.raises(ConfigError, match=r"has 2 problems") as error:
        load_config({"sites": "s.geojson", "model": "m", "segment": {"tta": "d8"}})
    text = str(error.value)
    assert "search: missing; it is required (with keys ['catalog', 'collection'" in text
    assert "segment.tta: Input should be 'd4'" in text


def test_the_run_command_shows_the_problem_as_one_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "segment": {"batch_sise": 4}}))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 1
    assert "segment.batch_sise: unknown key (value 4); did you mean 'batch_size'?" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_must_be_at_least_one(workers):
    result = CliRunner().invoke(main, ["--workers", workers, "sites", "--help"])
    assert result.exit_code == 2
    assert "--workers" in result.output
    assert "x>=1" in result.output


def test_the_published_schema_is_the_configurations():
    published = json.loads((Path(__file__).parent.parent / "docs/run.schema.json").read_text())
    assert published == RunConfig.model_json_schema(), "regenerate with docs/run.md's command"


def test_run_from_python_on_threads_and_a_local_cluster(world, server, cluster, tmp_path):
    """One call from a site table to the per-site, per-class area time series."""
    from distributed import Client

    from minecube.models import save
    from tests.test_segment import _model

    one = world.sites[world.sites.site_id == "bodaibo-gold"]
    one.to_file(tmp_path / "sites.geojson", driver="GeoJSON")
    config = {
        "sites": tmp_path / "sites.geojson",
        "out": tmp_path / "run",
        "model": save(_model(), tmp_path / "model" / "fpn").with_suffix(""),
        "labels": world.path / "labels",
        "search": {"catalog": server.stac_url, "start": "2022-01-01", "end": "2023-12-31"},
        "cube": {"composite": "year"},
        "report": {"units": "km2"},
    }
    with Client(cluster) as client:
        result = run(config, client=client, verbose=False)
    threads = run({**config, "out": tmp_path / "threads"}, verbose=False)  # no client: threads
    pd.testing.assert_frame_equal(threads.areas, result.areas)
    pd.testing.assert_frame_equal(threads.expansion, result.expansion)
    assert threads.run_id != result.run_id
    assert result.report.is_file()
    assert set(result.areas.site_id) == {"bodaibo-gold"}
    assert {"time", "class", "area_km2", "unobserved_km2"} <= set(result.areas.columns)
    assert len(result.expansion) == 1
    assert result.predictions == tmp_path / "run" / "predictions.zarr"
    assert "1 sites" in repr(result)
    # lineage: every row carries the run id; one walks back to the items of its period
    areas = pd.read_csv(result.report.parent / "tables" / "class_areas.csv")
    assert set(areas.run_id) == {result.run_id}
    record = tmp_path / "run" / "runs" / f"{result.run_id}.json"
    assert str(tmp_path) not in record.read_text()  # only paths relative to the run folder
    found = lineage(result.report.parent / "tables" / "class_areas.csv", row=len(areas) - 1)
    assert found["period"] == ["2023-01-01", "2023-12-31"]
    assert found["items"]
    assert all(i["datetime"].startswith("2023") for i in found["items"])
    assert found["cube_period"]["status"] == "complete"
    assert (
        found["model"]["sha256"]
        == hashlib.sha256((tmp_path / "model" / "fpn.safetensors").read_bytes()).hexdigest()
    )
    shown = CliRunner().invoke(main, ["lineage", str(result.report.parent / "tables" /
                                                     "class_areas.csv"), "--row", "0"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "site bodaibo-gold, 2022-01-01 to 2022-12-31" in shown.output


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"segmnet": {"batch_size": 4}}, "'segmnet' is not a command; did you mean 'segment'?"),
        ({"segment": {"batch_sise": 4}}, "'batch_sise' is not an option of `segment`; did you"),
        ({"cube": {"biuld": {}}}, "'biuld' is not a command; did you mean 'build'?"),
        ({"stats": 3}, "'stats' must hold a mapping of its options"),
    ],
)
def test_a_config_file_naming_no_command_or_option_is_refused(tmp_path, defaults, message):
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump(defaults))
    result = CliRunner().invoke(main, ["--config", str(path), "sites", "--help"])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_a_network_failure_is_one_line_and_debug_shows_the_traceback(tmp_path, world):
    sites, out = str(world.path / "sites.geojson"), str(tmp_path / "items")
    args = ["search", sites, "--catalog", "http://127.0.0.1:9/v1", "--start", "2022-01-01",
            "--end", "2022-12-31", "--out", out]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "APIError: " in result.output
    assert "port=9" in result.output
    assert "reachable; run again with `minecube --debug" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "a-file").write_text("")
    unwritable = ["demo", "generate", str(tmp_path / "a-file" / "world")]
    assert "--debug" in CliRunner().invoke(main, unwritable).output
    debug = CliRunner().invoke(main, ["--debug", *unwritable])
    assert isinstance(debug.exception, OSError)  # raised: click shows the traceback


def test_pretrained_settings_are_checked_before_any_work():
    from minecube.pipeline import TrainSettings

    settings = TrainSettings(encoder_name="efficientnet-b4", encoder_weights="csmask-l2a")
    assert settings.name == "fpn-efficientnet-b4-rgbn-csmask-l2a"
    with pytest.raises(ValueError, match="set encoder_name: efficientnet-b4"):
        TrainSettings(encoder_weights="csmask-l2a")
