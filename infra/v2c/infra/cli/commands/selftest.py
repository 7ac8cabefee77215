"""`v2c selftest`: prove the local MQTT path works before anything else is blamed.

Spawns a private mosquitto in a temporary folder, sends one OTA notification
from paho-mqtt (the vehicles' library) to gmqtt (the gateway's) at QoS 2 with
its MQTT 5 properties, and shows side by side what was sent and what arrived.
Exit code 0 when everything survived, 1 otherwise; the broker is always stopped.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf.message import DecodeError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from v2c.infra.local.broker import BrokerError, MosquittoBroker, MosquittoConfig
from v2c.infra.tools.mqtt5 import Mqtt5Properties, MqttClientError
from v2c.infra.tools.roundtrip import (
    RoundTrip,
    expiry_survived,
    paho_to_gmqtt,
    sample_properties,
    sample_update_available,
)
from v2c.v1 import ota_pb2

_OK = "[green]✓[/green]"
_BAD = "[red]✗[/red]"


def _mark(ok: bool) -> str:
    return _OK if ok else _BAD


def _user_properties(props: Mqtt5Properties) -> str:
    return "\n".join(f"{k}={v}" for k, v in props.user_properties) or "-"


def _hex(data: bytes | None) -> str:
    return "-" if data is None else data.hex()


def _decodes_equal(result: RoundTrip) -> bool:
    try:
        arrived = ota_pb2.OTAUpdateAvailable.FromString(result.received.payload)
    except DecodeError:
        return False
    return arrived == ota_pb2.OTAUpdateAvailable.FromString(result.payload)


def result_table(result: RoundTrip) -> Table:
    """Sent versus arrived, one row per field and property, with a verdict each."""
    sent, got = result.properties, result.received.properties
    table = Table(title=f"MQTT 5 round trip, {result.direction}", title_justify="left")
    table.add_column("field")
    table.add_column("sent", overflow="fold")
    table.add_column("arrived", overflow="fold")
    table.add_column("ok", justify="center")
    rows: list[tuple[str, str, str, bool]] = [
        ("topic", result.topic, result.received.topic, result.topic == result.received.topic),
        ("QoS", str(result.qos), str(result.received.qos), result.qos == result.received.qos),
        (
            "payload size (bytes)",
            str(len(result.payload)),
            str(len(result.received.payload)),
            result.payload == result.received.payload,
        ),
        ("payload decodes equal", "OTAUpdateAvailable", "", _decodes_equal(result)),
        (
            "message expiry interval (s)",
            str(sent.message_expiry_interval),
            str(got.message_expiry_interval),
            expiry_survived(sent.message_expiry_interval, got.message_expiry_interval),
        ),
        (
            "content type",
            str(sent.content_type),
            str(got.content_type),
            sent.content_type == got.content_type,
        ),
        (
            "correlation data",
            _hex(sent.correlation_data),
            _hex(got.correlation_data),
            sent.correlation_data == got.correlation_data,
        ),
        (
            "user properties",
            _user_properties(sent),
            _user_properties(got),
            sent.user_properties == got.user_properties,
        ),
    ]
    for field, before, after, ok in rows:
        table.add_row(field, escape(before), escape(after), _mark(ok))
    table.add_row("latency (ms)", "", f"{result.latency_s * 1000:.2f}", "")
    return table


def selftest(
    wait: Annotated[
        float, typer.Option(help="Seconds each step (start, connect, delivery) may take.")
    ] = 10.0,
) -> None:
    """Spawn a private mosquitto and send an OTA notification through it, paho to gmqtt."""
    console = Console()
    notification = sample_update_available()
    payload = notification.SerializeToString()
    try:
        with tempfile.TemporaryDirectory(prefix="v2c-selftest-") as tmp:
            config = MosquittoConfig(data_dir=Path(tmp), persistence=False)
            with MosquittoBroker(config, start_timeout=wait) as broker:
                console.print(
                    f"mosquitto pid {broker.pid} listening on {broker.host}:{broker.port}"
                )
                result = asyncio.run(
                    paho_to_gmqtt(
                        broker.host,
                        broker.port,
                        payload,
                        sample_properties(notification),
                        wait_s=wait,
                    )
                )
    except (BrokerError, MqttClientError) as exc:
        console.print(f"[red]selftest failed:[/red] {escape(exc.detail)}")
        raise typer.Exit(1) from None
    console.print(result_table(result))
    problems = result.mismatches()
    if not _decodes_equal(result):
        problems.append("the payload does not decode to the OTAUpdateAvailable that was sent")
    if problems:
        for problem in problems:
            console.print(f"[red]✗[/red] {escape(problem)}")
        raise typer.Exit(1)
    console.print("[green]selftest passed[/green]: broker, both MQTT 5 clients and protobuf agree")
