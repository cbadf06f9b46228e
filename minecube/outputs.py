"""Folders of files minecube writes (reports, tables, samples): what it wrote, it may replace;
what it did not write, it never touches unless told.

Each folder keeps a record, ``.minecube-written.json``, of the files minecube published there
and their SHA-256. A writer fills a staging folder inside the target (:func:`staged`); on
success every staged file is checked against the target before any is moved: a file already
there that minecube did not write, or that changed since it wrote it (a user's edits), is
refused (:class:`OutputExistsError`) unless ``overwrite``. Then the files are moved in, the
record updated, and with ``prune`` the files minecube wrote before and did not write now
(sites or periods a run no longer covers) removed, if unchanged. A failure leaves the target
as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from minecube.errors import MinecubeError

log = logging.getLogger("minecube")

RECORD = ".minecube-written.json"


class OutputExistsError(MinecubeError, FileExistsError):
    """A file in the output folder that minecube did not write (or that was edited since)."""


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def written(folder: str | os.PathLike) -> dict[str, str]:
    """The files minecube published in ``folder``: relative path → SHA-256 (empty if none)."""
    path = Path(folder) / RECORD
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["files"])
    except (ValueError, KeyError, TypeError):
        raise OutputExistsError(
            f"{str(path)!r} is not a record minecube wrote; remove it (minecube then treats "
            "every file in the folder as the user's)"
        ) from None


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _foreign(staging: Path, folder: Path, record: dict[str, str]) -> list[str]:
    """Staged files whose target exists and is not, unchanged, one minecube wrote."""
    clash = []
    for rel in _files(staging):
        target = folder / rel
        if target.is_dir():
            clash.append(rel + "/")
        elif target.exists() and _digest(target) not in (record.get(rel), _digest(staging / rel)):
            clash.append(rel)  # the same bytes again lose nothing
    return clash


def publish(
    staging: Path, folder: Path, *, overwrite: bool = False, prune: bool = False
) -> list[Path]:
    """Move the files of ``staging`` into ``folder`` (see the module's docstring); the staging
    folder is removed. Returns the published paths; ``index.html`` files are moved last, so a
    page appears only once everything it links is in place."""
    record = written(folder)
    clash = _foreign(staging, folder, record)
    if clash and not overwrite:
        shutil.rmtree(staging)
        shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
        raise OutputExistsError(
            f"{os.fspath(folder)!r} holds files minecube did not write or that were changed "
            f"since: {shown}; nothing was written. Choose another output folder, move them, "
            "or pass overwrite=True (--overwrite) to replace them"
        )
    names = sorted(_files(staging), key=lambda rel: (Path(rel).name == "index.html", rel))
    now = {rel: _digest(staging / rel) for rel in names}
    for rel in names:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)
    shutil.rmtree(staging)
    if prune:
        for rel, digest in record.items():
            target = folder / rel
            if rel in now or not target.is_file():
                continue
            if _digest(target) == digest:
                target.unlink()
                log.info(f"removed {target} (no longer covered)")
            else:
                log.warning(f"left {target}: changed since minecube wrote it, no longer covered")
        record = {}
    _write_record(folder, {**record, **now})
    return [folder / rel for rel in names]


def _write_record(folder: Path, files: dict[str, str]) -> None:
    partial = folder / (RECORD + ".partial")
    partial.write_text(json.dumps({"files": files}, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(partial, folder / RECORD)


@contextlib.contextmanager
def staged(
    folder: str | os.PathLike, *, overwrite: bool = False, prune: bool = False
) -> Iterator[Path]:
    """A staging folder to write into; published into ``folder`` on success (:func:`publish`),
    removed on failure.

    Examples
    --------
    >>> with staged("/tmp/staged-example", overwrite=True) as tmp:
    ...     _ = (tmp / "a.txt").write_text("a")
    >>> Path("/tmp/staged-example/a.txt").read_text()
    'a'
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".minecube-staging-{os.getpid()}-{os.urandom(3).hex()}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, folder, overwrite=overwrite, prune=prune)
