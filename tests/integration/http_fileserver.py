"""A loopback HTTP file server with Range support and switchable faults.

It serves one file the way S3 serves an object to a presigned GET: `Range:
bytes=a-b` answered 206 with `Content-Range`, no Range answered 200, a range
past the end answered 416, keep-alive (HTTP/1.1). The body is streamed from
disk in 64 KiB pieces, so a 50 MB object costs no memory in the test process.

Faults (set on `server.faults`, read per request, safe to change mid-test):

* `fail_next = N` (with `fail_status`, default 503): the next N requests fail;
* `always_status = 503`: every request fails until cleared;
* `throttle_bps`: the body trickles at about this many bytes per second;
* `trickle_bytes = N` (with `trickle_interval_s`, default 0.1 s): the body
  comes N bytes at a time with a pause between (a server that never stalls
  long enough for a stall timeout, yet never gets anywhere);
* `hold`: a `threading.Event`; every request waits for it to be set before
  answering (a download held open as long as a test needs);
* `cut_after = X`: a response that would carry byte X or beyond sends the
  bytes before X and then closes the connection mid-body (a clean FIN, so
  every byte before X reaches the client); `cut_times` limits how often
  (None: until cleared);
* `corrupt_at = X`: the byte at X is served flipped (wrong content);
* `ignore_range`: 200 and the whole object whatever the client asked;
* `extra_bytes = N`: N bytes of garbage after the asked bytes, counted in
  Content-Length (a server sending more than asked).

`server.requests` logs every request (Range header, status, body bytes sent).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from v2c.infra.net import LOOPBACK

PIECE = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Faults:
    fail_next: int = 0
    fail_status: int = 503
    always_status: int | None = None
    retry_after: str | None = None
    throttle_bps: int | None = None
    trickle_bytes: int = 0
    trickle_interval_s: float = 0.1
    hold: threading.Event | None = None
    cut_after: int | None = None
    cut_times: int | None = None
    corrupt_at: int | None = None
    ignore_range: bool = False
    extra_bytes: int = 0

    def clear(self) -> None:
        fresh = Faults()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


@dataclass(frozen=True)
class RequestRecord:
    path: str
    range: str | None
    status: int
    sent: int  # body bytes written
    cut: bool = False

    @property
    def range_start(self) -> int | None:
        match = _RANGE.match(self.range or "")
        return int(match[1]) if match and match[1] else None


@dataclass
class _Shared:
    path: Path
    url_path: str
    faults: Faults = field(default_factory=Faults)
    requests: list[RequestRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is `FileServer.requests`."""

    def do_GET(self) -> None:
        shared = self.server.shared
        range_header = self.headers.get("Range")
        hold = shared.faults.hold
        if hold is not None:
            hold.wait()
        if self.path != shared.url_path:
            self._empty(404, range_header)
            return
        with shared.lock:
            faults = shared.faults
            status = faults.always_status
            if status is None and faults.fail_next > 0:
                faults.fail_next -= 1
                status = faults.fail_status
        if status is not None:
            self._empty(status, range_header, retry_after=faults.retry_after)
            return
        size = shared.path.stat().st_size
        span = None if faults.ignore_range else _parse_range(range_header, size)
        if span == "unsatisfiable":
            self._empty(416, range_header, content_range=f"bytes */{size}")
            return
        first, last = span if isinstance(span, tuple) else (0, size - 1)
        code = 206 if isinstance(span, tuple) else 200
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1 + faults.extra_bytes))
        if code == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        sent, cut = self._body(first, last + 1)
        with shared.lock:
            shared.requests.append(RequestRecord(self.path, range_header, code, sent, cut))

    def _body(self, start: int, end: int) -> tuple[int, bool]:
        faults = self.server.shared.faults
        stop = end
        with self.server.shared.lock:
            cut = faults.cut_after is not None and start <= faults.cut_after < end
            if cut and faults.cut_times is not None:
                cut = faults.cut_times > 0
                faults.cut_times -= 1 if cut else 0
            if cut:
                stop = faults.cut_after or 0
        throttle = faults.throttle_bps
        piece = min(PIECE, max(1024, throttle // 20)) if throttle else PIECE
        trickle, pause = faults.trickle_bytes, faults.trickle_interval_s
        if trickle:
            piece = trickle
        sent = 0
        try:
            with self.server.shared.path.open("rb") as f:
                f.seek(start)
                position = start
                while position < stop:
                    data = bytearray(f.read(min(piece, stop - position)))
                    if not data:
                        break
                    corrupt = faults.corrupt_at
                    if corrupt is not None and position <= corrupt < position + len(data):
                        data[corrupt - position] ^= 0xFF
                    self.wfile.write(data)
                    position += len(data)
                    sent += len(data)
                    if trickle:
                        self.wfile.flush()
                        time.sleep(pause)
                    elif throttle:
                        time.sleep(len(data) / throttle)
            if cut:
                self._cut()
                return sent, True
            if faults.extra_bytes:
                self.wfile.write(b"\xee" * faults.extra_bytes)
        except (ConnectionError, OSError):
            self.close_connection = True
        return sent, False

    def _cut(self) -> None:
        """Close mid-body: everything sent so far is delivered, then FIN."""
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)

    def _empty(
        self,
        status: int,
        range_header: str | None,
        *,
        retry_after: str | None = None,
        content_range: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        if content_range is not None:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        shared = self.server.shared
        with shared.lock:
            shared.requests.append(RequestRecord(self.path, range_header, status, 0))


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) for one `bytes=` range, "unsatisfiable", or None (serve all)."""
    match = _RANGE.match(header or "")
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # a suffix: the last N bytes
        return max(0, size - int(match[2])), size - 1
    first = int(match[1])
    if first >= size:
        return "unsatisfiable"
    last = min(int(match[2]), size - 1) if match[2] else size - 1
    return (first, last) if last >= first else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    shared: _Shared


class FileServer:
    """Serves `path` at `url` on the loopback interface (a context manager)."""

    def __init__(self, path: Path, *, url_path: str = "/firmware/package.swu") -> None:
        self._server = _Server((LOOPBACK, 0), _Handler)
        self._server.shared = _Shared(Path(path), url_path)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # `stop` waits for one poll
            name="http-fileserver",
            daemon=True,
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self._server.shared.url_path}"

    def url_via(self, port: int) -> str:
        """The same object through another port on the loopback (a proxy)."""
        return f"http://{LOOPBACK}:{port}{self._server.shared.url_path}"

    @property
    def faults(self) -> Faults:
        return self._server.shared.faults

    @property
    def requests(self) -> list[RequestRecord]:
        with self._server.shared.lock:
            return list(self._server.shared.requests)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def write_package(path: Path, size: int, seed: int = 7) -> str:
    """Write `size` deterministic pseudo-random bytes to `path` (streamed,
    1 MiB at a time); return their SHA-256 in hex."""
    rng = random.Random(seed)
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        remaining = size
        while remaining:
            block = rng.randbytes(min(1024 * 1024, remaining))
            hasher.update(block)
            f.write(block)
            remaining -= len(block)
    return hasher.hexdigest()
