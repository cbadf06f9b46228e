"""A static file server that answers HTTP ``Range`` requests, run as its own process.

GDAL reads remote COGs with range requests, and it holds the Python GIL while it opens a file,
so the server must not share a process with its client. Run it as::

    python -m minecube.demo.cogserver ROOT --host 127.0.0.1 --port 0 --log requests.log

It prints ``listening on http://HOST:PORT`` once it is bound, and appends one JSON line per file
request (method, path, Range header, 503 or null) to the log. ``--fail-every N`` makes it a
flaky server, as public buckets are under load: the 1st, (N+1)th, … request for each file range
is answered ``503 Service Unavailable``, so every read fails once and succeeds on a retry.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path


class _RangeRequestHandler(SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=…`` support (206 / 416)."""

    server: RangeServer

    def log_message(self, format, *args):
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            return super().send_head()  # 404 or directory handling
        requested = self.headers.get("Range")
        refuse = self.server.should_fail(self.path, requested)
        self.server.record(self.command, self.path, requested, 503 if refuse else None)
        if refuse:
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Content-Length", "0")
            self.send_header("Retry-After", "0")
            self.end_headers()
            return None
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        start, end = 0, size - 1
        status = HTTPStatus.OK
        if requested and _is_byte_range(requested):
            span = _parse_range(requested, size)
            if span is None:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            start, end = span
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header(
            "Content-Type", "image/tiff" if path.endswith(".tif") else self.guess_type(path)
        )
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Last-Modified", self.date_time_string(int(os.path.getmtime(path))))
        self.end_headers()
        return BytesIO(data[start : end + 1])


def _is_byte_range(header: str) -> bool:
    unit, _, spec = header.partition("=")
    return unit.strip() == "bytes" and bool(spec.strip())


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """First range of a ``bytes=`` header as inclusive (start, end); None if unsatisfiable.

    Multi-range requests are answered with their first range, which clients such as GDAL
    accept; a malformed range is unsatisfiable.
    """
    first = header.partition("=")[2].split(",")[0].strip()
    lo, _, hi = first.partition("-")
    try:
        if lo == "":  # suffix range: the last N bytes
            n = int(hi)
            return (max(size - n, 0), size - 1) if n > 0 and size else None
        start = int(lo)
        end = min(int(hi), size - 1) if hi else size - 1
    except ValueError:
        return None
    return (start, end) if start <= end and start < size else None


class RangeServer(ThreadingHTTPServer):
    """Threaded static server for ``root``; logs file requests as JSON lines to ``log``."""

    daemon_threads = True
    request_queue_size = 128  # a real object store takes bursts of connections; the default 5
    # drops concurrent readers' SYNs, which then wait a second to retry

    def __init__(self, address, root: Path, log: Path | None = None, fail_every: int = 0):
        self._lock = threading.Lock()
        self._fail_every = fail_every
        self._asked: dict[tuple[str, str | None], int] = {}
        self._log = open(log, "a", buffering=1) if log else None  # noqa: SIM115
        handler = lambda *a, **kw: _RangeRequestHandler(*a, directory=str(root), **kw)  # noqa: E731
        super().__init__(address, handler)

    def record(self, method: str, path: str, requested: str | None, refused: int | None) -> None:
        if self._log is not None:
            with self._lock:
                self._log.write(json.dumps([method, path, requested, refused]) + "\n")

    def should_fail(self, path: str, requested: str | None) -> bool:
        """Whether a flaky server refuses this request: the 1st, (N+1)th, … request for each
        file range, so every read fails once and succeeds when it is retried."""
        with self._lock:
            count = self._asked.get((path, requested), 0)
            self._asked[(path, requested)] = count + 1
            return self._fail_every > 0 and count % self._fail_every == 0

    def server_close(self) -> None:
        super().server_close()
        if self._log is not None:
            self._log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path, default=None)
    parser.add_argument(
        "--fail-every",
        type=int,
        default=0,
        help="answer the 1st, (N+1)th, … request for each file range 503",
    )
    args = parser.parse_args(argv)
    try:
        server = RangeServer((args.host, args.port), args.root.resolve(), args.log, args.fail_every)
    except OSError as e:
        sys.exit(f"cannot listen on {args.host}:{args.port}: {e}")
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
