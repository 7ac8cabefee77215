"""MQTT 5 clients for integration tests, bound to a `MosquittoBroker` fixture.

The clients themselves live in `v2c.infra.tools.mqtt5` (the selftest uses them
too); this module only saves each test the host/port plumbing and names the
properties an OTA message normally carries.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.tools.mqtt5 import (
    CONTENT_TYPE_PROTOBUF,
    GmqttV5Client,
    Mqtt5Properties,
    MqttClientError,
    PahoV5Client,
    ReceivedMessage,
)

__all__ = [
    "CONTENT_TYPE_PROTOBUF",
    "GmqttV5Client",
    "Mqtt5Properties",
    "MqttClientError",
    "PahoV5Client",
    "ReceivedMessage",
    "gmqtt_client",
    "ota_properties",
    "paho_client",
]

WAIT_S = 10.0  # a bound on each wait, never an assertion on elapsed time


@contextmanager
def paho_client(
    broker: MosquittoBroker,
    *,
    client_id: str | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> Iterator[PahoV5Client]:
    """A connected paho v5 client (the vehicles' library); disconnected on exit."""
    with PahoV5Client(
        broker.host, broker.port, client_id=client_id, timeout=WAIT_S, tls_context=tls_context
    ) as client:
        yield client


@asynccontextmanager
async def gmqtt_client(
    broker: MosquittoBroker,
    *,
    client_id: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[GmqttV5Client]:
    """A connected gmqtt client (the gateway's library); disconnected on exit."""
    async with GmqttV5Client(
        broker.host, broker.port, client_id=client_id, timeout=WAIT_S, ssl_context=ssl_context
    ) as client:
        yield client


def ota_properties(
    correlation_data: bytes,
    *,
    expiry_s: int = 3600,
    user_properties: tuple[tuple[str, str], ...] = (("message_type", "v2c.v1.OTAUpdateAvailable"),),
) -> Mqtt5Properties:
    return Mqtt5Properties(
        message_expiry_interval=expiry_s,
        content_type=CONTENT_TYPE_PROTOBUF,
        correlation_data=correlation_data,
        user_properties=user_properties,
    )
