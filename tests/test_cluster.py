"""Clusters for real: settings, Dask-Gateway and SLURM on loopback, workers that share no disk,
and workers lost in the middle of a run."""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import signal
import subprocess
import threading
import urllib.request

import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from minecube.cli import main
from minecube.cluster import ClusterError, ClusterSettings, connect, require_reachable, shares_disk
from minecube.pipeline import ConfigError, run

SHIPPED = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
           "HF_HUB_OFFLINE")  # fmt: skip
"""What the workers' environment needs: the object store's endpoint and keys."""


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kind": "slurm"}, "kind slurm needs workers: N"),
        ({"kind": "gateway", "workers": 2, "adapt": {"maximum": 4}}, "not both"),
        ({"kind": "local", "adapt": {"minimum": 5, "maximum": 2}}, "minimum 5 is above maximum"),
        ({"kind": "address"}, "kind address needs address"),
        ({"kind": "address", "address": "tcp://h:8786", "workers": 2}, "drop workers"),
        ({"kind": "kubernetes"}, "kind: Input should be 'local', 'gateway', 'slurm'"),
        ({"kind": "local", "wokers": 2}, "wokers: Extra inputs are not permitted"),
    ],
)
def test_settings_are_checked_before_anything_starts(settings, message):
    with pytest.raises(ClusterError, match=message), connect(settings):
        pass


def test_a_local_cluster_is_made_scaled_reported_and_closed(caplog):
    caplog.set_level("INFO", logger="minecube")
    with connect(kind="local", workers=2, options={"processes": False}) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        address = client.scheduler.address
        from distributed import get_client

        assert get_client() is client  # current inside the block
    assert f"dask: {address} (local cluster, 2 workers)" in caplog.text
    assert "dask dashboard: http://" in caplog.text
    assert client.status == "closed"


def test_an_adaptive_cluster_from_zero_starts_workers_when_work_comes():
    with connect(kind="local", adapt={"maximum": 1}, options={"processes": False}) as client:
        assert client.submit(sum, [1, 2]).result(timeout=60) == 3


def test_who_shares_the_disk():
    assert shares_disk(ClusterSettings(kind="local")) is True
    assert shares_disk(ClusterSettings(kind="slurm", workers=1)) is True
    assert shares_disk(ClusterSettings(kind="gateway", workers=1)) is False
    assert shares_disk(ClusterSettings(kind="gateway", workers=1, shared_filesystem=True))
    assert shares_disk(ClusterSettings(kind="address", address="tcp://h:1")) is None
    with connect(kind="local", workers=1, options={"processes": False}) as client:
        assert shares_disk(client=client) is True  # every worker on this machine


def test_client_local_paths_are_refused_before_any_work(world, tmp_path):
    """A gateway's workers share no disk: local stores or a local checkpoint are refused
    before a cluster is asked for (this gateway address answers nothing) or a file written."""
    (tmp_path / "model").mkdir()
    for name in ("fpn.safetensors", "fpn.json"):  # a checkpoint here, on the client only
        (tmp_path / "model" / name).write_text("{}")
    config = {
        "sites": world.path / "sites.geojson",
        "out": tmp_path / "run",
        "model": str(tmp_path / "model" / "fpn"),
        "search": {"catalog": "http://127.0.0.1:9", "start": "2022-01-01", "end": "2022-12-31"},
        "cluster": {"kind": "gateway", "address": "http://127.0.0.1:9", "workers": 2},
    }
    with pytest.raises(ClusterError) as refused:
        run(config, verbose=False)
    message = str(refused.value)
    assert "share no disk with this machine" in message
    for what in ("cube store", "prediction store", "checkpoint"):
        assert f"the {what} is a path on it" in message
    assert "s3://bucket/" in message
    assert "shared_filesystem: true" in message
    assert not (tmp_path / "run").exists()
    # object storage for the stores, but the checkpoint still local: only it is named
    with pytest.raises(ClusterError, match=r"but the checkpoint is a path on it \('") as refused:
        run({**config, "stores": "s3://bucket/run"}, verbose=False)
    assert "store" not in str(refused.value).split("but", 1)[1].split(";")[0]
    with pytest.raises(ConfigError, match=r"cluster\.kind"):
        run({**config, "cluster": {"kind": "gatway"}}, verbose=False)


def test_cli_cluster_options(tmp_path):
    runner = CliRunner()
    refused = runner.invoke(main, ["--cluster", "local", "--workers", "1", "--cluster-option",
                                   "processes=false", "--cluster-option", "shared_filesystem=false",
                                   "segment", str(tmp_path / "cubes.zarr"),
                                   str(tmp_path / "model")])  # fmt: skip
    assert refused.exit_code != 0
    assert "dask: inproc://" in refused.output  # the cluster came up, then the paths were refused
    assert "the cube store is a path on it" in refused.output
    assert "the checkpoint is a path on it" in refused.output
    bad = runner.invoke(main, ["--adapt", "2-5", "sites", "--help"])
    assert bad.exit_code == 2
    assert "is not MIN:MAX" in bad.output
    both = runner.invoke(main, ["--scheduler", "tcp://h:1", "--workers", "2", "sites", "--help"])
    assert both.exit_code == 2
    assert "drop --cluster, --workers" in both.output
    assert require_reachable({"x": tmp_path}, settings=ClusterSettings(kind="local")) is None


# -- the demo job's core on real cluster managers -----------------------------------------------


@pytest.fixture(scope="module")
def core(world, server, s3, tmp_path_factory):
    """search → cube → segment → stats of one demo site on threads, with the checkpoint in
    object storage: what every cluster must reproduce."""
    from minecube.models import save
    from tests.test_segment import _model

    folder = tmp_path_factory.mktemp("core")
    one = world.sites[world.sites.site_id == "bodaibo-gold"]
    one.to_file(folder / "sites.geojson", driver="GeoJSON")
    model = str(save(_model(), f"{s3}/models/fpn")).removesuffix(".safetensors")
    config = {
        "sites": folder / "sites.geojson",
        "model": model,
        "labels": world.path / "labels",
        "search": {"catalog": server.stac_url, "start": "2022-01-01", "end": "2023-12-31"},
        "cube": {"composite": "year"},
        "report": {"units": "km2"},
    }
    threads = run({**config, "out": folder / "threads"}, verbose=False)
    return config, threads, folder


def _same_as(reference, *, stores: str, out) -> None:
    """The cubes, predictions and area tables of a run equal the threaded run's."""
    from minecube.cube import open_cube
    from minecube.segment import open_predictions

    for site in reference.expansion.site_id:
        cube = open_cube(f"{stores}/cubes.zarr", site).load()
        assert cube.rio.crs is not None
        xr.testing.assert_identical(cube, open_cube(reference.cubes, site).load())
        xr.testing.assert_identical(
            open_predictions(f"{stores}/predictions.zarr", site).load(),
            open_predictions(reference.predictions, site).load(),
        )
    tables = out / "report" / "tables"
    for name, table in (("class_areas", reference.areas), ("expansion_summary",
                                                           reference.expansion)):  # fmt: skip
        pd.testing.assert_frame_equal(
            pd.read_parquet(tables / f"{name}.parquet").drop(columns="run_id"), table
        )


@pytest.mark.slow
def test_demo_core_on_dask_gateway(core, gateway, s3, caplog):
    """A real gateway makes an adaptive cluster whose workers get the object store's settings
    through the cluster options, as on a Pangeo hub; the run closes it at the end."""
    config, reference, folder = core
    caplog.set_level("INFO", logger="minecube")
    environment = {k: os.environ[k] for k in SHIPPED}
    cluster = {
        **gateway,
        "adapt": {"minimum": 1, "maximum": 2},
        "options": {"worker_cores": 1, "worker_memory": 2, "environment": environment},
    }
    result = run({**config, "out": folder / "gateway", "stores": f"{s3}/gateway",
                  "cluster": cluster}, verbose=False)  # fmt: skip
    assert result.predictions == f"{s3}/gateway/predictions.zarr"
    _same_as(reference, stores=f"{s3}/gateway", out=folder / "gateway")
    assert "(gateway cluster, 1–2 workers, adaptive)" in caplog.text
    assert f"dask dashboard: {gateway['address']}/clusters/" in caplog.text
    ask = urllib.request.Request(
        f"{gateway['address']}/api/v1/clusters/",
        headers={"Authorization": "Basic " + base64.b64encode(b"minecube:").decode()},
    )  # the gateway's REST API, as its client asks it
    with urllib.request.urlopen(ask) as answer:
        assert json.load(answer) == {}  # what the run made, it closed


def test_demo_core_on_slurm_from_the_cli(core, slurm, s3, tmp_path):
    """`minecube --cluster slurm … run run.yaml`: dask-jobqueue submits the workers as SLURM
    jobs (sbatch passes the environment on), which are cancelled when the command ends."""
    import yaml

    config, reference, folder = core
    run_file = tmp_path / "run.yaml"
    settings = {**config, "out": folder / "slurm", "stores": f"{s3}/slurm"}
    run_file.write_text(yaml.safe_dump({k: str(v) if isinstance(v, os.PathLike) else v
                                        for k, v in settings.items()}))  # fmt: skip
    options = {"cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:20:00",
               "job_name": "minecube-test", "log_directory": tmp_path / "jobs"}  # fmt: skip
    args = ["--cluster", "slurm", "--workers", "2"]
    for key, value in options.items():
        args += ["--cluster-option", f"{key}={value}"]
    done = CliRunner().invoke(main, [*args, "run", str(run_file)])
    assert done.exit_code == 0, done.output
    assert "(slurm cluster, 2 workers)" in done.output
    _same_as(reference, stores=f"{s3}/slurm", out=folder / "slurm")
    assert len(list((tmp_path / "jobs").glob("*.err"))) >= 2, "each worker ran as a SLURM job"
    queue = subprocess.run(["squeue", "-h", "-n", "minecube-test", "-o", "%T"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert set(queue.stdout.split()) <= {"COMPLETING", "CANCELLED"}, queue.stdout


# -- workers lost mid-run -----------------------------------------------------------------------


def _kill_once(client, sentinel, *, after: int, layer: str) -> None:
    """Make one worker process kill itself (SIGKILL, as the OOM killer or a lost node would)
    as it starts its ``after``-th task of ``layer``; its nanny starts a replacement."""
    from distributed import WorkerPlugin

    class KillOnce(WorkerPlugin):  # defined here: pickled by value for the workers
        def setup(self, worker):
            self.started = 0

        def transition(self, key, start, finish, **kwargs):
            if finish != "executing" or layer not in str(key):
                return
            self.started += 1
            if self.started >= after:
                try:
                    os.close(os.open(sentinel, os.O_CREAT | os.O_EXCL))
                except FileExistsError:  # another worker went first
                    return
                os.kill(os.getpid(), signal.SIGKILL)

    client.register_plugin(KillOnce(), name="minecube-kill-once")


def _retire_busy(client) -> None:
    """Retire a busy worker gracefully, as adaptive scaling down does (the scheduler moves the
    worker's results elsewhere, then closes it)."""
    busy = [w for w, keys in client.processing().items() if keys] or list(client.processing())
    client.retire_workers(busy[:1])


@pytest.fixture
def fresh_two_workers():
    """Two single-thread worker processes of a LocalCluster of their own."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as local,
        Client(local, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def _local_pair():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as local,
        Client(local, set_as_default=False) as client,
    ):
        yield local, client


@pytest.fixture
def two_workers(_local_pair):
    """Two single-thread worker processes of a LocalCluster shared by this module's tests
    (a killed one is restarted by its nanny, and waited for here)."""
    local, client = _local_pair
    local.scale(2)
    client.wait_for_workers(2, timeout=120)
    yield client
    with contextlib.suppress(KeyError, ValueError):
        client.unregister_worker_plugin("minecube-kill-once")


@pytest.mark.parametrize("how", ["kill", "retire"])
def test_a_worker_lost_mid_segmentation_loses_nothing(lab, how, request, tmp_path):
    """Predictions written while a worker is killed (or retired) equal an undisturbed run's,
    and no region is written twice: each write is a dask event, counted here."""
    from minecube.models import save
    from minecube.segment import _WRITE_EVENT, _regions, open_predictions, segment, segment_to_zarr
    from minecube.store import read_manifest
    from tests.test_segment import _model

    client = request.getfixturevalue("two_workers" if how == "kill" else "fresh_two_workers")
    cube = lab["cubes"]["bodaibo-gold"].isel(time=[0])
    checkpoint = save(_model(), tmp_path / "fpn")
    kwargs = {"input_dims": {"y": 64, "x": 64}, "overlap": 16, "chunks": 48}
    regions = len(_regions(segment(cube, checkpoint, **kwargs)))
    store = str(tmp_path / "disturbed.zarr")
    with client.as_current():
        segment_to_zarr(cube, checkpoint, tmp_path / "calm.zarr", progress=False, **kwargs)
        if how == "kill":  # a worker dies as it starts its fourth region
            _kill_once(client, tmp_path / "killed", after=4, layer="minecube-chips")
        else:  # a worker is retired as the first region is written
            writing = threading.Event()
            client.subscribe_topic(
                _WRITE_EVENT, lambda event: event[1]["store"] == store and writing.set()
            )
            retire = threading.Thread(target=lambda: writing.wait(60) and _retire_busy(client))
            retire.start()
        disturbed = segment_to_zarr(cube, checkpoint, store, progress=False, **kwargs)
    if how == "kill":
        assert (tmp_path / "killed").exists()
    else:
        retire.join(60)
        assert writing.is_set()
        assert len(client.scheduler_info()["workers"]) == 1
    calm = open_predictions(tmp_path / "calm.zarr", "bodaibo-gold")
    xr.testing.assert_identical(disturbed.load(), calm.load())
    assert read_manifest(store, "bodaibo-gold")["complete"]
    writes = collections.Counter(
        tuple(message["block"]) for _, message in client.get_events(_WRITE_EVENT)
        if message["store"] == store
    )  # fmt: skip
    assert len(writes) == regions > 8
    assert set(writes.values()) == {1}, writes


def test_a_worker_killed_mid_cube_build_loses_nothing(many_world, many_server, two_workers,
                                                      tmp_path):  # fmt: skip
    """Cubes built while a worker process is killed equal those built on threads."""
    from minecube.cube import build_many, open_cube
    from minecube.stac import search_many

    client = two_workers
    sites = many_world.sites[many_world.sites.site_id.str.endswith("-000")].head(4)
    found = search_many(sites, "2022-01-01", "2023-12-31", catalog=many_server.stac_url)
    calm = build_many(sites, found, tmp_path / "threads.zarr", composite="year", progress=False)
    with client.as_current():
        _kill_once(client, tmp_path / "killed", after=20, layer="")  # any task
        table = build_many(sites, found, tmp_path / "cluster.zarr", composite="year",
                           progress=False)  # fmt: skip
    assert (tmp_path / "killed").exists()
    assert (table.status == "ok").all(), table.error.tolist()
    assert (table.written == calm.written).all()
    for site in sites.site_id:
        xr.testing.assert_identical(
            open_cube(tmp_path / "cluster.zarr", site).load(),
            open_cube(tmp_path / "threads.zarr", site).load(),
        )
