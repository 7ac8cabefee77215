"""`v2c api serve`: the fleet-manager API of a stack on loopback, and its monitor.

What API Gateway, the Lambda function and an EventBridge schedule do in AWS,
in one process: the HTTP adapter turns requests into API Gateway events for
`v2c.handlers.ota_api.lambda_handler` (configured from the stack exactly as
the SAM template configures it), big firmware uploads stream past the event
straight into the registry, and a thread runs `ota_monitor` every
`--monitor-interval` seconds (AWS: every minute). `v2c stack up` starts it.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from v2c.infra.settings import StackSettings

app = typer.Typer(name="api", help="The fleet-manager HTTP API of a stack.", no_args_is_help=True)
log = logging.getLogger("v2c.api")

KEY_BYTES: Final = 32


def ensure_api_key(path: Path) -> str:
    """The stack's API key, created once (0600) and kept across restarts."""
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    key = secrets.token_urlsafe(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def api_environment(settings: StackSettings, key: str) -> dict[str, str]:
    """The handlers' environment plus the API's credential."""
    from v2c.infra.wiring import handler_environment

    return {**handler_environment(settings), "V2C_API_KEYS": key}


def _monitor(interval_s: float, stop: threading.Event) -> None:
    from v2c.handlers.ota_monitor import lambda_handler

    while not stop.wait(interval_s):
        try:
            lambda_handler({}, None)
        except Exception:  # the next pass tries again; an outage must not end the loop
            log.exception("monitor pass failed")


def _streaming_routes() -> dict[tuple[str, str], Any]:
    """Local big-upload routes, when the firmware registry provides them."""
    try:
        module = importlib.import_module("v2c.infra.firmware_streaming")
    except ImportError:
        return {}
    from v2c.handlers.ota.config import default_services

    return dict(module.firmware_streaming_routes(default_services().firmware))


@app.command("serve")
def serve(
    stack: Annotated[Path, typer.Option("--stack", help="Stack directory (stack.json).")],
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 0,
    key_file: Annotated[
        Path | None, typer.Option(help="API key file (created if missing).")
    ] = None,
    monitor_interval: Annotated[
        float, typer.Option(min=0.5, help="Seconds between monitor passes.")
    ] = 10.0,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write the base URL here when serving.")
    ] = None,
) -> None:
    """Serve the API of the stack in STACK until SIGTERM or Ctrl-C."""
    from v2c.handlers.api.auth import ApiAuth
    from v2c.handlers.ota_api import lambda_handler
    from v2c.infra.http_adapter import ApiHttpServer
    from v2c.infra.settings import read_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = read_settings(stack / "stack.json")
    key = ensure_api_key(key_file or stack / "api.key")
    os.environ.update(api_environment(settings, key))
    routes = _streaming_routes()
    auth = ApiAuth.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    monitor = threading.Thread(target=_monitor, args=(monitor_interval, stop), daemon=True)
    server = ApiHttpServer(
        lambda_handler,
        port=port,
        streaming_routes=routes,
        streaming_auth=auth.authenticate if routes else None,
    )
    with server:
        monitor.start()
        if ready_file is not None:
            ready_file.write_text(server.base_url + "\n")
        log.info("API serving %s (monitor every %.1f s)", server.base_url, monitor_interval)
        try:
            stop.wait()
        except KeyboardInterrupt:
            stop.set()
    log.info("API stopped")
