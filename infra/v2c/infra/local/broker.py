"""Spawn and stop a real mosquitto 2.x for the local stack and the tests.

The broker is never mocked: integration tests, the local stack and
`v2c selftest` all run the mosquitto binary the OS ships, on a free loopback
port, with its configuration, persistence database and log in one folder the
caller owns. `render_config` is pure so the configuration is unit-tested
without a process; `MosquittoBroker` owns the process: start, readiness,
SIGTERM-then-SIGKILL stop, and a restart on the same port and database (what
broker-restart tests need).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, Self

from v2c.contract.errors import V2CError
from v2c.infra.net import LOOPBACK, free_port, port_accepts

MAX_PACKET_SIZE: Final = 128 * 1024  # AWS IoT Core's message limit, enforced locally too
WANTED_OPEN_FILES: Final = 65_536  # room for 10,000 vehicle connections and then some
_SEARCH_DIRS: Final = (Path("/usr/sbin"), Path("/usr/local/sbin"), Path("/sbin"))
DYNSEC_PLUGIN_NAME: Final = "mosquitto_dynamic_security.so"
# Debian puts it in the multiarch folder (/usr/lib/x86_64-linux-gnu); a source build in lib.
_PLUGIN_GLOBS: Final = ("/usr/lib/*/", "/usr/lib/", "/usr/local/lib/*/", "/usr/local/lib/")
_READY_LINE: Final = re.compile(r"mosquitto version \S+ running")
_PORT_TAKEN: Final = "Address already in use"
_PORT_ATTEMPTS: Final = 5

CONFIG_NAME: Final = "mosquitto.conf"
DYNSEC_NAME: Final = "dynamic-security.json"
LOG_NAME: Final = "mosquitto.log"
DB_NAME: Final = "mosquitto.db"


class BrokerError(V2CError):
    """The local broker could not be found, started or stopped."""

    reason = "broker_error"


class BrokerNotInstalled(BrokerError):
    reason = "broker_not_installed"


class BrokerStartError(BrokerError):
    """mosquitto exited or never listened; the message ends with its log tail."""

    reason = "broker_start_failed"


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener; with the defaults, mutual TLS where the certificate CN is the username.

    The CN is then the identity the broker's policy (ACL file or the
    dynamic-security plugin) is written against, which is how a vehicle (CN =
    VIN) is confined to its own topics. No password check runs for such a
    client (mosquitto's `handle_connect.c`). `use_username_as_clientid` also
    replaces the client id with that CN, so a certificate can only ever be
    its own session: nobody takes over another client id. `cafile` is the
    CA that verifies client certificates on this listener. `tls_version` is
    the minimum accepted (mosquitto 2.0 semantics), so TLS 1.3 clients still
    connect.
    """

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True
    use_identity_as_username: bool = True
    use_username_as_clientid: bool = False
    tls_version: Literal["tlsv1.2", "tlsv1.3"] = "tlsv1.2"

    def lines(self) -> list[str]:
        lines = [
            f"cafile {self.cafile}",
            f"certfile {self.certfile}",
            f"keyfile {self.keyfile}",
            f"tls_version {self.tls_version}",
            f"require_certificate {_flag(self.require_certificate)}",
            f"use_identity_as_username {_flag(self.use_identity_as_username)}",
        ]
        if self.use_username_as_clientid:
            lines.append("use_username_as_clientid true")
        return lines


@dataclass(frozen=True)
class MosquittoConfig:
    """Everything the generated mosquitto.conf says; see mosquitto.conf(5) for 2.0.

    `port=0` asks `MosquittoBroker` to pick a free loopback port at the first
    start (and keep it across restarts). `allow_anonymous=None` derives it: a
    plain listener allows anonymous clients; a TLS listener that takes the
    username from the certificate does not need to.

    `service_port` with `service_tls` adds a second TLS listener beside the
    first (0: pick a free port), with a CA and options of its own: the stack
    gives vehicles one listener and cloud services the other. Security
    settings (anonymous access, the ACL file, the dynamic-security plugin)
    are global and apply to both.

    `dynsec_file` loads mosquitto's dynamic-security plugin with that state
    file (`v2c.infra.device_policy` renders it); `dynsec_plugin` is the
    plugin library, found at start when None. `retain_available=False` makes
    the broker refuse every retained publish (MQTT 5 clients are
    disconnected with reason 0x9A), so no client can park messages in it.
    """

    data_dir: Path
    host: str = LOOPBACK
    port: int = 0
    persistence: bool = True
    # Seconds between database saves; a SIGTERM stop always saves, a SIGKILL
    # loses what changed since the last save.
    autosave_interval: int = 60
    max_packet_size: int = MAX_PACKET_SIZE
    # Outgoing QoS 1/2 per client: enough for throughput tests, and a queue deep
    # enough that a slow test subscriber does not silently lose messages.
    max_inflight_messages: int = 100
    max_queued_messages: int = 100_000
    tls: BrokerTls | None = None
    service_port: int | None = None
    service_tls: BrokerTls | None = None
    acl_file: Path | None = None
    dynsec_file: Path | None = None
    dynsec_plugin: Path | None = None
    retain_available: bool = True
    allow_anonymous: bool | None = None
    # As root, mosquitto otherwise switches to the `mosquitto` user and can no
    # longer read keys or the data folder the caller created (FIELD_NOTES).
    user: str = field(default_factory=_current_user)
    connection_messages: bool = True
    sys_interval: int = 10
    executable: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            raise ValueError(f"port {self.port} is outside 0-65535")
        if (self.service_port is None) != (self.service_tls is None):
            raise ValueError("service_port and service_tls go together")
        if self.service_port is not None:
            if not 0 <= self.service_port <= 65_535:
                raise ValueError(f"service_port {self.service_port} is outside 0-65535")
            if self.tls is None:
                raise ValueError("service_port is a second listener beside a TLS one: set tls")
            if self.service_port == self.port != 0:
                raise ValueError(f"port and service_port are both {self.port}")
        if self.max_packet_size < 20:  # mosquitto refuses smaller values
            raise ValueError(f"max_packet_size {self.max_packet_size} is below 20 bytes")
        for name in ("max_inflight_messages", "max_queued_messages", "autosave_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for value in (self.host, self.user, str(self.data_dir), *self._paths()):
            if not value or any(c in value for c in "\r\n"):
                raise ValueError(f"{value!r} cannot be written into a mosquitto config line")

    def _paths(self) -> list[str]:
        files = (self.acl_file, self.dynsec_file, self.dynsec_plugin)
        paths = [str(p) for p in files if p is not None]
        for tls in (self.tls, self.service_tls):
            if tls is not None:
                paths += [str(tls.cafile), str(tls.certfile), str(tls.keyfile)]
        return paths

    @property
    def anonymous_allowed(self) -> bool:
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return self.tls is None or not self.tls.use_identity_as_username


def _flag(value: bool) -> str:
    return "true" if value else "false"


def render_config(config: MosquittoConfig) -> str:
    """The text of mosquitto.conf for `config`, whose ports (and plugin) must be chosen."""
    if config.port == 0 or config.service_port == 0:
        raise ValueError("choose a port before rendering (MosquittoBroker does)")
    security = []
    if config.acl_file is not None:
        security.append(f"acl_file {config.acl_file}")
    if config.dynsec_file is not None:
        if config.dynsec_plugin is None:
            raise ValueError(
                "choose the dynamic-security plugin before rendering (MosquittoBroker does)"
            )
        security += [
            f"plugin {config.dynsec_plugin}",
            f"plugin_opt_config_file {config.dynsec_file}",
        ]
    lines = [
        "# Generated by v2c.infra.local.broker: edits are overwritten at the next start.",
        f"user {config.user}",
        "per_listener_settings false",
        f"allow_anonymous {_flag(config.anonymous_allowed)}",
        f"retain_available {_flag(config.retain_available)}",
        f"max_packet_size {config.max_packet_size}",
        f"max_inflight_messages {config.max_inflight_messages}",
        f"max_queued_messages {config.max_queued_messages}",
        "set_tcp_nodelay true",
        f"sys_interval {config.sys_interval}",
        f"persistence {_flag(config.persistence)}",
    ]
    if config.persistence:
        # mosquitto appends the file name to the location without a separator.
        lines += [
            f"persistence_location {config.data_dir}/",
            f"persistence_file {DB_NAME}",
            f"autosave_interval {config.autosave_interval}",
        ]
    lines += [
        "log_dest stderr",  # unbuffered: stdout to a file would hold lines back
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        f"connection_messages {_flag(config.connection_messages)}",
    ]
    lines += security
    lines.append(f"listener {config.port} {config.host}")
    if config.tls is not None:
        lines += config.tls.lines()
    if config.service_tls is not None:
        lines.append(f"listener {config.service_port} {config.host}")
        lines += config.service_tls.lines()
    return "\n".join(lines) + "\n"


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
