"""Faults and abuse: what minecube promises when a write is killed, a server fails, a chunk is
damaged, an id is hostile or a URL carries a secret.

Each test name is a promise; together they are the list in docs/cubes.md "Guarantees":

- kills: a write killed at any point leaves a store that opens with exactly the whole periods
  or regions, and the same call finishes the job;
- ownership: nothing minecube did not write is replaced, deleted or mixed into;
- outages: flaky reads are retried inside the graph; a dead server ends in a clear error that
  keeps what was written; a period built without some items is degraded, not complete;
- damage: a missing, truncated or changed chunk is found and named, and a re-run repairs it;
- ids: hostile site ids are refused before anything is written;
- secrets: no token from a catalogue URL, a signed href or a signing hook reaches the disk or
  a message.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr
import zarr
from click.testing import CliRunner

from minecube.cli import main
from minecube.cube import CubeError, DegradedPeriodWarning, build, open_cube, to_zarr
from minecube.segment import IncompletePredictionError, open_predictions, segment_to_zarr
from minecube.stac import search
from minecube.store import StoreError, StoreIntegrityError, check, read_manifest
from tests.conftest import leased

PERIODS = ["2022-01-01", "2022-04-01", "2022-07-01", "2022-10-01", "2023-01-01"]


def _cube(site: str = "tiny-pit", periods=PERIODS, size: int = 64) -> xr.Dataset:
    """A small synthetic cube as build() makes them: 4 bands, 2 × 2 chunks a period, a CRS."""
    rng = np.random.default_rng(7)
    shape = (len(periods), 4, size, size)
    refl = rng.uniform(0.01, 0.4, shape).astype("float32")
    refl[1, :, :8, :8] = np.nan  # some cloud
    ds = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), refl),
            "valid_count": (("time", "y", "x"), np.full(shape[:1] + shape[2:], 3, "int16")),
        },
        coords={
            "time": pd.to_datetime(periods),
            "band": ["red", "green", "blue", "nir"],
            "y": 6_400_000.0 - 10 * np.arange(size),
            "x": 300_000.0 + 10 * np.arange(size),
        },
        attrs={"site_id": site, "sensor": "sentinel-2-l2a", "skipped_items": "{}"},
    )
    return ds.rio.write_crs("EPSG:32756").chunk({"y": size // 2, "x": size // 2})


def _periods(store, group="tiny-pit") -> list[str]:
    return [str(t)[:10] for t in open_cube(store, group).time.values]


# ---------------------------------------------------------------------------------- kills

_KILLER = """
import os, sys
from minecube.cube import to_zarr
from tests.test_faults import _cube
at, replaced = int(sys.argv[2]), 0
real = os.replace
def replace(*args, **kwargs):  # every file zarr or minecube writes lands with one os.replace
    global replaced
    replaced += 1
    if replaced == at:
        os._exit(137)  # as kill -9: the file is written but not in place, nothing after runs
    return real(*args, **kwargs)
os.replace = replace
to_zarr(_cube(), sys.argv[1])
"""


@pytest.mark.filterwarnings("ignore:Object at .* is not recognized:UserWarning")
def test_a_cube_write_killed_at_random_points_opens_whole_periods_and_resumes(
    tmp_path, monkeypatch
):
    reference = tmp_path / "reference.zarr"
    writes = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda *a, **k: (writes.append(a[1]), real(*a, **k)))
    to_zarr(_cube(), reference)
    monkeypatch.undo()
    expected = open_cube(reference, "tiny-pit").load()
    seed = int(os.environ.get("MINECUBE_KILL_SEED", "14"))
    points = sorted(random.Random(seed).sample(range(1, len(writes) + 1), 5))
    children = {  # each with its own hash seed: the order zarr writes the arrays in follows it
        at: subprocess.Popen(
            [sys.executable, "-c", _KILLER, str(tmp_path / f"killed-{at}.zarr"), str(at)],
            cwd=Path(__file__).parent.parent,
            env=os.environ | {"PYTHONHASHSEED": str(seed * 100 + at)},
        )
        for at in points
    }
    for at, child in children.items():
        assert child.wait(120) == 137, f"the write meant to die at file {at} did not"
        store = tmp_path / f"killed-{at}.zarr"
        try:
            whole = _periods(store)
        except (CubeError, FileNotFoundError):
            whole = []  # killed before the group held a whole period
        assert whole == PERIODS[: len(whole)], (seed, at, whole)
        if whole:  # what opens is exactly the reference, and intact
            xr.testing.assert_identical(
                open_cube(store, "tiny-pit").load(), expected.isel(time=slice(len(whole)))
            )
            assert check(store).ok
        assert to_zarr(_cube(), store) == PERIODS[len(whole) :], (seed, at)
        xr.testing.assert_identical(open_cube(store, "tiny-pit").load(), expected)
        assert check(store).ok, str(check(store))


def _torn_append(store, periods: int, group="tiny-pit") -> None:
    """What an append killed after zarr resized every array and wrote their data, but before it
    wrote the new time values, leaves (a kill at the time axis's chunk when the hash seed orders
    the arrays that way): every array ``periods`` longer, the new times never written."""
    node = zarr.open_group(store, path=group, mode="a")
    for name, array in node.arrays():
        if (array.metadata.dimension_names or ("",))[0] == "time":
            n = array.shape[0]
            array.resize((n + periods, *array.shape[1:]))
            if name != "time":
                array[n:] = np.repeat(array[n - 1 : n], periods, axis=0)  # data in place


@pytest.mark.parametrize("first", [True, False], ids=["first-write", "append"])
def test_a_write_torn_between_its_data_and_its_time_values_opens_whole_and_resumes(tmp_path, first):
    from minecube.store import _fs, _write_json, manifest_path

    reference, store = tmp_path / "reference.zarr", tmp_path / "torn.zarr"
    to_zarr(_cube(), reference)
    expected = open_cube(reference, "tiny-pit").load()
    to_zarr(_cube(periods=PERIODS[:2]), store)
    if first:  # killed after its arrays, before its times and its manifest: nothing vouched
        kept = ("format", "kind", "group", "created")
        new = {k: v for k, v in read_manifest(store, "tiny-pit").items() if k in kept}
        new |= {"units": {}, "meta": {}}
        _write_json(_fs(store)[0], manifest_path(store, "tiny-pit"), new)  # as claim_group left it
        zarr.open_array(store, path="tiny-pit/time", mode="a")[:] = 0  # the fill value
        with pytest.raises(CubeError, match="has no complete period yet"):
            open_cube(store, "tiny-pit")
    else:
        _torn_append(store, 2)
        assert [
            str(t)[:10]
            for t in xr.open_zarr(store, group="tiny-pit", consolidated=False).time.values
        ] == [
            *PERIODS[:2],
            PERIODS[0],
            PERIODS[0],
        ]  # the unwritten times read as the fill value: the first period, twice more
        xr.testing.assert_identical(
            open_cube(store, "tiny-pit").load(), expected.isel(time=slice(2))
        )  # only what the manifest vouches for
        assert check(store).ok
    assert to_zarr(_cube(), store) == (PERIODS if first else PERIODS[2:])
    xr.testing.assert_identical(open_cube(store, "tiny-pit").load(), expected)
    assert check(store).ok


def test_a_prediction_write_killed_part_way_is_refused_until_resumed(tmp_path):
    from tests.test_segment import _model

    model, cube, store = _model(), _cube(size=128), tmp_path / "predictions.zarr"
    kwargs = {"input_dims": {"y": 64, "x": 64}, "overlap": 16, "chunks": 48, "progress": False}
    with pytest.raises(RuntimeError, match="fail_after"):
        segment_to_zarr(cube, model, store, fail_after=3, **kwargs)
    with pytest.raises(IncompletePredictionError, match="3 regions written"):
        open_predictions(store, "tiny-pit")
    full = segment_to_zarr(cube, model, store, **kwargs)
    assert full.sizes == {"time": 5, "y": 128, "x": 128}
    assert check(store).ok


# ------------------------------------------------------------------------------ ownership


def test_a_folder_with_a_subfolder_named_like_the_site_is_never_written_into(tmp_path):
    folder = tmp_path / "work"
    (folder / "tiny-pit").mkdir(parents=True)
    (folder / "tiny-pit" / "notes.txt").write_text("field notes")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="holds other files and is not a Zarr store"):
            to_zarr(_cube(), folder, overwrite=overwrite)
    assert (folder / "tiny-pit" / "notes.txt").read_text() == "field notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_someone_elses_zarr_stores_are_refused_v2_and_v3(tmp_path):
    v3 = zarr.open_group(tmp_path / "theirs.zarr", mode="w", zarr_format=3)
    v3.create_array("tiny-pit", shape=(3,), dtype="int8")[:] = [1, 2, 3]
    v2 = zarr.open_group(tmp_path / "old.zarr", mode="w", zarr_format=2)
    v2.create_array("tiny-pit", shape=(3,), dtype="int8")[:] = [4, 5, 6]
    with pytest.raises(StoreError, match="Zarr store that minecube did not write"):
        to_zarr(_cube(), tmp_path / "theirs.zarr", overwrite=True)
    with pytest.raises(StoreError, match="Zarr v2 store; minecube writes Zarr v3"):
        to_zarr(_cube(), tmp_path / "old.zarr", overwrite=True)
    assert list(zarr.open_group(tmp_path / "theirs.zarr")["tiny-pit"][:]) == [1, 2, 3]
    assert list(zarr.open_group(tmp_path / "old.zarr")["tiny-pit"][:]) == [4, 5, 6]
    assert not (tmp_path / "old.zarr" / "zarr.json").exists()  # no mixed v2/v3 metadata


def test_a_group_minecube_did_not_write_is_never_replaced(tmp_path):
    store = tmp_path / "cubes.zarr"
    to_zarr(_cube("other-site"), store)
    zarr.open_group(store, path="tiny-pit", mode="a").create_array("x", shape=(2,), dtype="i1")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match=r"'tiny-pit' .* was not written by minecube"):
            to_zarr(_cube(), store, overwrite=overwrite)
    assert "x" in zarr.open_group(store, path="tiny-pit", mode="r")


def test_predictions_never_go_into_a_cube_store(tmp_path):
    from tests.test_segment import _model

    store, model = tmp_path / "cubes.zarr", _model()
    to_zarr(_cube(), store)
    before = open_cube(store, "tiny-pit").load()
    with pytest.raises(StoreError, match="is a minecube cubes store; predictions go into a"):
        segment_to_zarr(before, model, store, progress=False)
    model_dir = tmp_path / "model"
    from minecube.models import save

    save(model, model_dir / "fpn")
    result = CliRunner().invoke(
        main, ["segment", str(store), str(model_dir / "fpn"), "--out", str(store)]
    )
    assert result.exit_code != 0
    assert "never into a cube store" in result.output
    xr.testing.assert_identical(open_cube(store, "tiny-pit").load(), before)
    segment_to_zarr(before, model, tmp_path / "p.zarr", progress=False)
    with pytest.raises(StoreError, match="is a minecube predictions store; cubes go into"):
        to_zarr(before, tmp_path / "p.zarr")


def test_the_segment_command_keeps_another_models_predictions_unless_told(tmp_path):
    from minecube.models import save
    from tests.test_segment import _model

    cubes, out = tmp_path / "cubes.zarr", tmp_path / "predictions.zarr"
    to_zarr(_cube(size=64), cubes)
    first, second = save(_model(0), tmp_path / "m" / "a"), save(_model(1), tmp_path / "m" / "b")
    run = CliRunner().invoke
    assert run(main, ["segment", str(cubes), str(first), "--out", str(out)]).exit_code == 0
    kept = open_predictions(out, "tiny-pit").load()
    refused = run(main, ["segment", str(cubes), str(second), "--out", str(out)])
    assert refused.exit_code != 0
    assert "pass overwrite=True" in refused.output or "--overwrite" in refused.output
    xr.testing.assert_identical(open_predictions(out, "tiny-pit").load(), kept)
    fingerprint = read_manifest(out, "tiny-pit")["fingerprint"]
    replaced = run(main, ["segment", str(cubes), str(second), "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert read_manifest(out, "tiny-pit")["fingerprint"] != fingerprint


def test_a_store_is_never_made_inside_another(tmp_path):
    from minecube.models import save
    from tests.test_segment import _model

    cubes = tmp_path / "cubes.zarr"
    to_zarr(_cube(), cubes)
    before = open_cube(cubes, "tiny-pit").load()
    with pytest.raises(StoreError, match="is inside the Zarr store"):
        segment_to_zarr(before, _model(), cubes / "preds.zarr", progress=False)
    with pytest.raises(StoreError, match="is inside the Zarr store"):
        to_zarr(_cube("other"), cubes / "tiny-pit" / "more.zarr")
    checkpoint = save(_model(), tmp_path / "m" / "fpn")
    result = CliRunner().invoke(
        main, ["segment", str(cubes), str(checkpoint), "--out", str(cubes / "preds.zarr")]
    )
    assert result.exit_code != 0
    assert "is inside the Zarr store" in result.output
    assert not (cubes / "preds.zarr").exists()
    xr.testing.assert_identical(open_cube(cubes, "tiny-pit").load(), before)
    assert check(cubes).ok


# ----------------------------------------------------------------------- one store, one folder


def test_a_store_copied_as_zarr_stores_are_copied_opens_and_appends(tmp_path):
    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(periods=PERIODS[:3]), store, items=[])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cubes.zarr"]  # nothing beside it
    copy = tmp_path / "elsewhere" / "copied.zarr"
    shutil.copytree(store, copy)  # cp -r, aws s3 sync: the store's folder, nothing else
    original = open_cube(store, "tiny-pit").load()
    xr.testing.assert_identical(open_cube(copy, "tiny-pit").load(), original)
    assert check(copy).ok
    assert to_zarr(_cube(), copy) == PERIODS[3:]  # the copy is a store of its own
    assert _periods(copy) == PERIODS
    assert _periods(store) == PERIODS[:3]


def test_a_store_of_the_earlier_layout_is_read_and_moved_inside_on_its_first_write(tmp_path):
    from minecube.cube import items_path

    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(periods=PERIODS[:3]), store, items=[])
    expected = open_cube(store, "tiny-pit").load()
    inside = store / ".minecube"
    old_manifests, old_items = tmp_path / "cubes.zarr.minecube", tmp_path / "cubes.zarr.items"
    old_manifests.mkdir()
    old_items.mkdir()
    manifest = json.loads((inside / "groups" / "tiny-pit.json").read_text())
    del manifest["meta"], manifest["settings"]  # as the earlier layout wrote them
    (old_manifests / "tiny-pit.json").write_text(json.dumps(manifest))
    (inside / "items" / "tiny-pit.json").rename(old_items / "tiny-pit.json")
    shutil.rmtree(inside)
    (old_manifests / "notes.txt").write_text("not minecube's")  # never moved nor deleted
    xr.testing.assert_identical(open_cube(store, "tiny-pit").load(), expected)
    assert check(store).ok
    assert items_path(store, "tiny-pit") == old_items / "tiny-pit.json"
    assert to_zarr(_cube(), store) == PERIODS[3:]  # the first write moves it inside
    assert (inside / "groups" / "tiny-pit.json").is_file()
    assert (inside / "items" / "tiny-pit.json").is_file()
    assert items_path(store, "tiny-pit") == inside / "items" / "tiny-pit.json"
    assert not old_items.exists()
    assert sorted(p.name for p in old_manifests.iterdir()) == ["notes.txt"]
    assert _periods(store) == PERIODS
    assert check(store).ok


# ---------------------------------------------------------------------------- two writers

_RACER = """
import os, sys, time
from pathlib import Path
from minecube.store import StoreBusyError
from tests.test_faults import _cube
kind, store, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
if kind == "segment":
    from minecube.cube import open_cube
    from minecube.segment import segment_to_zarr
    from tests.test_segment import _model
    cube, model = open_cube(sys.argv[4], "tiny-pit"), _model()
else:
    from minecube.cube import to_zarr
    cube = _cube()
Path(f"{go}.{os.getpid()}.ready").touch()
while not go.exists():  # both start writing at the same instant
    time.sleep(0.001)
try:
    if kind == "segment":
        segment_to_zarr(cube, model, store, input_dims={"y": 64, "x": 64}, overlap=16,
                        chunks=48, progress=False)
    else:
        to_zarr(cube, store, progress=False)
except StoreBusyError as e:
    print(e)
    sys.exit(3)
"""


def _race(tmp_path: Path, kind: str, trial: int, *extra: str) -> tuple[Path, list[int], str]:
    """Two processes write one group of a new store at once: (store, exit codes, output)."""
    store, go = tmp_path / f"{kind}-{trial}.zarr", tmp_path / f"go-{kind}-{trial}"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, kind, str(store), str(go), *extra],
            cwd=Path(__file__).parent.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    while len(list(tmp_path.glob(f"go-{kind}-{trial}.*.ready"))) < 2:
        assert all(r.poll() is None for r in racers), [r.communicate()[0] for r in racers]
    go.touch()
    outputs = [r.communicate(timeout=300)[0] for r in racers]
    return store, [r.returncode for r in racers], "\n".join(outputs)


@pytest.mark.slow
def test_two_cube_builds_of_one_group_at_once_never_mix(tmp_path):
    reference = tmp_path / "reference.zarr"
    to_zarr(_cube(), reference)
    expected = open_cube(reference, "tiny-pit").load()
    outcomes = []
    for trial in range(4):
        store, codes, output = _race(tmp_path, "cube", trial)
        assert sorted(codes) in ([0, 0], [0, 3]), output  # one writes; the other waits or refuses
        if 3 in codes:
            assert "is being written by another process (pid" in output
        xr.testing.assert_identical(open_cube(store, "tiny-pit").load(), expected)
        assert check(store).ok, str(check(store))
        assert to_zarr(_cube(), store) == []  # a re-run finds it whole
        outcomes.append(tuple(sorted(codes)))
    assert not list(tmp_path.glob("*.zarr/.minecube/leases/*.json"))  # every lease released
    print("cube races:", outcomes)


@pytest.mark.slow
def test_two_segments_of_one_group_at_once_never_mix(tmp_path):
    from tests.test_segment import _model

    cubes, reference = tmp_path / "cubes.zarr", tmp_path / "reference.zarr"
    to_zarr(_cube(size=128), cubes)
    kwargs = {"input_dims": {"y": 64, "x": 64}, "overlap": 16, "chunks": 48, "progress": False}
    cube = open_cube(cubes, "tiny-pit")
    expected = segment_to_zarr(cube, _model(), reference, **kwargs).load()
    for trial in range(3):
        store, codes, output = _race(tmp_path, "segment", trial, str(cubes))
        assert sorted(codes) in ([0, 0], [0, 3]), output
        assert "Error" not in output.replace("StoreBusyError", ""), output
        xr.testing.assert_identical(open_predictions(store, "tiny-pit").load(), expected)
        assert check(store).ok, str(check(store))


def _lease_of(store: Path, pid: int, *, renewed_ago: float = 0.0) -> Path:
    import socket
    import time

    now = time.time()
    return leased(store, {"host": socket.gethostname(), "pid": pid, "token": "theirs",
                          "since": now - 42, "renewed": now - renewed_ago})  # fmt: skip


def test_a_live_writers_lease_is_refused_naming_it_and_a_dead_writers_is_taken_over(tmp_path):
    from minecube.store import StoreBusyError

    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(periods=PERIODS[:2]), store)
    before = open_cube(store, "tiny-pit").load()
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        lease = _lease_of(store, alive.pid)
        with pytest.raises(StoreBusyError, match=rf"pid {alive.pid} on .*42 s ago"):
            to_zarr(_cube(), store)
        result = CliRunner().invoke(main, ["check", str(store)])  # reading needs no lease
        assert result.exit_code == 0, result.output
        xr.testing.assert_identical(open_cube(store, "tiny-pit").load(), before)
        assert json.loads(lease.read_text())["token"] == "theirs"  # never taken from the living
    finally:
        alive.communicate(b"")
    assert to_zarr(_cube(), store) == PERIODS[2:]  # its process is gone: taken over
    assert not lease.exists()
    _lease_of(store, os.getpid(), renewed_ago=3600)  # a writer on a host now silent for an hour
    assert to_zarr(_cube(), store, overwrite=True) == PERIODS
    assert not lease.exists()


# --------------------------------------------------------------------------------- damage


def _chunk(store, period_index: int, group="tiny-pit") -> Path:
    """The file of a period's reflectance: one shard holds all its chunks."""
    return Path(store) / group / "reflectance" / "c" / str(period_index) / "0" / "0" / "0"


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_truncated_chunk_is_named_and_a_rerun_repairs_it(tmp_path, damage):
    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(), store)
    expected = open_cube(store, "tiny-pit").load()
    chunk = _chunk(store, 2)
    if damage == "missing":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(StoreIntegrityError, match=r"2022-07-01: chunk 'reflectance/c/2/0/0/0'"):
        open_cube(store, "tiny-pit")
    report = check(store)
    assert not report.ok
    assert "reflectance/c/2/0/0/0" in str(report)
    result = CliRunner().invoke(main, ["check", str(store)])
    assert result.exit_code == 1
    assert "reflectance/c/2/0/0/0" in result.output
    assert to_zarr(_cube(), store) == ["2022-07-01"]  # only the damaged period
    xr.testing.assert_identical(open_cube(store, "tiny-pit").load(), expected)
    assert check(store).ok


def test_a_changed_chunk_fails_its_checksum_and_check_names_it(tmp_path):
    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(), store)
    chunk = _chunk(store, 3)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    chunk.write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum"):
        open_cube(store, "tiny-pit").reflectance.isel(time=3).load()
    report = check(store)
    assert not report.ok
    assert "2022-10-01: chunk 'reflectance/c/3/0/0/0' cannot be read" in str(report)


def test_a_missing_prediction_region_is_named_and_recomputed_alone(tmp_path):
    from tests.test_segment import _model

    store, model = tmp_path / "predictions.zarr", _model()
    kwargs = {"input_dims": {"y": 64, "x": 64}, "overlap": 16, "chunks": 48, "progress": False}
    expected = segment_to_zarr(_cube(size=128), model, store, **kwargs).load()
    lost = Path(store) / "tiny-pit" / "prediction" / "c" / "0" / "0" / "0"
    lost.unlink()
    with pytest.raises(StoreIntegrityError, match=r"time0:y0:x0: chunk 'prediction/c/0/0/0'"):
        open_predictions(store, "tiny-pit")
    others = {p: p.stat().st_mtime_ns for p in lost.parent.parent.rglob("*") if p.is_file()}
    again = segment_to_zarr(_cube(size=128), model, store, **kwargs).load()
    xr.testing.assert_identical(again, expected)
    assert all(p.stat().st_mtime_ns == t for p, t in others.items())  # nothing else rewritten
    # the last region spans two Zarr chunks (its block absorbs the remainder): both recorded
    last = read_manifest(store, "tiny-pit")["units"]["time0:y1:x1"]["chunks"]
    assert sorted(last) == [f"prediction/c/0/{y}/{x}" for y in (1, 2) for x in (1, 2)]


def _reencode_time(store: Path) -> None:
    """Rewrite the time axis with other raw values (as re-encoding a chunk would)."""
    time = zarr.open_array(store / "tiny-pit" / "time", mode="r+")
    values = time[:]
    time[:] = values[::-1].copy()


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("time/c/1", "the values of 'time' differ"),
        ("x/c/0", "'x/c/0' is missing"),
        ("reflectance/zarr.json", "'reflectance/zarr.json' is missing"),
        ("y/zarr.json", "'y/zarr.json' was changed"),
        ("reencoded time", "the values of 'time' differ"),
    ],
)
def test_damaged_metadata_or_coordinates_are_named_by_check_and_refused_on_open(
    tmp_path, damage, named
):
    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(), store)
    expected = open_cube(store, "tiny-pit").load()
    path = store / "tiny-pit" / damage
    if damage == "reencoded time":
        _reencode_time(store)
    elif damage == "y/zarr.json":
        meta = json.loads(path.read_text())
        meta["attributes"]["units"] = "km"
        path.write_text(json.dumps(meta))
    else:
        path.unlink()
    report = check(store)
    assert not report.ok
    assert named in str(report)
    result = CliRunner().invoke(main, ["check", str(store)])
    assert result.exit_code == 1, result.output
    assert named in result.output
    with pytest.raises(StoreIntegrityError, match=re.escape(named)):
        open_cube(store, "tiny-pit")
    with pytest.raises(StoreIntegrityError, match="overwrite=True"):
        to_zarr(_cube(), store)  # nothing built on damaged coordinates
    to_zarr(_cube(), store, overwrite=True)
    xr.testing.assert_identical(open_cube(store, "tiny-pit").load(), expected)
    assert check(store).ok


def test_a_removed_group_is_named_by_check(tmp_path):
    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(), store)
    to_zarr(_cube("other-pit"), store)
    shutil.rmtree(store / "tiny-pit")
    report = check(store)
    assert not report.ok
    assert "group 'tiny-pit' is missing" in str(report)
    assert CliRunner().invoke(main, ["check", str(store)]).exit_code == 1
    with pytest.raises(StoreIntegrityError, match="group 'tiny-pit' is missing"):
        open_cube(store, "tiny-pit")
    assert to_zarr(_cube(), store) == PERIODS  # built again, whole
    assert check(store).ok


def test_changed_defining_attributes_are_refused_on_open(tmp_path):
    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(), store)
    zarr.open_group(store, path="tiny-pit", mode="a").attrs["sensor"] = "landsat-c2-l2"
    with pytest.raises(StoreIntegrityError, match="sensor: built with 'sentinel-2-l2a'"):
        open_cube(store, "tiny-pit")


# -------------------------------------------------------------------------------- outages


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from minecube import demo
    from tests.conftest import TINY

    return demo.generate(tmp_path_factory.mktemp("faults") / "world", **TINY)


@pytest.fixture(scope="module")
def tiny_site(tiny_world):
    return tiny_world.sites.iloc[0]


@pytest.fixture
def workers(cluster):
    """Reads on the LocalCluster's workers: processes whose GDAL has cached nothing yet (this
    process has, in the scene check), so every read in the graph goes to the server."""
    from distributed import Client

    with Client(cluster) as client:
        yield client


@pytest.mark.parametrize("engine", ["stackstac", "odc-stac", "async-geotiff"])
def test_flaky_reads_are_retried_inside_the_graph(
    tiny_world, tiny_site, engine, workers, monkeypatch
):
    from minecube import cube as cubes
    from minecube import demo

    monkeypatch.setattr(cubes, "_RETRY_DELAY", 0.05)  # GDAL's wait, carried into the graph

    # everything but the graph under test runs in this process (the scene check runs on the
    # active scheduler, and a freed port can come back with the steady server's URLs), so the
    # workers' GDAL has cached none of the flaky server's file ranges when the graph reads
    with demo.serve(tiny_world) as steady, dask.config.set(scheduler="threads"):
        items = search(tiny_site, "2022-01-01", "2023-12-31", catalog=steady.stac_url)
        expected = build(tiny_site, items, composite="year", engine=engine).compute()
    with demo.serve(tiny_world, fail_every=2) as flaky:
        items = search(tiny_site, "2022-01-01", "2023-12-31", catalog=flaky.stac_url)
        with dask.config.set(scheduler="threads"):
            cube = build(tiny_site, items, composite="year", engine=engine)
        checked = len(flaky.refused)
        cube = cube.compute()  # on the workers: each read is refused once (503), then served
        assert len(flaky.refused) - checked >= 10  # failures met inside the graph
    xr.testing.assert_identical(cube.drop_attrs(), expected.drop_attrs())
    assert json.loads(cube.attrs["skipped_items"]) == {}


@pytest.mark.parametrize("engine", ["stackstac", "async-geotiff"])
def test_a_cog_server_dying_mid_build_is_a_clear_error_that_keeps_what_was_written(
    tiny_world, tiny_site, tmp_path, workers, engine
):
    from minecube import demo

    store = tmp_path / "cubes.zarr"
    with demo.serve(tiny_world) as server:
        items = search(tiny_site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
        cube = build(tiny_site, items, composite="quarter", engine=engine)
        to_zarr(cube.isel(time=[0]), store)  # one period written before the outage
        server._processes[0][0].kill()  # the COG server dies; the API lives on
        server._processes[0][0].wait()
        with pytest.raises(
            CubeError,
            match=r"failed after retries.*periods written by this "
            r"call are kept; run the same call again",
        ) as error:
            to_zarr(cube, store, progress=False)
    assert error.value.__cause__ is None  # no chained traceback that shows a URL
    assert error.value.__suppress_context__
    assert _periods(store, tiny_site.site_id) == [str(cube.time.values[0])[:10]]


def test_a_period_built_without_some_items_is_degraded_until_a_rerun_reads_them(
    tiny_world, tiny_site, tmp_path
):
    from minecube import demo
    from minecube.cube import BrokenAssetWarning

    store, site = tmp_path / "cubes.zarr", tiny_site.site_id
    local = [i for i in tiny_world.items() if i["id"].split("_")[1] in tiny_site.tiles.split(",")]
    victim = local[0]
    cog = Path(victim["assets"]["nir"]["href"].removeprefix("file://"))
    saved = cog.read_bytes()
    cog.unlink()
    try:
        with demo.serve(tiny_world) as server:
            items = search(tiny_site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
            with pytest.warns(BrokenAssetWarning, match="skipping 1 of"):
                to_zarr(build(tiny_site, items, composite="year", retries=1), store)
    finally:
        cog.write_bytes(saved)
    with pytest.warns(DegradedPeriodWarning, match="1 periods are degraded.*'2022-01-01'"):
        cube = open_cube(store, site)
    assert cube.sizes["time"] == 2  # degraded periods are shown, and said to be degraded
    assert victim["id"] in json.loads(cube.attrs["skipped_items"])
    unit = read_manifest(store, site)["units"]["2022-01-01"]
    assert unit["status"] == "degraded"
    assert victim["id"] in unit["skipped"]
    assert read_manifest(store, site)["units"]["2023-01-01"]["status"] == "complete"
    _degraded_periods_are_said_in_tables_and_report(cube, tmp_path, victim["id"])
    with demo.serve(tiny_world) as server:  # the file is back: the re-run repairs the period
        items = search(tiny_site, "2022-01-01", "2023-12-31", catalog=server.stac_url)
        again = build(tiny_site, items, composite="year")
        assert to_zarr(again, store) == ["2022-01-01"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegradedPeriodWarning)
        cube = open_cube(store, site)
    assert json.loads(cube.attrs["skipped_items"]) == {}
    unit = read_manifest(store, site)["units"]["2022-01-01"]
    assert unit["status"] == "complete"
    assert unit["history"][0]["status"] == "degraded"  # what it was is kept
    assert victim["id"] in unit["history"][0]["skipped"]


def _degraded_periods_are_said_in_tables_and_report(cube, tmp_path, victim: str) -> None:
    """Predictions of a degraded cube carry its record to the tables, the report and its figure."""
    from minecube import stats
    from minecube.report import write_report
    from tests.test_segment import _model

    preds = tmp_path / "predictions.zarr"
    pred = segment_to_zarr(cube, _model(), preds, input_dims={"y": 32, "x": 32}, overlap=8,
                           progress=False)  # fmt: skip
    assert list(stats.degraded_periods(pred)) == ["2022-01-01"]
    areas = stats.class_areas(pred)
    assert areas.groupby("time").degraded.first().tolist() == [True, False]
    assert stats.expansion(pred).table.degraded.tolist() == [True, False]
    out = write_report({cube.attrs["site_id"]: pred}, tmp_path / "report", progress=False)
    page = out.read_text()
    alert = page[
        page.index('class="degraded"') : page.index("</div>", page.index('class="degraded"'))
    ]
    assert "1 degraded period(s)" in alert
    assert "2022-01-01" in alert
    assert victim in alert
    assert "2023-01-01" not in alert
    table = pd.read_csv(out.parent / "tables" / "expansion.csv")
    assert table.degraded.tolist() == [True, False]


# ----------------------------------------------------------------------- the user's files


@pytest.fixture(scope="module")
def small_predictions(tmp_path_factory):
    from tests.test_segment import _model

    store = tmp_path_factory.mktemp("small") / "predictions.zarr"
    segment_to_zarr(_cube(), _model(), store, input_dims={"y": 32, "x": 32}, overlap=8,
                    progress=False)  # fmt: skip
    return store


def test_tables_and_reports_never_replace_a_users_file_unless_told(small_predictions, tmp_path):
    from minecube.outputs import OutputExistsError
    from minecube.pipeline import write_area_tables
    from minecube.report import write_report

    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "class_areas.csv").write_text("the user's own table\n")
    with pytest.raises(
        OutputExistsError, match=r"class_areas.csv; nothing was written.*--overwrite"
    ):
        write_area_tables(small_predictions, tables)
    assert sorted(p.name for p in tables.iterdir()) == ["class_areas.csv"]  # nothing else
    assert (tables / "class_areas.csv").read_text() == "the user's own table\n"
    written = CliRunner().invoke(main, ["stats", str(small_predictions), "--out", str(tables)])
    assert written.exit_code == 1, written.output
    assert "did not write" in written.output
    write_area_tables(small_predictions, tables, overwrite=True)
    assert "area_ha" in (tables / "class_areas.csv").read_text()
    write_area_tables(small_predictions, tables)  # its own files: replaced without asking
    with (tables / "class_areas.csv").open("a") as f:
        f.write("an edit of the user's\n")
    with pytest.raises(OutputExistsError, match="changed since"):
        write_area_tables(small_predictions, tables)
    # a report: a user's page in the folder is kept, and so are their other files
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<p>my notes</p>")
    (report / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"index\.html"):
        write_report(small_predictions, report, progress=False)
    assert (report / "index.html").read_text() == "<p>my notes</p>"
    assert sorted(p.name for p in report.iterdir()) == ["index.html", "notes.txt"]
    shown = CliRunner().invoke(main, ["report", str(small_predictions), "--out", str(report),
                                      "--overwrite"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "minecube report" in (report / "index.html").read_text()
    assert (report / "notes.txt").read_text() == "keep me"


def test_a_labelled_sample_is_never_replaced(small_predictions, tmp_path):
    from minecube.outputs import OutputExistsError
    from minecube.pipeline import ConfigError, write_sample

    path = tmp_path / "sample.csv"
    write_sample(small_predictions, path, n=20)
    write_sample(small_predictions, path, n=30, seed=1)  # its own, unlabelled: replaced
    points = pd.read_csv(path)
    assert len(points) >= 30
    assert points.reference.isna().all()
    points["reference"] = points.map_class.where(points.index < 10)  # ten labelled by hand
    points.to_csv(path, index=False)
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="10 labelled points; it is never replaced"):
            write_sample(small_predictions, path, n=20, overwrite=overwrite)
    assert pd.read_csv(path).reference.notna().sum() == 10
    again = CliRunner().invoke(main, ["sample", str(small_predictions), "--n", "20", "--out",
                                      str(path)])  # fmt: skip
    assert again.exit_code == 1, again.output
    assert "never replaced" in again.output
    other = tmp_path / "points.gpkg"
    other.write_bytes(b"not minecube's")
    with pytest.raises(OutputExistsError, match=r"points\.gpkg"):
        write_sample(small_predictions, other, n=20)
    write_sample(small_predictions, other, n=20, overwrite=True)
    assert other.stat().st_size > 1000


def test_train_never_replaces_a_checkpoint_unless_told(world, cube_store, tmp_path):
    from minecube.models import save
    from minecube.pipeline import ConfigError, train_model
    from tests.test_segment import _model

    path = save(_model(), tmp_path / "model" / "fpn").with_suffix("")
    before = (tmp_path / "model" / "fpn.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"checkpoint already exists.*train --overwrite"):
        train_model(cube_store, world.sites, world.path / "labels", path, epochs=1)
    assert (tmp_path / "model" / "fpn.safetensors").read_bytes() == before
    refused = CliRunner().invoke(main, [
        "train", str(cube_store), "--sites", str(world.path / "sites.geojson"), "--labels",
        str(world.path / "labels"), "--out", str(path), "--epochs", "1",
    ])  # fmt: skip
    assert refused.exit_code == 1, refused.output
    assert "already exists" in refused.output
    assert (tmp_path / "model" / "fpn.safetensors").read_bytes() == before


@pytest.mark.slow
def test_a_rerun_with_other_training_settings_or_fewer_sites_and_periods_is_exact(
    world, server, tmp_path
):
    """A run's model carries its training settings: a re-run with others is refused, naming
    them, until train.overwrite; the report shows exactly the run's sites and periods."""
    from minecube.pipeline import ConfigError, run

    three = world.sites[world.sites.site_id.isin(["hunter-coal", "pilbara-iron", "bodaibo-gold"])]
    three.to_file(tmp_path / "sites.geojson", driver="GeoJSON")
    config = {
        "sites": tmp_path / "sites.geojson",
        "out": tmp_path / "run",
        "labels": world.path / "labels",
        "search": {"catalog": server.stac_url, "start": "2022-01-01", "end": "2023-12-31"},
        "cube": {"composite": "year"},
        "train": {"epochs": 1, "batch_size": 4},
    }
    first = run(config, verbose=False)
    card = json.loads(Path(f"{first.model}.json").read_text())
    assert card["training"]["settings"]["epochs"] == 1
    weights = Path(f"{first.model}.safetensors").read_bytes()
    changed = {**config, "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3}}
    with pytest.raises(ConfigError, match=r"train.lr: 0.002 then, 0.001 now.*train.overwrite"):
        run(changed, verbose=False)
    assert Path(f"{first.model}.safetensors").read_bytes() == weights
    changed["train"]["overwrite"] = True
    again = run(changed, verbose=False)
    card = json.loads(Path(f"{again.model}.json").read_text())
    assert card["training"]["settings"]["lr"] == 1e-3
    # one site and one year fewer: the report holds exactly those, the rest is removed
    three[three.site_id != "bodaibo-gold"].to_file(tmp_path / "sites.geojson", driver="GeoJSON")
    narrower = {**changed, "search": {**config["search"], "end": "2022-12-31"}}
    narrower["train"] = {**changed["train"], "overwrite": False}
    last = run(narrower, verbose=False)
    report = last.report.parent
    assert set(last.areas.site_id) == {"hunter-coal", "pilbara-iron"}
    assert {str(t)[:4] for t in last.areas.time} == {"2022"}
    assert not list(report.rglob("bodaibo-gold*"))  # its COG, polygons and figures
    assert (report / "cog" / "hunter-coal.tif").is_file()
    areas = pd.read_csv(report / "tables" / "class_areas.csv")
    assert set(areas.site_id) == {"hunter-coal", "pilbara-iron"}
    assert set(areas.time.str[:4]) == {"2022"}


# ------------------------------------------------------------------------ validated early

_RUN = {"sites": "sites.geojson", "catalog": "http://127.0.0.1:9/v1", "start": "2022-01-01",
        "end": "2022-12-31", "model": "m"}  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"segment": {"device": "tpu"}}, r"segment.device: unknown device; use auto, cpu"),
        ({"segment": {"overlap": 100000}}, r"segment.overlap: .*at most 512"),
        ({"end": "2022-13-45"}, r"search.end: .*month"),
        ({"search": {"catalog": "http://x/v1"}}, r"\['catalog'\] given both at the top level"),
        ({"cluster": {"options": {"n_wrkers": 2}}}, r"'n_wrkers' \(did you mean 'n_workers'"),
        ({"cluster": {"workers": 1000000}}, r"1000000 workers is more than a local cluster"),
        ({"cluster": {"kind": "address", "address": "http://127.0.0.1:8787"}}, r"web address"),
    ],
)
def test_bad_settings_are_refused_before_work_naming_the_key(settings, named):
    from minecube.pipeline import ConfigError, load_config

    with pytest.raises(ConfigError, match=named) as error:
        load_config({**_RUN, **settings})
    assert "Traceback" not in str(error.value)
    assert len(str(error.value).splitlines()) == 2  # the heading and one line


def test_missing_model_or_labels_paths_stop_a_run_before_any_search(tmp_path):
    from minecube.pipeline import ConfigError, run

    (tmp_path / "labels").mkdir()
    config = {**_RUN, "model": str(tmp_path / "none"), "labels": str(tmp_path / "labels"),
              "report": {"sample": 300, "truth": str(tmp_path / "truth")}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"model: .*has no none.safetensors or none.json") as e:
        run(config, verbose=False)  # the catalogue (port 9) is never asked
    assert "holds no <site_id>.gpkg" in str(e.value)
    assert "report.truth: " in str(e.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "labels"]  # nothing written


def test_a_dead_or_foreign_scheduler_address_fails_fast_and_says_what_it_is(tmp_path):
    import http.server
    import threading
    import time

    from minecube.cluster import ClusterError, connect

    start = time.monotonic()
    dead = connect(kind="address", address="tcp://127.0.0.1:9", connect_timeout=2)
    with (
        pytest.raises(ClusterError, match=r"no dask scheduler answers at tcp://127.0.0.1:9 "),
        dead,
    ):
        pass
    assert time.monotonic() - start < 30
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        address = f"tcp://127.0.0.1:{web.server_address[1]}"
        foreign = connect(kind="address", address=address, connect_timeout=3)
        not_dask = r"but (did )?not (greet )?as a dask scheduler"
        with pytest.raises(ClusterError, match=not_dask), foreign:
            pass
    finally:
        web.shutdown()


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("minecube")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_object_storage_failures_are_one_line_naming_the_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS")}
    env |= {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": "/none",
            "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    keys = {"AWS_ACCESS_KEY_ID": "KEYID", "AWS_SECRET_ACCESS_KEY": "SECRET-KEY-9"}
    dead = {**keys, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    cases = [
        (env, "s3://minecube-bucket/cubes.zarr", "no credentials were found.*AWS_ACCESS_KEY_ID"),
        (env | dead, "s3://minecube-bucket/cubes.zarr", "cannot reach the endpoint.*127.0.0.1:9"),
        (env | dead, "s3://Bad_Bucket!/cubes.zarr", "bucket name 'Bad_Bucket!' is invalid"),
        (env | dead, "s3://KEY:s3cr3t@bucket/cubes.zarr", r"holds credentials"),
    ]
    for environment, store, said in cases:
        result = _cli("check", store, env=environment)
        assert result.returncode == 1
        assert re.search(said, result.stderr), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "s3cr3t" not in result.stderr + result.stdout


def test_garbage_files_and_damaged_chunks_are_named_in_one_line(tmp_path):
    from minecube.errors import explain
    from minecube.pretrained import WeightsUnavailableError, read_weights

    garbage = tmp_path / "sites.gpkg"
    garbage.write_bytes(bytes(range(256)) * 8)
    result = CliRunner().invoke(main, ["sites", str(garbage)])
    assert result.exit_code == 1
    assert "cannot read the vector file" in result.output
    assert "ogrinfo" in result.output
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(WeightsUnavailableError, match=r"empty file \(0 bytes\).*copy the weights"):
        read_weights(tmp_path / "empty.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04")  # a zip torch.save began
    with pytest.raises(WeightsUnavailableError, match=r"cannot read encoder weights .*: \S"):
        read_weights(tmp_path / "cut.pt")
    store = tmp_path / "cubes.zarr"
    to_zarr(_cube(), store)
    chunk = _chunk(store, 3)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum") as error:
        open_cube(store, "tiny-pit").reflectance.isel(time=3).load()
    assert "`minecube check STORE` names the array and chunk" in explain(error.value)


# ------------------------------------------------------------------------------------ ids


@pytest.mark.parametrize(
    "site_id",
    ["../../escape", "a/b", "pit#2", "<img src=x onerror=alert(1)>", "", "  ", "zarr.json"],
)
def test_hostile_group_names_are_refused_before_anything_is_written(tmp_path, site_id):
    store = tmp_path / "inside" / "cubes.zarr"
    refused = "is not allowed.*try|give group="  # "" names no group at all
    with pytest.raises(ValueError, match=refused):
        to_zarr(_cube(site_id), store)
    with pytest.raises(ValueError, match=refused):
        segment_to_zarr(_cube(site_id), "no-model", tmp_path / "p.zarr")
    assert list(tmp_path.rglob("*")) == []


# -------------------------------------------------------------------------------- secrets

SECRET = "s3cr3t-T0KEN"


def _files_text(root: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_no_token_from_the_catalogue_url_or_a_signing_hook_reaches_disk_or_messages(
    tiny_world, tiny_site, tmp_path, workers
):
    from minecube import demo
    from minecube.cube import BrokenAssetWarning

    def sign(item):  # like planetary_computer.sign_inplace: a SAS token on every href
        for asset in item.assets.values():
            asset.href = f"{asset.href}?se=2030-01-01&sig={SECRET}"

    out = tmp_path / "out"
    with demo.serve(tiny_world) as server:
        items = search(
            tiny_site, "2022-01-01", "2023-12-31", catalog=f"{server.stac_url}/?token={SECRET}"
        )
        presigned = [i.clone() for i in items]  # items a user signed before handing them over
        for item in presigned:
            sign(item)
        presigned[0].assets["red"].href = (
            presigned[0].assets["red"].href.replace(".tif?", "-gone.tif?")
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cube = build(tiny_site, presigned, composite="year", sign=sign, retries=1)
            to_zarr(cube, out / "cubes.zarr", items=presigned)
        server._processes[0][0].kill()  # an outage: the read error names an href
        server._processes[0][0].wait()
        workers.restart()  # workers whose GDAL cached none of these (tiny) files' bytes
        with pytest.raises(CubeError) as error:  # the lazy cube reads signed hrefs again
            to_zarr(cube, out / "other.zarr")
    messages = [str(w.message) for w in caught] + [str(error.value)]
    assert any(isinstance(w.message, BrokenAssetWarning) for w in caught)
    assert all(SECRET not in m for m in messages), messages
    assert SECRET not in _files_text(out)
    assert "?" not in json.dumps(json.loads(cube.attrs["search"]))


@pytest.mark.slow
def test_a_canary_secret_in_every_url_setting_is_never_written_or_printed(
    world, server, s3, tmp_path
):
    import s3fs
    import yaml

    from minecube.models import save
    from tests.test_segment import _model

    world.sites[world.sites.site_id == "hunter-coal"].to_file(tmp_path / "sites.geojson")
    host = server.stac_url.split("://", 1)[1]
    config = {
        "sites": str(tmp_path / "sites.geojson"),
        "catalog": f"http://canary:{SECRET}@{host}/?token={SECRET}&sig={SECRET}",
        "start": "2022-01-01",
        "end": "2023-12-31",
        "out": str(tmp_path / "run"),
        "stores": f"{s3}/canary",
        "cube": {"composite": "year"},
        "model": str(save(_model(), tmp_path / "model" / "fpn").with_suffix("")),
        "labels": str(world.path / "labels"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    printed = [CliRunner().invoke(main, ["run", str(path)])]
    assert printed[0].exit_code == 0, printed[0].output
    # a store URL with credentials in it, and an unreachable catalogue with a token
    path.write_text(yaml.safe_dump({**config, "stores": f"s3://AKIA:{SECRET}@minecube-test/x"}))
    printed.append(CliRunner().invoke(main, ["run", str(path)]))
    sites = str(tmp_path / "sites.geojson")
    printed.append(CliRunner().invoke(main, [
        "search", sites, "--catalog", f"http://127.0.0.1:9/?token={SECRET}", "--start",
        "2022-01-01", "--end", "2022-12-31", "--out", str(tmp_path / "items"),
    ]))  # fmt: skip
    printed.append(CliRunner().invoke(main, [
        "search", sites, "--catalog", config["catalog"], "--start", "2022-01-01", "--end",
        "2022-12-31", "--out", str(tmp_path / "run" / "items"),
    ]))  # fmt: skip
    assert [p.exit_code for p in printed] == [0, 1, 1, 0], [p.output for p in printed]
    for result in printed:
        assert SECRET not in result.output, result.output
        assert "Traceback" not in result.output
    written = _files_text(tmp_path / "run")
    assert "canary" in _files_text(tmp_path / "run" / "runs")  # the record was searched
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    stored = fs.find(f"{s3}/canary")
    assert any(".minecube/items/" in p for p in stored)
    written += "".join(v.decode("latin-1") for v in fs.cat(stored).values())
    assert SECRET not in written
