"""The Zarr stores minecube writes: who owns a group, when it is whole, and whether it is intact.

A store says what it holds in its root attributes (``minecube:store``: ``"cubes"`` or
``"predictions"``), and every group minecube writes has a **manifest** beside the store,
``<store>.minecube/<group>.json`` (beside it, not in it, so that Zarr tools listing the store
see only Zarr objects; copy it with the store): the group's kind, which periods (cubes) or
regions (predictions) are whole, and the byte size of every chunk each of them wrote. The
manifest is the completion record: it is replaced in one atomic step (a rename on a local
disk, a single PUT on object storage) only after the data it describes are written, so a
process killed at any instant leaves a store that opens with exactly the units that are whole.

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

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from minecube.errors import MinecubeError

__all__ = [
    "MANIFEST",
    "StoreCheck",
    "StoreError",
    "StoreIntegrityError",
    "check",
    "claim_group",
    "claim_store",
    "read_manifest",
]

Kind = Literal["cubes", "predictions"]
MANIFEST = ".minecube"
"""Suffix of the folder beside a store that holds its groups' manifests."""
_FORMAT = "minecube-manifest/1"
_GROUP_KIND = {"cubes": "cube", "predictions": "predictions"}


class StoreError(MinecubeError, ValueError):
    """A store or group is not minecube's to write, or not of the kind asked for."""


class StoreIntegrityError(MinecubeError, OSError):
    """A chunk that a manifest records is missing, truncated or corrupt."""


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
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:  # object storage: a single PUT is atomic
        fs.pipe_file(path, data)


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


def manifest_path(store: str | os.PathLike, group: str) -> str:
    """Where a group's manifest lives: ``<store>.minecube/<group>.json``."""
    return f"{_fs(store)[1]}{MANIFEST}/{group}.json"


def read_manifest(store: str | os.PathLike, group: str) -> dict | None:
    """A group's manifest, or None when the group has none (minecube did not write it)."""
    return _read_json(_fs(store)[0], manifest_path(store, group))


def write_manifest(store: str | os.PathLike, group: str, manifest: dict) -> None:
    """Replace a group's manifest atomically (after the data it records are written)."""
    fs, root = _fs(store)
    fs.makedirs(f"{root}{MANIFEST}", exist_ok=True)
    _write_json(fs, manifest_path(store, group), {**manifest, "updated": _now()})


def claim_group(store: str | os.PathLike, group: str, kind: Kind) -> dict:
    """The manifest of ``group`` if minecube wrote it as ``kind``; a new one for a new group.

    The manifest of a new group is written before the group itself, so a group that exists
    without a manifest was never minecube's. Refuses (:class:`StoreError`) a group that exists
    without a manifest or holds the other kind.
    """
    import zarr

    claim_store(store, kind)
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


def clear_group(store: str | os.PathLike, group: str, manifest: dict) -> dict:
    """Empty a group minecube wrote (its manifest says so), keeping a fresh manifest first.

    The fresh manifest (no unit complete) replaces the old one before anything is removed, so a
    kill part-way leaves a group that is still minecube's and holds nothing whole.
    """
    import zarr

    fs, root = _fs(store)
    fresh = {k: v for k, v in manifest.items() if k in ("format", "kind", "group", "created")}
    fresh |= {"units": {}, "replaced": _now()}
    write_manifest(store, group, fresh)
    if fs.exists(f"{root}/{group}"):
        fs.rm(f"{root}/{group}", recursive=True)
    zarr.open_group(store, path=group, mode="a", zarr_format=3)
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
    problems = verify(store, group, manifest)
    if not problems:
        return
    lines = [f"{unit}: {'; '.join(p)}" for unit, p in problems.items()]
    raise StoreIntegrityError(
        f"group {group!r} of {os.fspath(store)!r} is damaged: "
        + " | ".join(lines[:5])
        + (f" | … and {len(lines) - 5} more" if len(lines) > 5 else "")
        + f". {fix}"
    )


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
        ``ok`` is False when any chunk is missing, truncated or corrupt, or a group has no
        manifest; each problem names the group, unit, array and chunk.

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
    for group in sorted(zroot.group_keys()):
        manifest = read_manifest(store, group)
        entry = {"whole": 0, "degraded": 0, "chunks": 0, "problems": []}
        report.groups[group] = entry
        if manifest is None:
            entry["problems"].append(
                f"group {group!r} has no manifest ({manifest_path(store, group)}): not written "
                "by minecube, or the store was copied without its .minecube folder"
            )
            continue
        units = manifest.get("units", {})
        entry["whole"] = sum(u.get("status") == "complete" for u in units.values())
        entry["degraded"] = sum(u.get("status") == "degraded" for u in units.values())
        damaged = verify(store, group, manifest)
        for unit, problems in damaged.items():
            entry["problems"] += [f"{unit}: {p}" for p in problems]
        if not read:
            continue
        node = zroot[group]
        for unit, record in units.items():
            for key in record.get("chunks", {}):
                if unit in damaged:
                    continue
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
                    entry["problems"].append(
                        f"{unit}: chunk {key!r} cannot be read ({type(e).__name__}: {str(e)[:120]})"
                    )
                entry["chunks"] += 1
    return report
