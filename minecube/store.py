"""The Zarr stores minecube writes: who owns a group, when it is whole, and whether it is intact.

A store says what it holds in its root attributes (``minecube:store``: ``"cubes"`` or
``"predictions"``), and everything minecube needs to trust it lives inside it, in the folder
``<store>/.minecube/`` that Zarr tools pass over (it holds no ``zarr.json``; zarr-python lists
it with a ``ZarrUserWarning``, which minecube silences for that folder only). A store copied as
Zarr stores are copied (``cp -r``, ``aws s3 sync``) is whole:

- ``groups/<group>.json``: each group's **manifest**: the group's kind, which periods (cubes)
  or regions (predictions) are whole, the byte size of every chunk each of them wrote, and a
  digest of every ``zarr.json`` and coordinate chunk of the group (:func:`verify_meta`);
- ``items/<group>.json``: the STAC items a cube was built from, frozen;
- ``leases/<group>.json``: the **lease** of the process writing the group (:func:`lease`);
- ``regions/<group>/``: segment's marks of regions written before the manifest records them.

Stores of the earlier layout (``<store>.minecube/`` and ``<store>.items/`` beside the store)
are read as they are and moved inside on the first write (:func:`claim_store`).

The manifest is the completion record: it is replaced in one atomic step (a rename on a local
disk, a single PUT on object storage) only after the data it describes are written, so a
process killed at any instant leaves a store that opens with exactly the units that are whole.

Two writers of one group exclude each other: a writer takes the group's lease by an exclusive
create (a hard link on a local disk, a PUT with ``If-None-Match: *`` on object storage), renews
it while it writes and removes it when done. A second writer is refused (:class:`StoreBusyError`)
naming the holder and its age; the lease of a writer that died (its process is gone from this
host, or it was not renewed for :data:`STALE_AFTER` seconds) is taken over.

Why a manifest rather than the alternatives: group attributes are rewritten by every xarray
write (the record vanished for a moment on each append), and Zarr's local store does not replace
``zarr.json`` atomically; a transactional store (Icechunk) makes a commit the completion, but
ties every reader to one more format and library, and writes from many dask workers then need
session merges. A manifest keeps the store a plain Zarr v3 store that any tool opens.

Chunks are written with a ``crc32c`` checksum (Zarr v3's codec) and with empty chunks kept, so
every unit has a known set of chunk files: a missing or truncated one is found by a listing and
named (:func:`verify`), a corrupted one fails its checksum when read (:func:`check`).

What minecube did not write it never replaces: a writer claims a store and a group first
(:func:`claim_store`, :func:`claim_group`) and refuses a foreign folder, a Zarr store of someone
else's, a group without a manifest, or a group of the other kind, naming it and the way out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import socket
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from minecube.errors import MinecubeError

__all__ = [
    "MANIFEST",
    "STALE_AFTER",
    "StoreBusyError",
    "StoreCheck",
    "StoreError",
    "StoreIntegrityError",
    "check",
    "claim_group",
    "claim_store",
    "lease",
    "read_manifest",
]

Kind = Literal["cubes", "predictions"]
MANIFEST = ".minecube"
"""The folder inside a store that holds its manifests, frozen items and leases (and, in the
earlier layout, the suffix of a folder beside it)."""
STALE_AFTER = 300.0
"""Seconds after which a lease that was not renewed is a dead writer's (renewed every 30 s)."""
_RENEW_EVERY = 30.0
_FORMAT = "minecube-manifest/1"
_GROUP_KIND = {"cubes": "cube", "predictions": "predictions"}


class StoreError(MinecubeError, ValueError):
    """A store or group is not minecube's to write, or not of the kind asked for."""


class StoreIntegrityError(MinecubeError, OSError):
    """A chunk that a manifest records is missing, truncated or corrupt."""


class StoreBusyError(StoreError):
    """Another process is writing the group (it holds the group's lease)."""


warnings.filterwarnings(  # minecube's own folder in its stores, not a Zarr node
    "ignore", message=r"Object at \.minecube is not recognized", category=UserWarning
)


def _is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an fsspec URL (``s3://…``, ``file://…``) rather than a plain path."""
    return "://" in os.fspath(path)


def _fs(store: str | os.PathLike):
    """(fsspec filesystem, path) of a store given as a local path or a URL."""
    import fsspec

    text = os.fspath(store)
    if not _is_url(text):
        return fsspec.filesystem("file"), str(Path(text).absolute())
    fs, path = fsspec.core.url_to_fs(text)
    return fs, path.rstrip("/")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _read_json(fs, path: str) -> dict | None:
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def _write_json(fs, path: str, value: dict) -> None:
    """Replace ``path`` with ``value`` in one step: readers see the old file or the new one."""
    data = json.dumps(value, indent=1).encode()
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        os.replace(_staged(path, data), path)
    else:  # object storage: a single PUT is atomic
        fs.pipe_file(path, data)


def _staged(path: str, data: bytes) -> str:
    """``data`` written and synced to a new file beside ``path``, to be put in place in one
    step (a rename or a hard link); its path."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def claim_store(store: str | os.PathLike, kind: Kind) -> None:
    """Make ``store`` a minecube store of ``kind``, or refuse if it is something else.

    A path that does not exist, or an empty folder, becomes a new Zarr v3 store of ``kind``; a
    minecube store of the same kind is used as it is. Anything else (a folder of other files,
    someone else's Zarr store, a Zarr v2 store, a minecube store of the other kind) is refused
    with a :class:`StoreError` and left untouched.
    """
    import zarr

    fs, root = _fs(store)
    name = os.fspath(store)
    if fs.exists(root):
        if fs.isfile(root):
            raise StoreError(f"{name!r} is a file, not a Zarr store; choose a new path")
        meta = _read_json(fs, f"{root}/zarr.json")
        if meta is not None:
            own = meta.get("attributes", {}).get("minecube:store")
            if own == kind:
                _migrate(fs, root)  # a store of the earlier layout: its files moved inside
                return
            if own:
                other = "cube" if kind == "predictions" else "prediction"
                raise StoreError(
                    f"{name!r} is a minecube {own} store; {kind} go into a store of their own "
                    f"(e.g. {'predictions.zarr' if kind == 'predictions' else 'cubes.zarr'}), "
                    f"never into a {other} store"
                )
            raise StoreError(
                f"{name!r} is a Zarr store that minecube did not write (no 'minecube:store' "
                "attribute); minecube never writes into stores it does not own: choose a new path"
            )
        if any(fs.exists(f"{root}/{k}") for k in (".zgroup", ".zarray", ".zattrs")):
            raise StoreError(
                f"{name!r} is a Zarr v2 store; minecube writes Zarr v3 and never mixes the two: "
                "choose a new path"
            )
        if fs.ls(root, detail=False):
            raise StoreError(
                f"{name!r} is a folder that holds other files and is not a Zarr store; minecube "
                "writes only into a new path or its own store: choose a new path (e.g. "
                f"{os.path.join(name, kind + '.zarr')!r})"
            )
    _refuse_nested(fs, root, name, kind)
    attributes = {"minecube:store": kind, "minecube:format": 1}
    from fsspec.implementations.local import LocalFileSystem

    if not isinstance(fs, LocalFileSystem):  # object storage: zarr.json is one PUT
        zarr.open_group(store, mode="a", zarr_format=3, attributes=attributes)
        return
    # a new local store appears whole or not at all: made beside its path, then renamed
    staging = f"{root}.{uuid.uuid4().hex}.creating"
    zarr.open_group(staging, mode="w", zarr_format=3, attributes=attributes)
    try:
        if fs.exists(root):  # an empty folder the user made for it
            os.rmdir(root)
        os.rename(staging, root)
    except OSError:  # another process made it first: use it if it is ours, else refuse
        fs.rm(staging, recursive=True)
        if (_read_json(fs, f"{root}/zarr.json") or {}).get("attributes", {}).get(
            "minecube:store"
        ) != kind:
            raise


def _refuse_nested(fs, root: str, name: str, kind: Kind) -> None:
    """Refuse a new store inside a Zarr store (``cubes.zarr/preds.zarr``): writing there would
    add a group to that store, or break it."""
    parent = root.rsplit("/", 1)[0]
    while parent and parent != root:
        if fs.exists(f"{parent}/zarr.json") or fs.exists(f"{parent}/.zgroup"):
            raise StoreError(
                f"{name!r} is inside the Zarr store {parent!r}; a store is never made inside "
                f"another: choose a path outside it (e.g. beside it: "
                f"{parent.rsplit('/', 1)[0] + '/' + kind + '.zarr'!r})"
            )
        root, parent = parent, parent.rsplit("/", 1)[0]


def _inside(store: str | os.PathLike, *parts: str) -> str:
    """A path in the store's own folder: ``<store>/.minecube/<parts>``."""
    return "/".join([_fs(store)[1], MANIFEST, *parts])


def manifest_path(store: str | os.PathLike, group: str) -> str:
    """Where a group's manifest lives: ``<store>/.minecube/groups/<group>.json``."""
    return _inside(store, "groups", f"{group}.json")


def items_path(store: str | os.PathLike, group: str) -> str:
    """Where a cube's frozen items live: ``<store>/.minecube/items/<group>.json``."""
    return _inside(store, "items", f"{group}.json")


def marks_path(store: str | os.PathLike, group: str) -> str:
    """Where segment marks the regions of a group it has written: a folder."""
    return _inside(store, "regions", group)


def _old_layout(fs, root: str) -> dict[str, str]:
    """{old path: new path} of what the earlier layout keeps beside a store (manifests,
    regions' marks in ``<store>.minecube/``, frozen items in ``<store>.items/``): only the
    files minecube wrote there."""
    moves = {}
    for folder, kind in ((f"{root}{MANIFEST}", "groups"), (f"{root}.items", "items")):
        if not fs.isdir(folder):
            continue
        for path in fs.find(folder):
            rel = path[len(folder) + 1 :]
            group, _, rest = rel.partition(".regions/")
            if kind == "groups" and rest:
                moves[path] = f"{root}/{MANIFEST}/regions/{group}/{rest}"
            elif rel.endswith(".json") and "/" not in rel:
                moves[path] = f"{root}/{MANIFEST}/{kind}/{rel}"
    return moves


def _migrate(fs, root: str) -> None:
    """Move a store of the earlier layout's files inside it, each in one step (a rename on a
    local disk), manifests last; the old folders go when nothing else is left in them."""
    moves = _old_layout(fs, root)
    for old, new in sorted(moves.items(), key=lambda m: "/groups/" in m[1]):
        if fs.exists(new):  # moved by a migration that was killed before removing the old
            fs.rm(old)
            continue
        fs.makedirs(new.rsplit("/", 1)[0], exist_ok=True)
        fs.mv(old, new)
    for folder in (f"{root}{MANIFEST}", f"{root}.items"):
        if fs.isdir(folder) and not fs.find(folder):
            fs.rm(folder, recursive=True)


def read_manifest(store: str | os.PathLike, group: str) -> dict | None:
    """A group's manifest, or None when the group has none (minecube did not write it).

    A store of the earlier layout (manifests beside it) is read as it is.
    """
    fs, root = _fs(store)
    found = _read_json(fs, manifest_path(store, group))
    if found is None:
        found = _read_json(fs, f"{root}{MANIFEST}/{group}.json")
    return found


def manifests(store: str | os.PathLike) -> list[str]:
    """The groups that have a manifest in the store (or beside it, in the earlier layout)."""
    fs, root = _fs(store)
    found = set()
    for folder in (f"{root}/{MANIFEST}/groups", f"{root}{MANIFEST}"):
        if fs.isdir(folder):
            found |= {
                p.rsplit("/", 1)[1].removesuffix(".json")
                for p in fs.ls(folder, detail=False)
                if p.endswith(".json")
            }
    return sorted(found)


def write_manifest(store: str | os.PathLike, group: str, manifest: dict) -> None:
    """Replace a group's manifest atomically (after the data it records are written), with a
    fresh digest of the group's metadata and coordinates (:func:`seal`)."""
    fs, _ = _fs(store)
    path = manifest_path(store, group)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    manifest["meta"] = seal(store, group)
    _write_json(fs, path, {**manifest, "updated": _now()})


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _normal_meta(rel: str, meta: dict) -> bytes:
    """A ``zarr.json`` as the manifest records it: without the group's attributes (appends and
    degraded periods rewrite them; the settings that define a unit are compared apart) and
    without the length of a time axis (it grows with each append, before the manifest does)."""
    meta = dict(meta)
    if rel == "zarr.json":
        meta.pop("attributes", None)
    elif meta.get("node_type") == "array" and (meta.get("dimension_names") or [None])[0] == "time":
        meta["shape"] = [None, *meta["shape"][1:]]
    return json.dumps(meta, sort_keys=True).encode()


def seal(store: str | os.PathLike, group: str) -> dict:
    """Digests of a group's metadata and coordinates: every ``zarr.json`` (see
    :func:`_normal_meta`), every chunk of its 0- and 1-dimensional arrays (y, x, band,
    spatial_ref) and, for a time axis (whose last chunk an append rewrites), its stored values
    (``"time/values"``: an append may only add to them)."""
    fs, root = _fs(store)
    base = f"{root}/{group}/"
    try:
        files = sorted(fs.find(base))
    except FileNotFoundError:
        return {}
    rels = [p[len(base) :] for p in files if not p.endswith(".partial")]
    metas = [r for r in rels if r == "zarr.json" or r.endswith("/zarr.json")]
    read = fs.cat([base + r for r in metas]) if metas else {}  # {path: bytes}, concurrently
    sealed, coords, axes = {}, [], []
    for rel in metas:
        meta = json.loads(read[base + rel])
        sealed[rel] = _digest(_normal_meta(rel, meta))
        if meta.get("node_type") == "array" and len(meta.get("shape", ())) <= 1:
            name = rel.removesuffix("/zarr.json")
            (axes if meta.get("dimension_names") == ["time"] else coords).append(name)
    chunks = [r for r in rels if any(r.startswith(f"{c}/c") for c in coords)]
    data = fs.cat([base + r for r in chunks]) if chunks else {}
    sealed |= {r: _digest(data[base + r]) for r in chunks}
    return sealed | {f"{a}/values": _axis_values(store, group, a) for a in axes}


def _axis_values(store, group: str, name: str) -> list | None:
    """The raw stored values of a 1-D array (None when it cannot be read)."""
    import zarr

    try:
        return zarr.open_array(store, path=f"{group}/{name}", mode="r")[:].tolist()
    except Exception:  # a missing chunk or metadata file: reported by the digests
        return None


def verify_meta(store: str | os.PathLike, group: str, manifest: dict) -> list[str]:
    """What differs between a group's metadata and coordinates and the manifest's digests:
    ["'time/c/1' is missing", "'x/zarr.json' was changed", …]. A manifest of before digests
    were recorded gives nothing."""
    recorded = manifest.get("meta")
    if not recorded:
        return []
    found = seal(store, group)
    problems = []
    for key, digest in recorded.items():
        now = found.get(key)
        if key.endswith("/values"):  # a time axis: what was recorded, then maybe more
            if digest is not None and (now is None or now[: len(digest)] != digest):
                axis = key.removesuffix("/values")
                problems.append(f"the values of {axis!r} differ from those minecube wrote "
                                f"(a chunk of {axis}/c/ was removed or re-encoded)")  # fmt: skip
        elif now is None:
            problems.append(f"{key!r} is missing")
        elif now != digest:
            problems.append(f"{key!r} was changed since minecube wrote it")
    return problems


def claim_group(store: str | os.PathLike, group: str, kind: Kind) -> dict:
    """The manifest of ``group`` if minecube wrote it as ``kind``; a new one for a new group.

    The manifest of a new group is written before the group itself, so a group that exists
    without a manifest was never minecube's. Refuses (:class:`StoreError`) a group that exists
    without a manifest or holds the other kind. The store must be claimed first
    (:func:`claim_store`; :func:`writing` does both, with the group's lease between).
    """
    import zarr

    fs, root = _fs(store)
    name = os.fspath(store)
    manifest = read_manifest(store, group)
    exists = fs.exists(f"{root}/{group}")
    if manifest is None and exists and fs.ls(f"{root}/{group}", detail=False):
        raise StoreError(
            f"group {group!r} of {name!r} was not written by minecube (it has no manifest "
            f"{manifest_path(store, group)!r}); "
            "minecube never replaces what it did not write: remove it yourself if it is not "
            "needed, or write to another group or store"
        )
    if manifest is not None:
        if manifest.get("kind") != _GROUP_KIND[kind]:
            raise StoreError(
                f"group {group!r} of {name!r} holds a minecube {manifest.get('kind')}, not "
                f"{_GROUP_KIND[kind]}; write to another group or store"
            )
        if exists:  # files a killed write of ours left half-written, never put in place
            for leftover in fs.find(f"{root}/{group}"):
                if leftover.endswith(".partial"):
                    fs.rm(leftover)
            return manifest
        # the group was removed (or never made): what its manifest records is gone
    manifest = {
        "format": _FORMAT,
        "kind": _GROUP_KIND[kind],
        "group": group,
        "created": _now(),
        "units": {},
    }
    write_manifest(store, group, manifest)
    zarr.open_group(store, path=group, mode="a", zarr_format=3)
    return manifest


def _holder() -> dict:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "since": now, "renewed": now}  # fmt: skip


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _dead(holder: dict, stale_after: float) -> bool:
    """Whether a lease's writer is gone: not renewed for ``stale_after`` seconds, or a
    process of this host that no longer runs."""
    if time.time() - float(holder.get("renewed", 0)) > stale_after:
        return True
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0)))


def _create(fs, path: str, data: bytes) -> bool:
    """Write ``path`` only if it does not exist, in one step; whether this call made it."""
    from fsspec.implementations.local import LocalFileSystem

    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if isinstance(fs, LocalFileSystem):  # a hard link appears whole, and only once
        tmp = _staged(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
    try:  # object storage: a conditional PUT (If-None-Match: *)
        fs.pipe_file(path, data, mode="create")
        return True
    except (FileExistsError, OSError) as e:
        if isinstance(e, FileExistsError) or "PreconditionFailed" in str(e) or "412" in str(e):
            return False
        raise


def _busy(store, group: str, holder: dict) -> StoreBusyError:
    from minecube.stac import redact

    since = dt.datetime.fromtimestamp(float(holder["since"]), dt.UTC)
    age = time.time() - float(holder["since"])
    renewed = time.time() - float(holder["renewed"])
    return StoreBusyError(
        f"group {group!r} of {redact(os.fspath(store))} is being written by another process "
        f"(pid {holder.get('pid')} on {holder.get('host')}, since {since:%Y-%m-%d %H:%M:%S} "
        f"UTC, {age:.0f} s ago; renewed {renewed:.0f} s ago). Wait for it to finish and run "
        "again (what it wrote is then reused), or write to another store; the lease of a "
        f"writer that died is taken over once its process is gone or after {STALE_AFTER:.0f} s"
    )


@contextlib.contextmanager
def lease(store: str | os.PathLike, group: str, *, stale_after: float = STALE_AFTER):
    """Hold the write lease of ``group`` for a ``with`` block, or refuse if another process
    holds it.

    The lease is a file of the store (``.minecube/leases/<group>.json``) made by an exclusive
    create, renewed every 30 s by a thread while the block runs, and removed at its end. A lease
    whose writer is gone (its process no longer runs on this host, or it was not renewed for
    ``stale_after`` seconds) is taken over.

    Raises
    ------
    StoreBusyError
        Naming the holder (host, pid) and the lease's age.

    Examples
    --------
    >>> with lease("/tmp/tiny-lease.zarr", "site-a"):
    ...     with lease("/tmp/tiny-lease.zarr", "site-a"):
    ...         pass
    Traceback (most recent call last):
    ...
    minecube.store.StoreBusyError: group 'site-a' of /tmp/tiny-lease.zarr is being written ...
    """
    fs, _ = _fs(store)
    path = _inside(store, "leases", f"{group}.json")
    me = _holder()
    for _ in range(3):
        if _create(fs, path, json.dumps(me).encode()):
            break
        holder = _read_json(fs, path)
        if holder is None:  # released meanwhile
            continue
        if not _dead(holder, stale_after):
            raise _busy(store, group, holder)
        if (_read_json(fs, path) or {}).get("token") == holder.get("token"):
            fs.rm(path)  # a dead writer's: taken over
    else:
        raise _busy(store, group, _read_json(fs, path) or me)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(_RENEW_EVERY):
            if (_read_json(fs, path) or {}).get("token") == me["token"]:
                _write_json(fs, path, {**me, "renewed": time.time()})

    thread = threading.Thread(target=renew, name=f"minecube-lease-{group}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(FileNotFoundError):
            if (_read_json(fs, path) or {}).get("token") == me["token"]:
                fs.rm(path)


def clear_group(store: str | os.PathLike, group: str, manifest: dict) -> dict:
    """Empty a group minecube wrote (its manifest says so), keeping a fresh manifest first.

    The fresh manifest (no unit complete) replaces the old one before anything is removed, so a
    kill part-way leaves a group that is still minecube's and holds nothing whole.
    """
    import zarr

    fs, root = _fs(store)
    fresh = {k: v for k, v in manifest.items() if k in ("format", "kind", "group", "created")}
    fresh |= {"units": {}, "replaced": _now()}
    _write_json(fs, manifest_path(store, group), fresh)  # no digests: the group is going
    if fs.exists(f"{root}/{group}"):
        fs.rm(f"{root}/{group}", recursive=True)
    zarr.open_group(store, path=group, mode="a", zarr_format=3)
    write_manifest(store, group, fresh)  # sealed: the empty group
    return fresh


def listing(store: str | os.PathLike, group: str) -> dict[str, int]:
    """Every file under a group, as {path inside the group: bytes}."""
    fs, root = _fs(store)
    base = f"{root}/{group}/"
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    return {p[len(base) :] if p.startswith(base) else p: int(v["size"]) for p, v in found.items()}


def chunk_keys(array: str, index: tuple[int, ...]) -> str:
    """A chunk's key inside its group (Zarr v3's default ``c/`` encoding)."""
    return f"{array}/c/" + "/".join(map(str, index))


def unit_chunks(files: dict[str, int], prefixes: list[str]) -> dict[str, int]:
    """The chunk files (and their sizes) under each of ``prefixes`` from a :func:`listing`;
    not the ``.partial`` files a killed Zarr write leaves behind."""
    return {
        k: v
        for k, v in files.items()
        if any(k.startswith(p) for p in prefixes) and not k.endswith(".partial")
    }


def verify(store: str | os.PathLike, group: str, manifest: dict) -> dict[str, list[str]]:
    """Problems of each unit the manifest records whole: {unit: ["chunk … missing", …]}.

    A listing only (no chunk is read): finds missing and truncated chunks.
    """
    files = listing(store, group)
    problems: dict[str, list[str]] = {}
    for unit, record in manifest.get("units", {}).items():
        found = []
        for key, size in record.get("chunks", {}).items():
            if key not in files:
                found.append(f"chunk {key!r} is missing")
            elif files[key] != size:
                found.append(f"chunk {key!r} is {files[key]} bytes, {size} were written")
        if found:
            problems[unit] = found
    return problems


def require_intact(store, group: str, manifest: dict, fix: str) -> None:
    """Raise a :class:`StoreIntegrityError` naming the store, group, units and chunks if
    :func:`verify` finds any problem; ``fix`` says how to repair it."""
    fs, root = _fs(store)
    if not fs.exists(f"{root}/{group}/zarr.json"):
        raise StoreIntegrityError(f"{os.fspath(store)!r}: {_missing(group, manifest)}")
    problems = verify(store, group, manifest)
    meta = verify_meta(store, group, manifest)
    if meta:
        problems = {"metadata and coordinates": meta, **problems}
    if not problems:
        return
    lines = [f"{unit}: {'; '.join(p)}" for unit, p in problems.items()]
    raise StoreIntegrityError(
        f"group {group!r} of {os.fspath(store)!r} is damaged: "
        + " | ".join(lines[:5])
        + (f" | … and {len(lines) - 5} more" if len(lines) > 5 else "")
        + f". {fix}"
    )


def _missing(group: str, manifest: dict) -> str:
    return (
        f"group {group!r} is missing: its manifest records {len(manifest.get('units', {}))} "
        f"units, but the store has no group {group!r} (or its zarr.json); build it again"
    )


def require_meta(store, group: str, manifest: dict, fix: str) -> None:
    """Refuse (:class:`StoreIntegrityError`) to write into a group whose metadata or
    coordinates differ from its manifest's digests: a write would build on them."""
    problems = verify_meta(store, group, manifest)
    if problems:
        raise StoreIntegrityError(
            f"the metadata or coordinates of group {group!r} of {os.fspath(store)!r} were "
            f"changed or removed since minecube wrote them ({'; '.join(problems[:5])}). {fix}"
        )


@contextlib.contextmanager
def writing(store: str | os.PathLike, group: str, kind: Kind):
    """Claim the store, take the group's :func:`lease` and claim the group: the ``with``
    block gets the group's manifest and is its only writer."""
    claim_store(store, kind)
    with lease(store, group):
        yield claim_group(store, group, kind)


@dataclass
class StoreCheck:
    """What :func:`check` found: per group, the units it verified and the problems."""

    store: str
    kind: str
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(not g["problems"] for g in self.groups.values())

    def __str__(self) -> str:
        lines = [f"{self.store}: minecube {self.kind} store, {len(self.groups)} groups"]
        for name, g in self.groups.items():
            state = "ok" if not g["problems"] else f"{len(g['problems'])} problems"
            lines.append(
                f"  {name}: {g['whole']} whole, {g['degraded']} degraded, "
                f"{g['chunks']} chunks read: {state}"
            )
            lines += [f"    {p}" for p in g["problems"]]
        return "\n".join(lines)


def check(store: str | os.PathLike, *, read: bool = True) -> StoreCheck:
    """Verify a store end to end: manifests, chunk listing and (``read=True``) every checksum.

    Parameters
    ----------
    store
        A store written by :func:`minecube.cube.to_zarr` or
        :func:`minecube.segment.segment_to_zarr`.
    read
        Also read every recorded chunk, so its ``crc32c`` checksum is verified.

    Returns
    -------
    StoreCheck
        ``ok`` is False when any chunk is missing, truncated or corrupt, a ``zarr.json`` or
        coordinate chunk is missing or changed, a group has no manifest or a manifest no group;
        each problem names the group, unit, array and chunk.

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> from minecube.cube import to_zarr
    >>> cube = xr.Dataset({"valid_count": (("time", "y", "x"), np.ones((1, 2, 2), "int16"))},
    ...     coords={"time": pd.to_datetime(["2024-01-01"]), "y": [1.0, 0], "x": [0.0, 1],
    ...             "band": ["red"]}, attrs={"site_id": "tiny"})
    >>> _ = to_zarr(cube, "/tmp/tiny-check.zarr", overwrite=True)
    >>> check("/tmp/tiny-check.zarr").ok
    True
    """
    import zarr

    fs, root = _fs(store)
    meta = _read_json(fs, f"{root}/zarr.json")
    kind = (meta or {}).get("attributes", {}).get("minecube:store")
    if not kind:
        raise StoreError(f"{os.fspath(store)!r} is not a store written by minecube")
    report = StoreCheck(os.fspath(store), kind)
    zroot = zarr.open_group(store, mode="r")
    groups = set(zroot.group_keys())
    for group in sorted(groups | set(manifests(store))):
        manifest = read_manifest(store, group)
        entry = {"whole": 0, "degraded": 0, "chunks": 0, "problems": []}
        report.groups[group] = entry
        if manifest is None:
            entry["problems"].append(
                f"group {group!r} has no manifest ({manifest_path(store, group)}): it was not "
                "written by minecube"
            )
            continue
        units = manifest.get("units", {})
        entry["whole"] = sum(u.get("status") == "complete" for u in units.values())
        entry["degraded"] = sum(u.get("status") == "degraded" for u in units.values())
        if group not in groups:
            entry["problems"].append(_missing(group, manifest))
            continue
        entry["problems"] += [f"metadata: {p}" for p in verify_meta(store, group, manifest)]
        damaged = verify(store, group, manifest)
        for unit, problems in damaged.items():
            entry["problems"] += [f"{unit}: {p}" for p in problems]
        if not read or entry["problems"]:
            continue
        entry["chunks"] += _read_chunks(zroot[group], units, entry["problems"])
    return report


def _read_chunks(node, units: dict, problems: list[str]) -> int:
    """Read every chunk the manifest records (so each checksum is verified), adding a problem
    for each that fails; the number read."""
    count = 0
    for unit, record in units.items():
        for key in record.get("chunks", {}):
            array, index = key.split("/c/")
            stored = node[array]
            shape = stored.shards or stored.chunks  # a file is a shard, or one chunk
            region = tuple(
                slice(int(i) * n, (int(i) + 1) * n)
                for i, n in zip(index.split("/"), shape, strict=True)
            )
            try:
                stored[region]  # every inner chunk's checksum is checked
            except Exception as e:  # every failure is reported, none raised
                problems.append(
                    f"{unit}: chunk {key!r} cannot be read ({type(e).__name__}: {str(e)[:120]})"
                )
            count += 1
    return count
