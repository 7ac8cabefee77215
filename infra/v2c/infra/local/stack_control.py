"""A running stack seen from another process: `v2c stack status` and `v2c stack down`.

All these have are the PIDs and addresses in stack.json. Every PID is
checked against a marker in its command line before it is trusted or
signalled (see `v2c.infra.local.processes`), so a stale stack.json can never make
`down` kill an unrelated process that inherited a PID.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Final

from v2c.contract.errors import V2CError
from v2c.infra.local import processes
from v2c.infra.local.stack_layout import StackLayout
from v2c.infra.net import port_accepts
from v2c.infra.settings import STACK_FILE, StackSettings, read_settings

CONNECTED_LINE: Final = "v2c_gateway_connected 1.0"
# What each process's command line contains, so a recycled PID is never signalled.
MOTO_MARKER: Final = b"v2c.infra.local.moto_server"
GATEWAY_MARKER: Final = b"gateway\x00run"
STACK_MARKER: Final = b"stack\x00up"
API_MARKER: Final = b"api\x00serve"
# stack.json `processes` keys.
STACK, BROKER, MOTO, GATEWAY, API = "stack", "mosquitto", "moto", "gateway", "api"


def gateway_connected(metrics_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as response:  # noqa: S310
            body: bytes = response.read()
    except OSError:
        return False
    return CONNECTED_LINE in body.decode(errors="replace").splitlines()


def running_stack_pids(layout: StackLayout) -> dict[str, int]:
    """The processes of the stack described in `layout` that are still alive and ours."""
    try:
        settings = read_settings(layout.stack_file)
    except V2CError:  # no file, or one we cannot read: nothing we could stop
        return {}
    markers = process_markers(layout)
    return {
        name: pid
        for name, pid in settings.processes.items()
        if name in markers and processes.is_ours(pid, markers[name])
    }


def process_markers(layout: StackLayout) -> dict[str, bytes]:
    return {
        STACK: STACK_MARKER,
        BROKER: layout.broker_marker,
        MOTO: MOTO_MARKER,
        GATEWAY: GATEWAY_MARKER,
        API: API_MARKER,
    }


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    pid: int | None
    address: str
    state: str  # "running", "connected", "disconnected", "not listening", "stopped"

    @property
    def healthy(self) -> bool:
        return self.state in ("running", "connected")


def _listening(pid: int | None, marker: bytes, host: str, port: int) -> str:
    if pid is None or not processes.is_ours(pid, marker):
        return "stopped"
    return "running" if port_accepts(host, port) else "not listening"


def component_statuses(settings: StackSettings, layout: StackLayout) -> list[ComponentStatus]:
    """Each component of a described stack, checked now: its PID and its port or endpoint."""
    pids = settings.processes
    rows: list[ComponentStatus] = []
    if settings.mqtt is not None:
        mqtt, pid = settings.mqtt, pids.get(BROKER)
        marker = layout.broker_marker
        if mqtt.tls_port is not None:
            address = f"mqtts://{mqtt.host}:{mqtt.tls_port}"
            rows.append(
                ComponentStatus(
                    "mosquitto vehicles (mTLS)",
                    pid,
                    address,
                    _listening(pid, marker, mqtt.host, mqtt.tls_port),
                )
            )
        state = _listening(pid, marker, mqtt.host, mqtt.port)
        name, scheme = ("services (mTLS)", "mqtts") if mqtt.service_cert else ("plain", "mqtt")
        rows.append(
            ComponentStatus(f"mosquitto {name}", pid, f"{scheme}://{mqtt.host}:{mqtt.port}", state)
        )
    endpoint = settings.aws.endpoint_url
    if endpoint is not None:
        pid = pids.get(MOTO)
        moto = _url_address(endpoint)
        state = "stopped"
        if pid is not None and processes.is_ours(pid, MOTO_MARKER):
            state = "running" if moto and port_accepts(*moto) else "not listening"
        rows.append(ComponentStatus("moto (AWS)", pid, endpoint, state))
    if settings.gateway is not None and settings.gateway.metrics_url is not None:
        pid, url = pids.get(GATEWAY), settings.gateway.metrics_url
        state = "stopped"
        if pid is not None and processes.is_ours(pid, GATEWAY_MARKER):
            state = "connected" if gateway_connected(url) else "disconnected"
        rows.append(ComponentStatus("gateway", pid, url, state))
    if settings.api is not None:
        pid, url = pids.get(API), settings.api.url
        state = "stopped"
        if pid is not None and processes.is_ours(pid, API_MARKER):
            state = "running" if api_healthy(url) else "not listening"
        rows.append(ComponentStatus("API", pid, url, state))
        if settings.api.metrics_url is not None:
            rows.append(ComponentStatus("API metrics", pid, settings.api.metrics_url, state))
    return rows


def api_healthy(base_url: str) -> bool:
    """`GET /health` answers 200 (public: no key needed)."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


def stop_described(layout: StackLayout, timeout: float = 60.0) -> dict[str, str]:
    """Stop the stack recorded in `layout`'s stack.json from another process.

    The `v2c stack up` that owns it is asked first (SIGTERM: it stops its
    children in order and removes stack.json); whatever is left, or the
    children of an owner that died, are stopped by PID, gateway first.
    Returns each recorded process and whether it is gone.
    """
    running = running_stack_pids(layout)
    markers = process_markers(layout)
    owner = running.pop(STACK, None)
    if owner is not None and owner != os.getpid():
        processes.terminate(owner, STACK_MARKER, timeout)
    for name in (API, GATEWAY, MOTO, BROKER):
        pid = running.get(name)
        if pid is not None:
            processes.terminate(pid, markers[name], timeout / 3)
    layout.stack_file.unlink(missing_ok=True)
    (layout.run / STACK_FILE).unlink(missing_ok=True)
    everything = {STACK: owner, **running} if owner is not None else running
    return {
        name: "still running" if pid is not None and processes.alive(pid) else "stopped"
        for name, pid in everything.items()
    }


def _url_address(url: str) -> tuple[str, int] | None:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    return None if parts.hostname is None or port is None else (parts.hostname, port)


def addresses(settings: StackSettings) -> list[tuple[str, int]]:
    """Every (host, port) the described stack listens on."""
    found: list[tuple[str, int]] = []
    if settings.mqtt is not None:
        mqtt = settings.mqtt
        found += [(mqtt.host, port) for port in (mqtt.port, mqtt.tls_port) if port is not None]
    urls = [settings.aws.endpoint_url]
    if settings.gateway is not None:
        urls.append(settings.gateway.metrics_url)
    found += [a for url in urls if url is not None and (a := _url_address(url)) is not None]
    return found


def leftovers(settings: StackSettings) -> list[str]:
    """What a stopped stack left behind: child processes alive, ports still accepting."""
    left = [
        f"{name} (pid {pid})"
        for name, pid in settings.processes.items()
        if name != STACK and processes.alive(pid)
    ]
    left += [f"{host}:{port}" for host, port in addresses(settings) if port_accepts(host, port)]
    return left
