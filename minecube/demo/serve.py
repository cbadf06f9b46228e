"""Serve a demo world like a public catalogue: a STAC API and COGs over HTTP range requests.

Two server processes on loopback: ``rustac serve`` (a real STAC API with an in-memory backend)
for the items, and :mod:`minecube.demo.cogserver`, which answers ``Range`` requests for the COGs
as GDAL needs to read windows of a remote file. Item hrefs point at the COG server, so user code
reads them as it reads Earth Search.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from minecube.demo.world import World, open_world
from minecube.errors import MissingDependencyError, PortInUseError, ServerStartError

__all__ = ["DemoServer", "serve"]

_START_TIMEOUT = 30.0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_port(host: str, port: int, what: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the servers bind: a port just closed (TIME_WAIT) is free, one listened on is not
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {host} is already in use, so the {what} cannot start; "
                    f"free it, pass another {option}, or leave {option}=None to pick a free port"
                ) from e
            raise


def _find_rustac(rustac: str | os.PathLike | None) -> str:
    if rustac is not None:
        if Path(rustac).is_file():
            return str(rustac)
        found = shutil.which(str(rustac))
        if found:
            return found
        raise MissingDependencyError(
            f"STAC server program {str(rustac)!r} was not found; install it with "
            "`pip install rustac` or pass rustac=None to use the one in this environment"
        )
    beside = Path(sys.executable).with_name("rustac")
    found = str(beside) if beside.is_file() else shutil.which("rustac")
    if not found:
        raise MissingDependencyError(
            "the STAC API server `rustac` is not installed in this environment; "
            "install it with `pip install rustac` (it is a dependency of minecube)"
        )
    return found


class DemoServer:
    """A served demo world: ``stac_url`` (STAC API) and ``data_url`` (COGs over HTTP).

    Use :func:`serve` to make one; it stops both servers when its ``with`` block ends or on
    :meth:`close`. ``requests`` lists the (method, path, Range header) of the COG requests,
    ``refused`` those a flaky server answered 503.
    """

    def __init__(
        self,
        world: World,
        host: str,
        stac_port: int | None,
        data_port: int | None,
        rustac: str | os.PathLike | None,
        style: str = "earth-search",
        fail_every: int = 0,
    ):
        self.world = world
        self.fail_every = fail_every
        self.host = host
        self.style = style
        program = _find_rustac(rustac)
        if data_port is not None:
            _check_port(host, data_port, "COG server", "data_port")
        if stac_port is not None:
            _check_port(host, stac_port, "STAC API server", "stac_port")
        self._tmp = Path(tempfile.mkdtemp(prefix="minecube-demo-"))
        self._processes: list[tuple[subprocess.Popen, object]] = []
        atexit.register(self.close)
        try:
            self.data_url = self._start_cog_server(data_port)
            items = world.items(base_url=self.data_url, style=style)
            for item in items:
                item["links"] = []  # the API writes its own self/parent/collection links
            (self._tmp / "items.json").write_text(
                json.dumps({"type": "FeatureCollection", "features": items})
            )
            collection = json.loads(world.collection_path.read_text())
            collection["id"] = self.collection_id = items[0]["collection"]
            (self._tmp / "collection.json").write_text(json.dumps(collection))
            self.stac_url = self._start_stac(program, stac_port)
        except BaseException:
            self.close()
            raise

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self._tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed in close()
        process = subprocess.Popen(
            _with_parent(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._processes.append((process, log))
        return process

    def _log_tail(self, name: str) -> str:
        return (self._tmp / f"{name}.log").read_text(errors="replace")[-2000:]

    def _start_cog_server(self, port: int | None) -> str:
        process = self._spawn(
            [
                sys.executable,
                "-u",
                "-m",
                "minecube.demo.cogserver",
                str(self.world.path),
                "--host",
                self.host,
                "--port",
                str(port or 0),
                "--log",
                str(self._tmp / "requests.jsonl"),
                "--fail-every",
                str(self.fail_every),
            ],
            "cogserver",
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            for line in self._log_tail("cogserver").splitlines():
                if line.startswith("listening on "):
                    return line.removeprefix("listening on ").strip()
            time.sleep(0.02)
        raise ServerStartError(
            f"the COG server did not start; its log ends with:\n{self._log_tail('cogserver')}"
        )

    def _start_stac(self, program: str, port: int | None) -> str:
        for attempt in range(3):
            chosen = port or _free_port(self.host)
            url = f"http://{self.host}:{chosen}"
            process = self._spawn(
                [
                    program,
                    "serve",
                    "--addr",
                    f"{self.host}:{chosen}",
                    str(self._tmp / "collection.json"),
                    str(self._tmp / "items.json"),
                ],
                "rustac",
            )
            if _wait_for(f"{url}/collections/{self.collection_id}", process):
                return url
            text = self._log_tail("rustac")
            _stop(process)
            if port is None and "in use" in text.lower() and attempt < 2:
                continue  # another program took the free port first; pick another
            raise ServerStartError(
                f"the STAC API server (rustac) did not start on {url}; its log ends with:\n{text}"
            )
        raise AssertionError("unreachable")

    def _log(self) -> list[list]:
        path = self._tmp / "requests.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        return [tuple(entry[:3]) for entry in self._log()]

    @property
    def refused(self) -> list[tuple[str, str, str | None]]:
        """The requests a flaky server (``fail_every``) answered 503."""
        return [tuple(entry[:3]) for entry in self._log() if entry[3]]

    def close(self) -> None:
        """Stop both servers and remove their temporary files (safe to call twice)."""
        for process, log in self._processes:
            _stop(process)
            log.close()
        self._processes.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DemoServer(stac_url={self.stac_url!r}, data_url={self.data_url!r})"


_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)  # the parent died before prctl\n"
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def _with_parent(args: list[str]) -> list[str]:
    """``args`` run so that the server dies with this process, even when it is killed with
    SIGKILL (Linux ``PR_SET_PDEATHSIG``, set before ``exec``, kept across it). Only from the
    main thread: the signal follows the thread that started the child, not the process."""
    import threading

    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return args
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *args]


def _wait_for(url: str, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(
    world: World | str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    stac_port: int | None = None,
    data_port: int | None = None,
    rustac: str | os.PathLike | None = None,
    style: str = "earth-search",
    fail_every: int = 0,
) -> DemoServer:
    """Serve a demo world on loopback: a STAC API and its COGs over HTTP range requests.

    Parameters
    ----------
    world
        A :class:`~minecube.demo.World` or the folder of one.
    host
        Address to bind; loopback by default.
    stac_port, data_port
        Ports for the STAC API and the COG server; free ports are chosen when None. A port that
        is taken raises :class:`~minecube.errors.PortInUseError`.
    rustac
        Path of the ``rustac`` program (default: the one installed beside this Python).
    style
        Catalogue style of a Sentinel-2 world's items: ``"earth-search"`` (v1, as generated),
        ``"planetary-computer"``, ``"earth-search-v0"`` or ``"cdse"``
        (:func:`minecube.demo.stacitems.restyle`); the files are the same.
    fail_every
        Make the COG server flaky, as a public bucket under load is: the 1st,
        (``fail_every`` + 1)th, … request for each file range is answered
        ``503 Service Unavailable`` (0: never), so every read fails once and succeeds when
        retried. For testing retries.

    Returns
    -------
    DemoServer
        Started servers; use as a context manager to stop them.

    Examples
    --------
    >>> import pystac_client
    >>> from minecube import demo
    >>> world = demo.generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                       dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> with demo.serve(world) as server:
    ...     client = pystac_client.Client.open(server.stac_url)
    ...     len(list(client.search(collections=["sentinel-2-l2a"]).items()))
    8
    """
    if not isinstance(world, World):
        world = open_world(world)
    return DemoServer(world, host, stac_port, data_port, rustac, style, fail_every)
