"""minecube.store, function by function, on tiny stores: ownership, manifests, digests, leases
and checks, each refusal compared whole. tests/test_faults.py drives the same promises through
to_zarr, segment and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr

from minecube import store as stores
from minecube.store import (
    StoreBusyError,
    StoreError,
    StoreIntegrityError,
    check,
    claim_group,
    claim_store,
    lease,
    read_manifest,
    require_intact,
    require_meta,
    seal,
    verify,
    verify_meta,
)
from tests.conftest import leased, refused

PERIODS = ["2022-01-01", "2022-04-01"]
GROUP = "tiny-pit"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A cube store of one group, two periods of 16 × 16 pixels, written by to_zarr."""
    from minecube.cube import to_zarr
    from tests.test_faults import _cube

    store = tmp_path_factory.mktemp("store") / "cubes.zarr"
    to_zarr(_cube(periods=PERIODS, size=16), store)
    return store


@pytest.fixture
def store(written, tmp_path) -> Path:
    """A copy of the written store, free to damage."""
    copy = tmp_path / "cubes.zarr"
    shutil.copytree(written, copy)
    return copy


def _attributes(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]


# ---------------------------------------------------------------------------- ownership


def test_a_new_path_or_an_empty_folder_becomes_a_store_and_nothing_is_left_beside_it(tmp_path):
    claim_store(tmp_path / "new.zarr", "cubes")
    (tmp_path / "empty.zarr").mkdir()
    claim_store(tmp_path / "empty.zarr", "predictions")
    assert _attributes(tmp_path / "new.zarr") == {"minecube:store": "cubes", "minecube:format": 1}
    assert _attributes(tmp_path / "empty.zarr") == {
        "minecube:store": "predictions",
        "minecube:format": 1,
    }
    before = (tmp_path / "new.zarr" / "zarr.json").read_bytes()
    claim_store(tmp_path / "new.zarr", "cubes")  # its own kind: used as it is
    assert (tmp_path / "new.zarr" / "zarr.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.zarr", "new.zarr"]


def test_what_is_not_a_minecube_store_of_the_kind_is_refused_whole_and_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("field notes")
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "a.tif").write_bytes(b"tiff")
    zarr.open_group(tmp_path / "theirs.zarr", mode="w", zarr_format=3)
    zarr.open_group(tmp_path / "old.zarr", mode="w", zarr_format=2)
    claim_store(tmp_path / "cubes.zarr", "cubes")
    claim_store(tmp_path / "preds.zarr", "predictions")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    cases = {
        ("notes.txt", "cubes"): "is a file, not a Zarr store; choose a new path",
        ("work", "cubes"): (
            "is a folder that holds other files and is not a Zarr store; minecube writes only "
            f"into a new path or its own store: choose a new path (e.g. "
            f"{os.path.join(str(folder), 'cubes.zarr')!r})"
        ),
        ("theirs.zarr", "cubes"): (
            "is a Zarr store that minecube did not write (no 'minecube:store' attribute); "
            "minecube never writes into stores it does not own: choose a new path"
        ),
        ("old.zarr", "predictions"): (
            "is a Zarr v2 store; minecube writes Zarr v3 and never mixes the two: choose a new path"
        ),
        ("cubes.zarr", "predictions"): (
            "is a minecube cubes store; predictions go into a store of their own (e.g. "
            "predictions.zarr), never into a cube store"
        ),
        ("preds.zarr", "cubes"): (
            "is a minecube predictions store; cubes go into a store of their own (e.g. "
            "cubes.zarr), never into a prediction store"
        ),
    }
    for (name, kind), message in cases.items():
        path = str(tmp_path / name)
        assert (
            refused(StoreError, lambda path=path, kind=kind: claim_store(path, kind))
            == f"{path!r} {message}"
        )
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_store_is_never_made_inside_another_at_any_depth(tmp_path):
    claim_store(tmp_path / "cubes.zarr", "cubes")
    zarr.open_group(tmp_path / "v2.zarr", mode="w", zarr_format=2)
    for inner, outer, kind in [
        ("cubes.zarr/p.zarr", "cubes.zarr", "predictions"),
        ("cubes.zarr/site/deeper/p.zarr", "cubes.zarr", "predictions"),
        ("v2.zarr/c.zarr", "v2.zarr", "cubes"),
    ]:
        path = str(tmp_path / inner)
        assert refused(StoreError, lambda path=path, kind=kind: claim_store(path, kind)) == (
            f"{path!r} is inside the Zarr store {str(tmp_path / outer)!r}; a store is never "
            f"made inside another: choose a path outside it (e.g. beside it: "
            f"{str(tmp_path / kind) + '.zarr'!r})"
        )
        assert not (tmp_path / inner).exists()


def test_claim_group_makes_a_manifest_first_and_refuses_groups_it_did_not_write(store, tmp_path):
    claim_store(tmp_path / "p.zarr", "predictions")
    made = claim_group(tmp_path / "p.zarr", "new-site", "predictions")
    assert {k: v for k, v in made.items() if k != "created"} == {
        "format": "minecube-manifest/1",
        "kind": "predictions",
        "group": "new-site",
        "units": {},
        "meta": {},  # sealed before the group exists: the manifest comes first
    }
    assert read_manifest(tmp_path / "p.zarr", "new-site")["units"] == {}
    assert (tmp_path / "p.zarr" / "new-site" / "zarr.json").exists()
    zarr.open_group(store, path="theirs", mode="a").create_array("x", shape=(2,), dtype="i1")
    assert refused(StoreError, lambda: claim_group(store, "theirs", "cubes")) == (
        f"group 'theirs' of {str(store)!r} was not written by minecube (it has no manifest "
        f"{str(store / '.minecube' / 'groups' / 'theirs.json')!r}); minecube never replaces "
        "what it did not write: remove it yourself if it is not needed, or write to another "
        "group or store"
    )
    assert refused(StoreError, lambda: claim_group(store, GROUP, "predictions")) == (
        f"group {GROUP!r} of {str(store)!r} holds a minecube cube, not predictions; write to "
        "another group or store"
    )
    (store / "empty").mkdir()  # an empty folder holds nothing of anyone's
    assert claim_group(store, "empty", "cubes")["units"] == {}


def test_claim_group_removes_only_our_partial_files_and_renews_a_removed_groups_manifest(store):
    partial = store / GROUP / "reflectance" / "c" / "1" / "0" / "0" / "0.partial"
    partial.write_bytes(b"half")
    kept = store / GROUP / "notes.txt"
    kept.write_text("not a partial file")
    recorded = read_manifest(store, GROUP)
    assert claim_group(store, GROUP, "cubes") == recorded
    assert not partial.exists()
    assert kept.exists()
    shutil.rmtree(store / GROUP)
    renewed = claim_group(store, GROUP, "cubes")
    assert renewed["units"] == {}
    assert renewed["created"] >= recorded["created"]


# ------------------------------------------------------------------------- digests


def test_seal_records_metadata_coordinates_and_the_time_axis_values(written):
    sealed = seal(written, GROUP)
    assert sorted(sealed) == [
        "band/c/0", "band/zarr.json", "reflectance/zarr.json", "spatial_ref/c",
        "spatial_ref/zarr.json", "time/values", "time/zarr.json", "valid_count/zarr.json",
        "x/c/0", "x/zarr.json", "y/c/0", "y/zarr.json", "zarr.json",
    ]  # fmt: skip
    assert sealed["time/values"] == [0, 90]  # days since 2022-01-01: 1 January and 1 April
    chunk = (written / GROUP / "x" / "c" / "0").read_bytes()
    assert sealed["x/c/0"] == hashlib.sha256(chunk).hexdigest()[:32]
    assert seal(written, "no-such-group") == {}
    assert read_manifest(written, GROUP)["meta"] == sealed  # write_manifest sealed the group


def test_a_digest_ignores_group_attributes_and_the_time_axis_length_only():
    root = {"zarr_format": 3, "node_type": "group", "attributes": {"sensor": "s2"}}
    assert stores._normal_meta("zarr.json", root) == b'{"node_type": "group", "zarr_format": 3}'
    timed = {"node_type": "array", "shape": [4, 16], "dimension_names": ["time", "x"]}
    assert json.loads(stores._normal_meta("v/zarr.json", timed))["shape"] == [None, 16]
    other = {"node_type": "array", "shape": [4, 16], "dimension_names": ["y", "x"],
             "attributes": {"units": "1"}}  # fmt: skip
    assert json.loads(stores._normal_meta("v/zarr.json", other)) == other
    assert stores._normal_meta("v/zarr.json", {"node_type": "array", "shape": [3]}) == (
        b'{"node_type": "array", "shape": [3]}'
    )
    assert timed["shape"] == [4, 16]
    assert "attributes" in root
    assert stores._digest(b"abc") == "ba7816bf8f01cfea414140de5dae2223"  # SHA-256's test vector


def test_verify_meta_names_each_changed_or_missing_file_and_rewritten_time_values(store):
    manifest = read_manifest(store, GROUP)
    assert verify_meta(store, GROUP, manifest) == []
    assert verify_meta(store, GROUP, {"units": {}}) == []  # a manifest of before digests
    zarr.open_group(store, path=GROUP, mode="a").attrs["note"] = "appended"  # attributes: free
    assert verify_meta(store, GROUP, manifest) == []
    meta = json.loads((store / GROUP / "x" / "zarr.json").read_text())
    meta["attributes"]["units"] = "feet"
    (store / GROUP / "x" / "zarr.json").write_text(json.dumps(meta))
    (store / GROUP / "y" / "c" / "0").unlink()
    assert verify_meta(store, GROUP, manifest) == [
        "'x/zarr.json' was changed since minecube wrote it",
        "'y/c/0' is missing",
    ]
    zarr.open_array(store, path=f"{GROUP}/time", mode="a")[:] = [0, 91]
    assert verify_meta(store, GROUP, manifest)[-1] == (
        "the values of 'time' differ from those minecube wrote (a chunk of time/c/ was removed "
        "or re-encoded)"
    )
    (store / GROUP / "time" / "zarr.json").unlink()  # the axis cannot be read at all
    assert "the values of 'time' differ" in verify_meta(store, GROUP, manifest)[-1]


def test_a_time_axis_may_grow_but_its_recorded_values_may_not_change(store):
    manifest = read_manifest(store, GROUP)
    time_axis = zarr.open_array(store, path=f"{GROUP}/time", mode="a")
    time_axis.resize((3,))
    time_axis[:] = [0, 90, 181]  # an append: what was recorded, then more
    assert verify_meta(store, GROUP, manifest) == []  # its length is not in the digest
    time_axis[:] = [90, 181, 272]  # the recorded values shifted
    assert verify_meta(store, GROUP, manifest) == [
        "the values of 'time' differ from those minecube wrote (a chunk of time/c/ was removed "
        "or re-encoded)"
    ]


# ------------------------------------------------------------------------ chunks


def test_verify_names_missing_and_truncated_chunks_of_each_whole_unit(store):
    manifest = read_manifest(store, GROUP)
    assert verify(store, GROUP, manifest) == {}
    (store / GROUP / "valid_count" / "c" / "1" / "0" / "0").unlink()
    shard = store / GROUP / "reflectance" / "c" / "0" / "0" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:20])
    size = manifest["units"]["2022-01-01"]["chunks"]["reflectance/c/0/0/0/0"]
    assert verify(store, GROUP, manifest) == {
        "2022-01-01": [f"chunk 'reflectance/c/0/0/0/0' is 20 bytes, {size} were written"],
        "2022-04-01": ["chunk 'valid_count/c/1/0/0' is missing"],
    }
    fix = "Run the same call again to repair it."
    assert refused(StoreIntegrityError, lambda: require_intact(store, GROUP, manifest, fix)) == (
        f"group {GROUP!r} of {str(store)!r} is damaged: 2022-01-01: chunk "
        f"'reflectance/c/0/0/0/0' is 20 bytes, {size} were written | 2022-04-01: chunk "
        f"'valid_count/c/1/0/0' is missing. {fix}"
    )


def test_require_intact_lists_five_units_then_counts_the_rest(store):
    manifest = read_manifest(store, GROUP)
    units = {f"2030-0{m}-01": {"chunks": {f"valid_count/c/{m}/0/0": 1}} for m in range(2, 9)}
    manifest["units"] = units
    message = refused(StoreIntegrityError, lambda: require_intact(store, GROUP, manifest, "Fix."))
    listed = " | ".join(f"2030-0{m}-01: chunk 'valid_count/c/{m}/0/0' is missing" for m in
                        range(2, 7))  # fmt: skip
    assert message == f"group {GROUP!r} of {str(store)!r} is damaged: {listed} | … and 2 more. Fix."
    manifest["units"] = dict(list(units.items())[:5])
    assert refused(StoreIntegrityError, lambda: require_intact(store, GROUP, manifest, "Fix.")) == (
        f"group {GROUP!r} of {str(store)!r} is damaged: {listed}. Fix."
    )


def test_changed_metadata_comes_first_and_a_removed_group_is_named(store):
    manifest = read_manifest(store, GROUP)
    (store / GROUP / "band" / "c" / "0").unlink()
    (store / GROUP / "valid_count" / "c" / "0" / "0" / "0").unlink()
    assert refused(StoreIntegrityError, lambda: require_intact(store, GROUP, manifest, "Fix.")) == (
        f"group {GROUP!r} of {str(store)!r} is damaged: metadata and coordinates: 'band/c/0' is "
        "missing | 2022-01-01: chunk 'valid_count/c/0/0/0' is missing. Fix."
    )
    assert refused(StoreIntegrityError, lambda: require_meta(store, GROUP, manifest, "Fix.")) == (
        f"the metadata or coordinates of group {GROUP!r} of {str(store)!r} were changed or "
        "removed since minecube wrote them ('band/c/0' is missing). Fix."
    )
    shutil.rmtree(store / GROUP)
    assert refused(StoreIntegrityError, lambda: require_intact(store, GROUP, manifest, "Fix.")) == (
        f"{str(store)!r}: group {GROUP!r} is missing: its manifest records 2 units, but the store "
        f"has no group {GROUP!r} (or its zarr.json); build it again"
    )


def test_listing_and_unit_chunks_leave_out_partial_files_and_other_units(written):
    files = stores.listing(written, GROUP)
    assert files["x/c/0"] == (written / GROUP / "x" / "c" / "0").stat().st_size
    assert stores.listing(written, "no-such-group") == {}
    listed = {"a/c/0/0": 5, "a/c/0/1": 6, "a/c/0/2.partial": 2, "a/c/1/0": 7, "b/c/0": 1}
    assert stores.unit_chunks(listed, ["a/c/0/", "b/c/0"]) == {"a/c/0/0": 5, "a/c/0/1": 6,
                                                                "b/c/0": 1}  # fmt: skip
    assert stores.chunk_keys("reflectance", (2, 0, 1, 3)) == "reflectance/c/2/0/1/3"


def test_clear_group_keeps_a_fresh_sealed_manifest_and_an_empty_group(store):
    manifest = read_manifest(store, GROUP)
    fresh = stores.clear_group(store, GROUP, manifest)
    assert set(fresh) == {"format", "kind", "group", "created", "units", "replaced", "meta"}
    assert (fresh["created"], fresh["units"]) == (manifest["created"], {})
    assert sorted(p.name for p in (store / GROUP).iterdir()) == ["zarr.json"]
    assert fresh["meta"] == {"zarr.json": seal(store, GROUP)["zarr.json"]}
    assert read_manifest(store, GROUP)["units"] == {}


# ------------------------------------------------------------------------- check


def test_check_reads_every_recorded_chunk_and_says_so(written):
    report = check(written)
    assert report.ok
    assert str(report) == (
        f"{written}: minecube cubes store, 1 groups\n"
        f"  {GROUP}: 2 whole, 0 degraded, 4 chunks read: ok"
    )
    assert str(check(written, read=False)).endswith("0 chunks read: ok")


def test_check_names_a_group_without_manifest_a_manifest_without_group_and_bad_chunks(store):
    zarr.open_group(store, path="theirs", mode="a")
    manifest = read_manifest(store, GROUP) | {"group": "gone"}
    manifest["units"]["2022-04-01"]["status"] = "degraded"
    stores._write_json(stores._fs(store)[0], stores.manifest_path(store, "gone"), manifest)
    shard = store / GROUP / "valid_count" / "c" / "1" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only reading it can tell
    shard.write_bytes(bytes(data))
    report = check(store)
    assert not report.ok
    lines = str(report).splitlines()
    assert lines[:6] == [
        f"{store}: minecube cubes store, 3 groups",
        "  gone: 1 whole, 1 degraded, 0 chunks read: 1 problems",
        "    group 'gone' is missing: its manifest records 2 units, but the store has no group "
        "'gone' (or its zarr.json); build it again",
        "  theirs: 0 whole, 0 degraded, 0 chunks read: 1 problems",
        f"    group 'theirs' has no manifest ({stores.manifest_path(store, 'theirs')}): it was "
        "not written by minecube",
        f"  {GROUP}: 2 whole, 0 degraded, 4 chunks read: 1 problems",
    ]
    assert lines[6].startswith("    2022-04-01: chunk 'valid_count/c/1/0/0' cannot be read (")
    assert len(lines) == 7
    assert refused(StoreError, lambda: check(store / GROUP)) == (
        f"{str(store / GROUP)!r} is not a store written by minecube"
    )


# ------------------------------------------------------------------------- leases


def _holder(pid: int, *, since: float, renewed: float, host: str | None = None) -> dict:
    return {"host": host or socket.gethostname(), "pid": pid, "token": "theirs",
            "since": since, "renewed": renewed}  # fmt: skip


@pytest.fixture
def auckland(monkeypatch):
    """The local time zone of a user far from UTC (+13:00 in January)."""
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_live_lease_is_refused_naming_its_holder_and_ages(store, monkeypatch, auckland):
    now = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, 21:00 in Auckland
    monkeypatch.setattr(stores.time, "time", lambda: now)
    path = leased(store, _holder(os.getpid(), since=now - 42, renewed=now - 7))
    before = path.read_bytes()
    message = refused(StoreBusyError, lambda: lease(store, GROUP).__enter__())
    assert message == (
        f"group {GROUP!r} of {store} is being written by another process (pid {os.getpid()} on "
        f"{socket.gethostname()}, since 2027-01-15 07:59:18 UTC, 42 s ago; renewed 7 s ago). "
        "Wait for it to finish and run again (what it wrote is then reused), or write to "
        "another store; the lease of a writer that died is taken over once its process is gone "
        "or after 300 s"
    )
    assert path.read_bytes() == before  # never taken from the living
    other_host = _holder(1, since=now - 10, renewed=now - stores.STALE_AFTER, host="elsewhere")
    leased(store, other_host)  # silent for exactly the limit: still alive
    with pytest.raises(StoreBusyError, match="pid 1 on elsewhere"):
        lease(store, GROUP).__enter__()


def test_a_dead_writers_lease_is_taken_over_and_ours_is_removed_at_the_end(store):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    now = time.time()
    cases = [
        _holder(int(gone.stdout), since=now, renewed=now),  # its process is gone
        _holder(1, since=now - 900, renewed=now - 301, host="elsewhere"),  # silent too long
    ]
    for holder in cases:
        path = leased(store, holder)
        with lease(store, GROUP):
            mine = json.loads(path.read_text())
            assert (mine["pid"], mine["host"]) == (os.getpid(), socket.gethostname())
            assert mine["token"] != "theirs"
        assert not path.exists()


def test_a_lease_without_its_times_or_pid_is_judged_not_refused(store):
    assert stores._dead({"host": "elsewhere", "pid": 1}, 300)  # never renewed: long silent
    here = {"host": socket.gethostname(), "renewed": time.time()}
    assert not stores._dead(here, 300)  # no pid to look for: only its silence can tell


def test_a_live_process_is_alive_whatever_its_name_and_is_only_asked(tmp_path):
    named = tmp_path / "pit) Z (x"  # a name with the brackets and state letter of /proc's stat
    named.symlink_to(sys.executable)
    child = subprocess.Popen(  # SIGHUP's default restored: a stray signal would end it
        [str(named), "-c", "import signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
         "sys.stdin.read()"], stdin=subprocess.PIPE)  # fmt: skip
    try:
        with open(f"/proc/{child.pid}/stat") as f:
            while "pit) Z (x" not in f.read():  # until the interpreter runs under its name
                f.seek(0)
        assert stores._alive(child.pid)
        assert child.poll() is None  # asked with signal 0, not signalled
    finally:
        child.communicate(b"")


def test_a_process_that_cannot_be_signalled_or_read_is_taken_as_alive(monkeypatch):
    def not_yours(pid, signal):  # another user's process: it exists, but may not be signalled
        raise PermissionError(1, "Operation not permitted")

    with monkeypatch.context() as m:
        m.setattr(stores.os, "kill", not_yours)
        assert stores._alive(1)

    def no_proc(path, *args, **kwargs):  # a system without /proc
        raise FileNotFoundError(path)

    monkeypatch.setattr(stores, "open", no_proc, raising=False)
    assert stores._alive(os.getpid())


def test_a_zombie_or_reaped_process_is_not_alive():
    assert stores._alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while True:  # exited but not reaped: a zombie
        try:
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.01)
    assert not stores._alive(child.pid)
    child.wait()
    assert not stores._alive(child.pid)


def test_an_exclusive_create_succeeds_once(tmp_path):
    fs = stores._fs(tmp_path)[0]
    path = f"{tmp_path}/deep/lease.json"
    assert stores._create(fs, path, b"first")
    assert not stores._create(fs, path, b"second")
    assert Path(path).read_bytes() == b"first"
    assert sorted(p.name for p in Path(path).parent.iterdir()) == ["lease.json"]  # no staging
