"""Spawn and stop a real mosquitto 2.x for the local stack and the tests.

The broker is never mocked: integration tests, the local stack and
`v2c selftest` all run the mosquitto binary the OS ships, on a free loopback
port, with its configuration, persistence database and log in one folder the
caller owns. What the broker is told (`MosquittoConfig`, `render_config`)
is pure and lives in `v2c.infra.local.mosquitto_config`; this module owns
the process: start, readiness, SIGTERM-then-SIGKILL stop, and a restart on
the same port and database (what broker-restart tests need). The
configuration types are importable from here too, since starting a broker
always takes one.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import time
import weakref
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from v2c.infra.errors import BrokerError as BrokerError
from v2c.infra.local.mosquitto_config import (
    CONFIG_NAME,
    DB_NAME,
    LOG_NAME,
    BrokerTls,
    MosquittoConfig,
    render_config,
)
from v2c.infra.net import free_port, port_accepts

__all__ = [
    "BrokerError",
    "BrokerNotInstalled",
    "BrokerStartError",
    "BrokerTls",
    "MosquittoBroker",
    "MosquittoConfig",
    "find_dynsec_plugin",
    "find_mosquitto",
]

WANTED_OPEN_FILES: Final = 65_536  # room for 10,000 vehicle connections and then some
_SEARCH_DIRS: Final = (Path("/usr/sbin"), Path("/usr/local/sbin"), Path("/sbin"))
DYNSEC_PLUGIN_NAME: Final = "mosquitto_dynamic_security.so"
# Debian puts it in the multiarch folder (/usr/lib/x86_64-linux-gnu); a source build in lib.
_PLUGIN_GLOBS: Final = ("/usr/lib/*/", "/usr/lib/", "/usr/local/lib/*/", "/usr/local/lib/")
_READY_LINE: Final = re.compile(r"mosquitto version \S+ running")
_PORT_TAKEN: Final = "Address already in use"
_PORT_ATTEMPTS: Final = 5


class BrokerNotInstalled(BrokerError):
    reason = "broker_not_installed"


class BrokerStartError(BrokerError):
    """mosquitto exited or never listened; the message ends with its log tail."""

    reason = "broker_start_failed"


def find_mosquitto(explicit: Path | None = None) -> Path:
    """The mosquitto binary: `explicit`, else PATH, else the sbin folders Debian uses."""
    if explicit is not None:
        if explicit.is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise BrokerNotInstalled(f"{explicit} is not an executable mosquitto binary")
    found = shutil.which("mosquitto")
    if found is not None:
        return Path(found)
    for folder in _SEARCH_DIRS:
        candidate = folder / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerNotInstalled(
        "mosquitto 2.x is not installed (not on PATH nor in /usr/sbin): run scripts/setup.sh"
    )


def find_dynsec_plugin(explicit: Path | None = None) -> Path:
    """mosquitto's dynamic-security plugin library (shipped in Debian's mosquitto package)."""
    if explicit is not None:
        if explicit.is_file():
            return explicit
        raise BrokerNotInstalled(f"{explicit} is not the dynamic-security plugin library")
    for pattern in _PLUGIN_GLOBS:
        for candidate in sorted(Path("/").glob(pattern.lstrip("/") + DYNSEC_PLUGIN_NAME)):
            if candidate.is_file():
                return candidate
    raise BrokerNotInstalled(
        f"{DYNSEC_PLUGIN_NAME} not found under /usr/lib or /usr/local/lib: "
        "install Debian's mosquitto package (scripts/setup.sh)"
    )


def _raise_open_files_limit(pid: int) -> None:
    """Let the broker hold one descriptor per vehicle; best effort, never fatal.

    Set on the child after the spawn (Linux prlimit) rather than in a
    preexec_fn, which is unsafe once the parent runs client threads.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= WANTED_OPEN_FILES:
        return
    candidates = [(WANTED_OPEN_FILES, max(hard, WANTED_OPEN_FILES))]
    if hard != resource.RLIM_INFINITY and hard > soft:
        candidates.append((min(hard, WANTED_OPEN_FILES), hard))
    for limits in candidates:
        with contextlib.suppress(OSError, ValueError):
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
            return


def _kill_if_running(process: subprocess.Popen[bytes]) -> None:
    """Finalizer: never leave a broker behind when its owner forgot to stop it."""
    if process.poll() is None:
        process.kill()
        process.wait()


class MosquittoBroker:
    """One mosquitto process, restartable on the same port and database.

    Use as a context manager, or call `start()` and `stop()`; `stop()` is
    idempotent and a forgotten broker is killed at interpreter exit.
    """

    def __init__(
        self,
        config: MosquittoConfig,
        *,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if config.dynsec_file is not None:
            config = replace(config, dynsec_plugin=find_dynsec_plugin(config.dynsec_plugin))
        self._config = config
        self._executable = find_mosquitto(config.executable)
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], MosquittoBroker] | None = None
        self._log_start = 0

    @property
    def config(self) -> MosquittoConfig:
        """The configuration in force: after the first start, with the chosen port."""
        return self._config

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def port(self) -> int:
        if self._config.port == 0:
            raise BrokerError("the port is chosen at start(); the broker has not started yet")
        return self._config.port

    @property
    def service_port(self) -> int | None:
        """The second (service) listener's port (None without one); chosen at start()."""
        if self._config.service_port == 0:
            raise BrokerError("the port is chosen at start(); the broker has not started yet")
        return self._config.service_port

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def data_dir(self) -> Path:
        return self._config.data_dir

    @property
    def config_path(self) -> Path:
        return self._config.data_dir / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self._config.data_dir / LOG_NAME

    @property
    def db_path(self) -> Path:
        return self._config.data_dir / DB_NAME

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the broker's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Launch mosquitto and return once it accepts TCP connections.

        A port picked here (config port 0) that another process grabbed in
        the meantime is replaced by a fresh one, a few times at most.
        """
        if self.running:
            raise BrokerError(f"mosquitto is already running (pid {self.pid})")
        pick_port = self._config.port == 0
        pick_service = self._config.service_port == 0
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if pick_port:
                self._config = replace(self._config, port=self._free_port_besides())
            if pick_service:
                self._config = replace(
                    self._config, service_port=self._free_port_besides(self._config.port)
                )
            try:
                self._launch()
                return
            except BrokerStartError:
                port_taken = _PORT_TAKEN in self._log_since_start()
                if (pick_port or pick_service) and port_taken and attempt < _PORT_ATTEMPTS:
                    self._config = replace(
                        self._config,
                        port=0 if pick_port else self._config.port,
                        service_port=0 if pick_service else self._config.service_port,
                    )
                    continue
                raise

    def _free_port_besides(self, *taken: int | None) -> int:
        port = free_port(self._config.host)
        while port in taken:
            port = free_port(self._config.host)
        return port

    def _launch(self) -> None:
        self._config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self._config))
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"--- v2c: starting {self._executable} ---\n".encode())
        self._log.flush()
        self._log_start = self._log.tell()
        process = subprocess.Popen(
            [str(self._executable), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self._config.data_dir,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not its
        )
        self._process = process
        self._finalizer = weakref.finalize(self, _kill_if_running, process)
        _raise_open_files_limit(process.pid)
        self._wait_ready(process)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        # The port alone could be answered by another process that took it
        # first; the "running" line proves that our mosquitto bound it.
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._reap()
                raise BrokerStartError(
                    f"mosquitto exited with code {process.returncode} while starting "
                    f"(config {self.config_path}); log tail:\n{self.log_tail()}"
                )
            ready = _READY_LINE.search(self._log_since_start()) is not None
            service = self._config.service_port
            if (
                ready
                and port_accepts(self.host, self.port)
                and (service is None or port_accepts(self.host, service))
            ):
                return
            time.sleep(0.02)
        self._terminate()
        raise BrokerStartError(
            f"mosquitto did not listen on {self.host}:{self.port} within "
            f"{self._start_timeout:.0f} s; log tail:\n{self.log_tail()}"
        )

    def _log_since_start(self) -> str:
        """What this launch logged, so an earlier run's lines cannot mislead."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM (mosquitto saves its database and exits), then SIGKILL after `timeout`."""
        self._terminate(self._stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL at once: a crash, keeping only what the last autosave wrote."""
        process = self._process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        self._reap()

    def restart(self) -> None:
        """Stop gracefully and start again on the same port with the same database."""
        self.stop()
        self.start()

    def _terminate(self, timeout: float | None = None) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(self._stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

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

    def __repr__(self) -> str:
        return (
            f"MosquittoBroker(host={self.host!r}, port={self._config.port}, "
            f"pid={self.pid}, data_dir={str(self.data_dir)!r})"
        )
