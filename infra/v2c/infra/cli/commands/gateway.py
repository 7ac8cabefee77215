"""`v2c gateway run`: the gateway as its own process (the stack starts it this
way too), stopping cleanly on SIGTERM or Ctrl-C after draining in-flight work.

With a stack, the handlers' environment (`wiring.handler_environment`) is
exported before the rules are loaded, since handlers read their resources
from it; variables already set win, as they would in a Lambda's own config.
The OTA handlers' notification sink (the broker, over this process's own
publisher) is injected here too (`wiring.use_local_ota_services`). With a
stack it also runs the certificate function's hourly expiry pass, as AWS's
schedule does (`certificate_rotation.ExpirySchedule`): here, because this
process hosts that function and serves the expiry gauges.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from v2c.infra.local.certificate_rotation import ExpirySchedule

app = typer.Typer(help="The MQTT 5 → handler gateway.", no_args_is_help=True)


@app.command("run")
def run(
    stack: Annotated[Path | None, typer.Option(help="Stack state dir (holds stack.json).")] = None,
    host: Annotated[str | None, typer.Option(help="Broker host (without --stack).")] = None,
    port: Annotated[int | None, typer.Option(help="Broker port (without --stack).")] = None,
    client_id: Annotated[str, typer.Option(help="Stable id: resumes its session.")] = "",
    group: Annotated[
        str | None,
        typer.Option(help="Shared-subscription group [the stack's, else v2c]."),
    ] = None,
    rules: Annotated[str, typer.Option(help="Rules table, module:ATTR.")] = (
        "v2c.gateway.rules:RULES"
    ),
    dlq: Annotated[str, typer.Option(help="'aws' (from the stack) or 'memory'.")] = "aws",
    receive_maximum: Annotated[
        int, typer.Option(min=1, max=65535, help="Messages handled at once (MQTT Receive Maximum).")
    ] = 400,
    per_vehicle_in_flight: Annotated[
        int, typer.Option(min=1, help="Messages of one vehicle handled at once (fairness).")
    ] = 4,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port.")] = None,
    certificate_expiry_interval: Annotated[
        float, typer.Option(min=1.0, help="Seconds between certificate expiry passes (stack).")
    ] = 3600.0,
) -> None:
    """Subscribe to every rule's topics and call its handler for each message."""
    from prometheus_client import REGISTRY

    from v2c.infra.local.process_logging import configure_process_logging

    configure_process_logging("v2c-gateway")

    from v2c.contract.mqtt_endpoint import MqttEndpoint
    from v2c.gateway.metrics import GatewayMetrics
    from v2c.gateway.rules import load_rules
    from v2c.gateway.runtime import Gateway, GatewayConfig, default_client_id, run_gateway
    from v2c.handlers.dlq.store import DeadLetterStore, InMemoryDeadLetterStore

    stores: dict[str, DeadLetterStore]
    expiry: ExpirySchedule | None = None
    if stack is not None or host is None:
        from v2c.infra.local.wiring import dead_letter_stores, handler_environment, service_endpoint
        from v2c.infra.settings import load_settings

        settings = load_settings(stack_dir=stack)
        for name, value in handler_environment(settings).items():
            os.environ.setdefault(name, value)
        endpoint = service_endpoint(settings)
        stores = dead_letter_stores(settings) if dlq == "aws" else {}
        if group is None and settings.gateway is not None:
            group = settings.gateway.share_group
        from v2c.infra.local.certificate_rotation import (
            ExpirySchedule,
            use_local_rotation_service,
        )

        # The rotation function issues from the stack's CA and answers over the broker.
        use_local_rotation_service(settings)
        expiry = ExpirySchedule(interval_s=certificate_expiry_interval)
    else:
        endpoint = MqttEndpoint(host, port or 1883)
        stores = {}
    from v2c.infra.local.wiring import use_local_ota_services

    # Before any handler runs: the OTA handlers notify vehicles through the
    # broker `OTA_MQTT_URL` names, with a publisher this process owns.
    use_local_ota_services()
    table = load_rules(rules)
    if not stores:
        stores = {r.dlq: InMemoryDeadLetterStore(r.dlq) for r in table}
    # The default registry: the handlers' own metrics (v2c_telemetry_*) are
    # there, so the one endpoint serves the gateway's and theirs.
    metrics = GatewayMetrics(REGISTRY)
    if metrics_port is not None:
        metrics.serve(metrics_port)
    config = GatewayConfig(
        endpoint=endpoint,
        client_id=client_id or default_client_id(),
        share_group=group or "v2c",
        receive_maximum=receive_maximum,
        per_vehicle_in_flight=per_vehicle_in_flight,
        freeze_heap=True,  # this process is the gateway
    )
    gateway = Gateway(config, table, stores, metrics)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(gateway, stop)

    logging.getLogger("v2c.gateway").info(
        "gateway %s → %s:%s (%d rules)", config.client_id, endpoint.host, endpoint.port, len(table)
    )
    passes_stop = threading.Event()
    if expiry is not None:
        passes = threading.Thread(
            target=expiry.run, args=(passes_stop.wait,), name="certificate-expiry", daemon=True
        )
        passes.start()
    try:
        asyncio.run(main())
    finally:
        passes_stop.set()
