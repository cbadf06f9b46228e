"""Exceptions raised by minecube.

Every error derives from :class:`MinecubeError`; specific errors also subclass the builtin that
fits them, so ``except ValueError`` keeps working for callers that do not know minecube.
"""

from __future__ import annotations

__all__ = [
    "DemoWorldError",
    "MinecubeError",
    "MissingDependencyError",
    "PortInUseError",
    "ServerStartError",
]


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
