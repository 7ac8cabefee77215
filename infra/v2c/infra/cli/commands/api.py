"""`v2c api serve`: the fleet-manager API of a stack on loopback, and its monitor.

What API Gateway, the Lambda function and an EventBridge schedule do in AWS,
in one process: the HTTP adapter (uvicorn) turns requests into API Gateway
events for `v2c.handlers.ota_api.lambda_handler` (configured from the stack
exactly as the SAM template configures it, plus the stack's dead-letter
queues for `/api/v1/dlq`), big firmware uploads stream past the event
straight into the registry, and a thread runs `ota_monitor` every
`--monitor-interval` seconds (AWS: every minute), with the scheduled event
and a Lambda-like context its EventBridge schedule gives it in AWS
(`MonitorSchedule`). The vehicle inventory's certificates come from the
stack's CA and broker, and `device.deleted` reaches the OTA side in this
process (`wiring.local_vehicle_services`). `v2c stack up` starts it. The API's credentials, one
per role, are 0600 key files in `--key-dir` (default: the stack directory),
created on first use (`v2c.infra.local.api_credentials`). The adapter
itself answers `GET /metrics` (this process's Prometheus registry, with the
campaign gauges read on scrape: `v2c.infra.local.api_metrics`); a thread of
its own probes the signer once a minute for `v2c_signing_available`.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from v2c.gateway.event import LambdaContext
from v2c.handlers.api.roles import Role
from v2c.handlers.dlq.service import DeadLetterService, Redrive
from v2c.infra.settings import StackSettings

app = typer.Typer(name="api", help="The fleet-manager HTTP API of a stack.", no_args_is_help=True)
log = logging.getLogger("v2c.api")

# The monitor as `template.yaml` deploys it: its function, timeout and one-minute schedule.
MONITOR_FUNCTION: Final = "v2c-ota-monitor"
MONITOR_TIMEOUT_S: Final = 60.0
MONITOR_RULE: Final = "v2c-ota-monitor-every-minute"
LOCAL_ACCOUNT: Final = "000000000000"
MonitorHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def api_environment(settings: StackSettings, key_files: Mapping[Role, Path]) -> dict[str, str]:
    """The handlers' environment plus the API's credentials (their digests)."""
    from v2c.infra.local.api_credentials import api_keys_value
    from v2c.infra.local.wiring import handler_environment

    return {**handler_environment(settings), "V2C_API_KEYS": api_keys_value(key_files)}


def scheduled_event(
    now: datetime | None = None, *, region: str | None = None, rule: str = MONITOR_RULE
) -> dict[str, Any]:
    """The event an EventBridge schedule hands the function: a `Scheduled Event`."""
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    region = region or "us-east-1"
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{LOCAL_ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def monitor_context() -> LambdaContext:
    """A fresh Lambda-like context per pass, as the gateway builds for its handlers."""
    return LambdaContext(
        function_name=MONITOR_FUNCTION, timeout_s=MONITOR_TIMEOUT_S, log_stream_name="api"
    )


class MonitorSchedule:
    """The monitor function invoked as its EventBridge schedule invokes it in AWS.

    Each `run_pass()` hands the handler a scheduled event and a Lambda-like
    context. A pass that fails is logged once per distinct error (an outage
    would otherwise log the same traceback every interval); further passes
    failing the same way only count, and the first pass that succeeds again
    says how many failed. The loop never ends on an error: the next pass
    tries again.
    """

    def __init__(self, handler: MonitorHandler | None = None) -> None:
        self._handler = handler
        self._failing: str | None = None
        self.failed_passes = 0  # consecutive

    def run_pass(self) -> dict[str, Any] | None:
        """One pass; its summary, or None when it failed."""
        handler = self._handler or _monitor_handler()
        try:
            summary: dict[str, Any] = handler(scheduled_event(), monitor_context())
        except Exception as exc:  # the next pass tries again; an outage must not end the loop
            self.failed_passes += 1
            error = f"{type(exc).__name__}: {exc}"
            if error != self._failing:
                self._failing = error
                log.error(
                    "monitor pass failed: %s (logged once; the same error again is only counted)",
                    error,
                    exc_info=True,
                )
            return None
        if self._failing is not None:
            log.warning("monitor passes work again after %d failed", self.failed_passes)
        self._failing, self.failed_passes = None, 0
        return summary


def _monitor_handler() -> MonitorHandler:
    from v2c.handlers.ota_monitor import lambda_handler

    return lambda_handler


def _monitor(interval_s: float, stop: threading.Event) -> None:
    schedule = MonitorSchedule()
    while not stop.wait(interval_s):
        schedule.run_pass()


def _dead_letters(settings: StackSettings) -> DeadLetterService:
    """The stack's dead-letter queues for `/api/v1/dlq`, replayed as `v2c dlq
    replay` does: inbound records through the gateway's rules, in process;
    outbound ones through a service publisher, connected on first use."""
    from v2c.contract.dead_letter import Direction
    from v2c.gateway.redrive import InboundRedriver
    from v2c.gateway.rules import load_rules
    from v2c.infra.cli.commands.dlq import DEFAULT_RULES, OutboundOnDemand
    from v2c.infra.local.wiring import dead_letter_stores

    redrivers: dict[Direction, Redrive] = {
        Direction.INBOUND: InboundRedriver(load_rules(DEFAULT_RULES)),
        Direction.OUTBOUND: OutboundOnDemand(settings),
    }
    return DeadLetterService(dead_letter_stores(settings), redrivers)


def _metrics(settings: StackSettings) -> Callable[[], tuple[str, bytes]]:
    """`GET /metrics` of this process: the OTA counters its services keep,
    the campaign gauges, DLQ depths and the stack's certificate expiry
    (`v2c.infra.local.api_metrics`)."""
    from v2c.handlers.ota.config import default_services
    from v2c.infra.local.api_metrics import install_api_metrics
    from v2c.infra.local.wiring import dead_letter_stores

    return install_api_metrics(settings, default_services(), dead_letter_stores(settings))


def _signer_probe(stop: threading.Event) -> threading.Thread:
    """`v2c_signing_available` kept current: the signer probed once a minute
    on a thread of its own (a hung HSM must not hold up the monitor)."""
    from v2c.handlers.ota.config import default_services
    from v2c.infra.local.api_metrics import probe_signer_every

    return threading.Thread(target=probe_signer_every, args=(default_services(), stop), daemon=True)


def _streaming_routes() -> dict[tuple[str, str], Any]:
    """Local big-upload routes, when the firmware registry provides them."""
    try:
        module = importlib.import_module("v2c.infra.local.firmware_streaming")
    except ImportError:
        return {}
    from v2c.handlers.ota.config import default_services

    return dict(module.firmware_streaming_routes(default_services().firmware))


@app.command("serve")
def serve(
    stack: Annotated[Path, typer.Option("--stack", help="Stack directory (stack.json).")],
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 0,
    key_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of the per-role API key files (created if missing)."),
    ] = None,
    monitor_interval: Annotated[
        float, typer.Option(min=0.5, help="Seconds between monitor passes.")
    ] = 10.0,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write the base URL here when serving.")
    ] = None,
) -> None:
    """Serve the API of the stack in STACK until SIGTERM or Ctrl-C."""
    from v2c.handlers.api import ApiAuth, build_app
    from v2c.handlers.api.config import build_services, default_app, set_default_app
    from v2c.handlers.ota.config import default_services
    from v2c.handlers.ota_api import lambda_handler
    from v2c.infra.local.api_credentials import ensure_credentials
    from v2c.infra.local.http_adapter import ApiHttpServer
    from v2c.infra.local.process_logging import configure_process_logging
    from v2c.infra.local.wiring import local_vehicle_services, use_local_ota_services
    from v2c.infra.settings import read_settings

    configure_process_logging("v2c-api")
    settings = read_settings(stack / "stack.json")
    key_files = ensure_credentials(key_dir or stack)
    os.environ.update(api_environment(settings, key_files))
    # One set of OTA services for the API and its monitor, notifying through
    # the stack's broker with a publisher this process owns.
    use_local_ota_services()
    services = replace(
        build_services(ota=default_services()),
        dlq=_dead_letters(settings),
        vehicles=local_vehicle_services(settings, default_services()),
    )
    set_default_app(build_app(services, ApiAuth.from_env()))
    metrics = _metrics(settings)
    routes = _streaming_routes()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    monitor = threading.Thread(target=_monitor, args=(monitor_interval, stop), daemon=True)
    signer_probe = _signer_probe(stop)
    server = ApiHttpServer(
        lambda_handler,
        port=port,
        streaming_routes=routes,
        # The streaming upload is authorized as its Lambda route is (fleet_manager).
        streaming_auth=(lambda event: default_app().authorize(event)) if routes else None,
        metrics=metrics,
    )
    with server:
        monitor.start()
        signer_probe.start()
        if ready_file is not None:
            ready_file.write_text(server.base_url + "\n")
        log.info("API serving %s (monitor every %.1f s)", server.base_url, monitor_interval)
        try:
            stop.wait()
        except KeyboardInterrupt:
            stop.set()
    log.info("API stopped")
