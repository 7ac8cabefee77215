"""The local AWS: moto in server mode, as a child process on a loopback port.

A subprocess rather than moto's in-process `ThreadedMotoServer`, so that the
stack, the tests and the gateway all reach the same backends over real HTTP
(the production code path, endpoint_url aside), a stuck server can be
killed, and moto's imports and request handling stay out of the caller's
GIL.

The child binds port 0 itself and reports the port the kernel gave it on
its stdout, so there is no window in which another process (a parallel
pytest-xdist worker) can take a port picked in advance. werkzeug's
per-request log line is silenced in the child (FIELD_NOTES: it costs
throughput and floods output).

With `tie_to_parent` (the default) the child watches its stdin, a pipe from
the parent, and exits when it closes: a crashed test run leaves no orphaned
moto behind. `v2c stack up` passes `tie_to_parent=False` so the server
outlives the command; `stop_pid` ends it later by the PID in stack.json.

Two corrections make the emulator behave like DynamoDB where v2c depends on
it: `atomic_conditional_writes` (conditional writes are atomic) and
`moto_transactions` (a transaction costs what its items cost, not what the
table holds); `moto_items` makes storing an item linear in its attributes.
`moto_parsing` reads data-plane requests without moto's shape walk and
lexes each condition expression once; `moto_queries` has a Query read the
items its key can match, not the whole table sorted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.client import HTTPResponse
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self, cast

from v2c.contract.errors import TransientError
from v2c.infra.local.processes import stop_child, terminate
from v2c.infra.net import LOOPBACK

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

_MODULE = "v2c.infra.local.moto_server"
_READY = "V2C-MOTO-PORT "
_HTTP_TIMEOUT = 5.0
# "1": the server takes each shortcut and moto's own way too (answers,
# requests, updates, queries), failing the request if they differ
# (`moto_responses`, `moto_parsing`, `moto_updates`, `moto_queries`); the
# test suite sets it.
VERIFY_ANSWERS_ENV = "V2C_MOTO_VERIFY_ANSWERS"


class MotoServerError(TransientError):
    """The local moto server did not start, answer or stop as expected."""

    reason = "moto_server_unavailable"


class MotoServer:
    """One moto server child process. Use as a context manager, or call
    `start()` and `stop()`."""

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        log_file: Path | None = None,
        tie_to_parent: bool = True,
        startup_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self._port = port
        self._log_file = log_file
        self._tie_to_parent = tie_to_parent
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._proc is None:
            raise MotoServerError("moto server is not running")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise MotoServerError("moto server is not running")
        return self._proc.pid

    def start(self) -> Self:
        """Spawn the child and return once it answers HTTP."""
        if self._proc is not None:
            return self
        cmd = [sys.executable, "-m", _MODULE, "--host", self.host, "--port", str(self._port)]
        if self._tie_to_parent:
            cmd.append("--exit-on-stdin-eof")
        with contextlib.ExitStack() as files:
            log: IO[bytes] | int = subprocess.DEVNULL
            if self._log_file is not None:
                log = files.enter_context(self._log_file.open("ab"))
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if self._tie_to_parent else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=not self._tie_to_parent,  # survives the CLI's Ctrl-C
            )
        try:
            self._port = self._read_port(self._proc)
            wait_ready(self.endpoint_url, timeout=self._startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        stop_child(proc, timeout)

    def reset(self) -> None:
        """Forget every resource in every backend (moto's `/moto-api/reset`)."""
        reset(self.endpoint_url)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _read_port(self, proc: subprocess.Popen[bytes]) -> int:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(self._startup_timeout):
                raise MotoServerError(f"moto server reported no port in {self._startup_timeout}s")
        line = proc.stdout.readline().decode("ascii", "replace").strip()
        if not line.startswith(_READY):
            raise MotoServerError(
                f"moto server failed to start (exit code {proc.poll()}); see its stderr"
                + (f" in {self._log_file}" if self._log_file else "")
            )
        return int(line.removeprefix(_READY))


def wait_ready(endpoint_url: str, timeout: float = 30.0) -> None:
    """Poll `GET /moto-api/` until moto answers 200."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with _open(f"{endpoint_url}/moto-api/", method="GET") as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.02)
    raise MotoServerError(f"moto server at {endpoint_url} not ready after {timeout}s: {last}")


def reset(endpoint_url: str) -> None:
    """Reset every moto backend behind `endpoint_url`."""
    try:
        with _open(f"{endpoint_url}/moto-api/reset", method="POST") as resp:
            if resp.status != 200:
                raise MotoServerError(f"moto reset answered HTTP {resp.status}")
    except OSError as exc:
        raise MotoServerError(f"moto reset failed at {endpoint_url}: {exc}") from exc


def stop_pid(pid: int, timeout: float = 5.0) -> bool:
    """Stop a detached moto server by PID (from stack.json).

    Signals only a process whose command line is this module's, so a stale
    PID recycled by an unrelated process is left alone. True when a server
    was running and has stopped.
    """
    return terminate(pid, _MODULE.encode(), timeout)


def _open(url: str, *, method: str) -> HTTPResponse:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - an http URL we built
    return cast(HTTPResponse, urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT))  # noqa: S310


# ---- the child process ---------------------------------------------------


def _serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args(argv)

    from v2c.infra.local.process_logging import configure_process_logging

    configure_process_logging("v2c-moto")
    # No line per request; errors still reach stderr, as JSON like every process's.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from v2c.infra.local import (
        moto_items,
        moto_parsing,
        moto_queries,
        moto_responses,
        moto_transactions,
        moto_updates,
    )

    verify = os.environ.get(VERIFY_ANSWERS_ENV) == "1"
    moto_transactions.install()
    moto_items.install()
    moto_responses.install(verify=verify)
    moto_updates.install(verify=verify)
    moto_parsing.install(verify=verify)
    moto_queries.install(verify=verify)
    app = atomic_conditional_writes(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    port = server.socket.getsockname()[1]
    os.environ["MOTO_PORT"] = str(port)  # moto builds some self-referencing URLs from it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.exit_on_stdin_eof:
        threading.Thread(target=_shutdown_on_eof, args=(server,), daemon=True).start()

    sys.stdout.write(f"{_READY}{port}\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # nobody reads the pipe from here on
    try:
        server.serve_forever()
    finally:
        server.server_close()


def atomic_conditional_writes(app: Any) -> Any:
    """Serialize DynamoDB requests and conditional S3 PUTs, as DynamoDB's and
    S3's own atomicity does.

    moto evaluates a condition and applies the write without a lock, so two
    threads of its server can both pass `attribute = :before` and the later
    write silently undoes the earlier (found by the OTA status test: a
    VERIFYING report overwrote COMPLETED). In AWS a conditional write and a
    transaction are atomic. S3's `If-Match` / `If-None-Match` PUTs are the
    same case (the fleet index's shards: two registrations both passed the
    ETag they had read, and one merge was lost). One lock around those calls
    restores it; under the GIL it costs little, and S3 transfers without a
    condition (firmware, downloads) are not held up.
    """
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        dynamodb = str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB")
        conditional_put = environ.get("REQUEST_METHOD") == "PUT" and (
            "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        )
        if not (dynamodb or conditional_put):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return serve


def _shutdown_on_eof(server: BaseWSGIServer) -> None:
    while sys.stdin.buffer.read(4096):
        pass
    server.shutdown()


if __name__ == "__main__":
    _serve()
