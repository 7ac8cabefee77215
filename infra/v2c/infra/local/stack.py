"""The local stack: mosquitto (mTLS + per-VIN policy), moto, the gateway, in one directory.

`LocalStack(DIR).start()` brings up, in this order, each step waiting for the
previous one to be ready:

1. the PKI in `DIR/pki` (kept when it exists and is still valid) and the
   broker's policy, with every vehicle that has a certificate there;
2. mosquitto in `DIR/broker`: a vehicle and a service mTLS listener, no
   anonymous access, the dynamic-security policy (`stack_layout`,
   `device_policy`); persistence on, the 128 KB packet limit, the open-files
   limit raised (see `v2c.infra.local.broker`);
3. moto in server mode, then every AWS resource (`ensure_resources`);
4. the gateway as its own process (`v2c gateway run`), with the service
   identity, until its metrics say it is connected.

Only then is `DIR/stack.json` written, so its presence means "ready"; the
gateway starts from a copy in `DIR/run/` written before it (it needs the
broker and moto addresses, but is not part of a ready stack yet). `stop()`
goes in reverse order: the gateway drains first, while moto still takes its
dead letters and the broker still takes its acknowledgements.

Ports are remembered in `DIR/ports.json` and reused when free, so a restarted
stack keeps its addresses and a vehicle's configuration stays valid. The
gateway's shared-subscription group is kept in `DIR/share_group` (not a
secret: `stack_layout.stack_share_group`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from v2c.contract.errors import Conflict
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.errors import StackError as StackError
from v2c.infra.local import processes
from v2c.infra.local.api_credentials import api_settings
from v2c.infra.local.broker import BrokerStartError, MosquittoBroker
from v2c.infra.local.moto_server import MotoServer, MotoServerError
from v2c.infra.local.stack_control import (
    API,
    BROKER,
    GATEWAY,
    MOTO,
    STACK,
    api_healthy,
    gateway_connected,
    process_markers,
    running_stack_pids,
)
from v2c.infra.local.stack_layout import (
    StackLayout,
    broker_config,
    broker_settings,
    prepare_broker_files,
    stack_share_group,
)
from v2c.infra.names import ResourceNames
from v2c.infra.net import LOOPBACK, free_port
from v2c.infra.pki.authority import PkiPaths
from v2c.infra.settings import (
    DEFAULT_STACK_DIR,
    STACK_FILE,
    AwsSettings,
    GatewaySettings,
    StackSettings,
    write_settings,
)

GATEWAY_CLIENT_ID: Final = "v2c-gateway-1"


class StackAlreadyRunning(Conflict):
    reason = "stack_already_running"


def _reusable(port: object) -> int:
    """`port` when it is a port number free to bind now, else 0 (pick another)."""
    if not isinstance(port, int) or not 0 < port < 65_536:
        return 0
    with socket.socket() as probe:
        # Servers bind with SO_REUSEADDR, so TIME_WAIT leftovers do not count as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return 0
    return port


def _read_ports(layout: StackLayout) -> dict[str, object]:
    try:
        data = json.loads(layout.ports_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _v2c_command() -> list[str]:
    script = Path(sys.executable).parent / "v2c"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from v2c.infra.cli.main import main; main()"]


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _kill_children(children: list[tuple[int, bytes]]) -> None:
    """Finalizer: a stack whose owner forgot to stop it leaves no process behind."""
    for pid, marker in children:
        if processes.is_ours(pid, marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class LocalStack:
    """One local stack in one directory. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        directory: Path = DEFAULT_STACK_DIR,
        *,
        mqtt_port: int | None = None,
        gateway: bool = True,
        gateway_client_id: str = GATEWAY_CLIENT_ID,
        start_timeout: float = 90.0,
        mosquitto_executable: Path | None = None,
        certificate_expiry_interval: float | None = None,
    ) -> None:
        self.layout = StackLayout.for_dir(directory)
        # Seconds between the gateway's certificate expiry passes (None: its
        # hourly default); a test sets a few seconds to see a fleet's certificates.
        self._certificate_expiry_interval = certificate_expiry_interval
        self._mqtt_port = mqtt_port
        self._with_gateway = gateway
        self._gateway_client_id = gateway_client_id
        self._start_timeout = start_timeout
        self._mosquitto_executable = mosquitto_executable
        self._broker: MosquittoBroker | None = None
        self._moto: MotoServer | None = None
        self._gateway: subprocess.Popen[bytes] | None = None
        self._api: subprocess.Popen[bytes] | None = None
        self._settings: StackSettings | None = None
        self._finalizer: weakref.finalize[[list[tuple[int, bytes]]], LocalStack] | None = None

    @property
    def settings(self) -> StackSettings:
        if self._settings is None:
            raise StackError("the stack is not running")
        return self._settings

    @property
    def broker(self) -> MosquittoBroker:
        if self._broker is None:
            raise StackError("the stack is not running")
        return self._broker

    def start(self) -> StackSettings:
        """Start every component; on any failure, stop what already runs and raise."""
        layout = self.layout
        already = running_stack_pids(layout)
        if already:
            raise StackAlreadyRunning(
                f"a stack already runs in {layout.root} (pids {sorted(already.values())}): "
                f"stop it with `v2c stack down --dir {layout.root}`"
            )
        layout.stack_file.unlink(missing_ok=True)  # stale: its processes are gone
        layout.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._settings = self._start_components()
            write_settings(self._settings, layout.root)
        except BaseException:
            self.stop()
            raise
        return self._settings

    def _start_components(self) -> StackSettings:
        remembered = _read_ports(self.layout)
        pki = prepare_broker_files(self.layout)
        broker = self._start_broker(pki, remembered)
        moto = self._start_moto(remembered)
        self._track()
        aws = AwsSettings(endpoint_url=moto.endpoint_url)
        names = ResourceNames()
        ensure_resources(aws, names)
        tls_port, service_port = broker.port, broker.service_port
        if service_port is None or broker.pid is None:
            raise StackError("mosquitto started without its service listener")
        settings = StackSettings(
            mqtt=broker_settings(broker.host, tls_port, service_port, pki),
            aws=aws,
            resources=names,
            processes={STACK: os.getpid(), BROKER: broker.pid, MOTO: moto.pid},
        )
        self.layout.ports_file.write_text(
            json.dumps({"mqtts": tls_port, "mqtts-services": service_port, "moto": moto.port})
            + "\n"
        )
        if self._with_gateway:
            settings = self._start_gateway(settings)
            settings = self._start_api(settings)
        return settings

    def _start_broker(self, pki: PkiPaths, remembered: dict[str, object]) -> MosquittoBroker:
        tls_port = self._mqtt_port or _reusable(remembered.get("mqtts"))
        service_port = _reusable(remembered.get("mqtts-services"))
        if service_port == tls_port:
            service_port = 0
        try:
            return self._launch_broker(pki, tls_port, service_port)
        except BrokerStartError:
            if (tls_port == 0 or self._mqtt_port) and service_port == 0:
                raise
        # A remembered port was taken between the check and the bind: pick new ones.
        return self._launch_broker(pki, self._mqtt_port or 0, 0)

    def _launch_broker(self, pki: PkiPaths, tls_port: int, service_port: int) -> MosquittoBroker:
        config = broker_config(
            self.layout,
            pki,
            tls_port=tls_port,
            service_port=service_port,
            executable=self._mosquitto_executable,
        )
        self._broker = MosquittoBroker(config)
        self._broker.start()
        return self._broker

    def _start_moto(self, remembered: dict[str, object]) -> MotoServer:
        port = _reusable(remembered.get("moto"))
        log = self.layout.logs / "moto.log"
        # Detached from our session: a Ctrl-C reaches `stack up` only, which
        # then stops the gateway before moto, in order.
        self._moto = MotoServer(port=port, log_file=log, tie_to_parent=False)
        try:
            return self._moto.start()
        except MotoServerError:
            if port == 0:
                raise
        self._moto = MotoServer(port=0, log_file=log, tie_to_parent=False)
        return self._moto.start()

    def _start_gateway(self, settings: StackSettings) -> StackSettings:
        metrics_port = free_port()
        metrics_url = f"http://{LOOPBACK}:{metrics_port}/metrics"
        share_group = stack_share_group(self.layout)
        write_settings(settings, self.layout.run)
        command = [
            *_v2c_command(),
            "gateway", "run",
            "--stack", str(self.layout.run),
            "--client-id", self._gateway_client_id,
            "--group", share_group,
            "--metrics-port", str(metrics_port),
        ]  # fmt: skip
        if self._certificate_expiry_interval is not None:
            command += ["--certificate-expiry-interval", str(self._certificate_expiry_interval)]
        log_path = self.layout.logs / "gateway.log"
        with log_path.open("ab") as log:
            self._gateway = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped by us, after draining, not by the terminal
            )
        self._track()
        self._wait(
            lambda: gateway_connected(metrics_url),
            what=f"the gateway to connect (log {log_path})",
            process=self._gateway,
            log=log_path,
        )
        return settings.model_copy(
            update={
                "gateway": GatewaySettings(metrics_url=metrics_url, share_group=share_group),
                "processes": {**settings.processes, GATEWAY: self._gateway.pid},
            }
        )

    def _start_api(self, settings: StackSettings) -> StackSettings:
        """The fleet-manager API (and the campaign monitor) on loopback."""
        write_settings(settings, self.layout.run)
        key_dir = self.layout.run  # one 0600 key file per role (v2c.infra.local.api_credentials)
        ready_file = self.layout.run / "api.url"
        ready_file.unlink(missing_ok=True)
        port = _reusable(_read_ports(self.layout).get("api"))
        command = [
            *_v2c_command(),
            "api", "serve",
            "--stack", str(self.layout.run),
            "--port", str(port),
            "--key-dir", str(key_dir),
            "--ready-file", str(ready_file),
        ]  # fmt: skip
        log_path = self.layout.logs / "api.log"
        with log_path.open("ab") as log:
            self._api = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._track()

        def ready() -> bool:
            return ready_file.exists() and api_healthy(ready_file.read_text().strip())

        self._wait(ready, what=f"the API (log {log_path})", process=self._api, log=log_path)
        url = ready_file.read_text().strip()
        ports = _read_ports(self.layout)
        self.layout.ports_file.write_text(
            json.dumps({**ports, "api": int(url.rsplit(":", 1)[1])}) + "\n"
        )
        return settings.model_copy(
            update={
                "api": api_settings(url, key_dir.absolute()).model_copy(
                    update={"metrics_url": f"{url}/metrics"}
                ),
                "processes": {**settings.processes, API: self._api.pid},
            }
        )

    def _wait(
        self,
        ready: Callable[[], bool],
        *,
        what: str,
        process: subprocess.Popen[bytes],
        log: Path,
    ) -> None:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(
                    f"{what}: it exited with code {process.returncode}; log tail:\n{_log_tail(log)}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise StackError(f"timed out after {self._start_timeout:.0f} s waiting for {what}")

    def _track(self) -> None:
        """Keep the finalizer's list of children current."""
        markers = process_markers(self.layout)
        children = [(pid, markers[name]) for name, pid in self._pids().items()]
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _kill_children, children)

    def _pids(self) -> dict[str, int]:
        pids: dict[str, int] = {}
        if self._api is not None:
            pids[API] = self._api.pid
        if self._gateway is not None:
            pids[GATEWAY] = self._gateway.pid
        with contextlib.suppress(MotoServerError):
            if self._moto is not None:
                pids[MOTO] = self._moto.pid
        if self._broker is not None and self._broker.pid is not None:
            pids[BROKER] = self._broker.pid
        return pids

    def exited(self) -> list[str]:
        """Components whose process has ended although the stack was not stopped."""
        gone = []
        if self._api is not None and self._api.poll() is not None:
            gone.append(API)
        if self._gateway is not None and self._gateway.poll() is not None:
            gone.append(GATEWAY)
        with contextlib.suppress(MotoServerError):
            if self._moto is not None and not processes.alive(self._moto.pid):
                gone.append(MOTO)
        if self._broker is not None and not self._broker.running:
            gone.append(BROKER)
        return gone

    def stop(self) -> None:
        """API, gateway (drains), then moto, then the broker; idempotent, no process left behind."""
        api, self._api = self._api, None
        if api is not None:
            processes.stop_child(api, 15)
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            processes.stop_child(gateway, 30)
        moto, self._moto = self._moto, None
        if moto is not None:
            moto.stop()
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.stop()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._settings is not None:
            self._settings = None
            self.layout.stack_file.unlink(missing_ok=True)
        (self.layout.run / STACK_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
