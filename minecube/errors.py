"""Exceptions raised by minecube.

Every error derives from :class:`MinecubeError`; specific errors also subclass the builtin that
fits them, so ``except ValueError`` keeps working for callers that do not know minecube.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "DemoWorldError",
    "MinecubeError",
    "MissingDependencyError",
    "PortInUseError",
    "ServerStartError",
    "explain",
]


def find_stack_level() -> int:
    """The ``stacklevel`` that makes a warning name the first line outside minecube: the user's
    call, however deep inside the package the warning is raised (as pandas does).

    Examples
    --------
    >>> import warnings
    >>> warnings.warn("read the docs", UserWarning, stacklevel=find_stack_level())  # doctest: +SKIP
    """
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe()  # this function's own frame counts as the first level
    level = 0
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back
        level += 1
    return level


class MinecubeError(Exception):
    """Base class of all minecube errors."""


class DemoWorldError(MinecubeError, ValueError):
    """A demo world on disk is missing, incomplete, or was made with other parameters."""


class MissingDependencyError(MinecubeError, FileNotFoundError):
    """A program or optional package that this step needs is not installed."""


class PortInUseError(MinecubeError, OSError):
    """A port asked for explicitly is already taken on this host."""


class ServerStartError(MinecubeError, RuntimeError):
    """A local server did not come up; the message carries the end of its log."""


_STORAGE_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or AWS_ENDPOINT_URL for "
    "an S3-compatible server; a public bucket reads with storage options {'anon': True}"
)


def explain(error: BaseException) -> str | None:
    """One line naming a known failure of the libraries under minecube, and its likely fix:
    object storage (botocore), a damaged Zarr chunk, an unreadable vector file. ``None`` for
    any other error. The message is not redacted here (the caller redacts what it prints).

    Examples
    --------
    >>> explain(ValueError("Stored and computed checksum do not match. Stored: b'1'"))[:40]
    'a chunk of a Zarr store is damaged (its '
    >>> explain(KeyError("x")) is None
    True
    """
    kind = type(error).__name__
    module = type(error).__module__ or ""
    text = str(error)
    first = text.splitlines()[0] if text else kind
    if "checksum do not match" in text:
        return (
            "a chunk of a Zarr store is damaged (its checksum does not match what was written): "
            "`minecube check STORE` names the array and chunk; build or segment the same "
            "period again to rewrite it"
        )
    if module.startswith("botocore"):
        if kind in ("NoCredentialsError", "PartialCredentialsError"):
            return f"object storage: no credentials were found ({first}); {_STORAGE_FIX}"
        if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
            return (
                f"object storage: cannot reach the endpoint ({first}); check AWS_ENDPOINT_URL "
                "or the storage options' endpoint_url, and the network"
            )
        if kind == "ParamValidationError":
            import re

            bucket = re.search(r'Invalid bucket name "([^"]*)"', text)
            what = " ".join(text.split())
            if bucket and "@" in bucket[1]:  # user:secret@bucket: never repeat the secret
                what = (
                    f"bucket name '…@{bucket[1].rsplit('@', 1)[1]}' holds credentials; give "
                    "them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, not in the URL"
                )
            elif bucket:
                what = f"bucket name {bucket[1]!r} is invalid"
            return (
                f"object storage: {what}; bucket names use lower-case letters, digits, '.' "
                "and '-' (3–63 characters)"
            )
        return f"object storage: {kind}: {first}; {_STORAGE_FIX}"
    if module.startswith("pyogrio") or kind in ("DataSourceError", "DriverError"):
        return (
            f"cannot read the vector file ({first}); give a GeoPackage, GeoJSON or shapefile "
            "that GDAL opens (`ogrinfo FILE` shows why it does not)"
        )
    return None
