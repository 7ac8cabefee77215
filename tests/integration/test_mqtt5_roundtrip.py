"""An OTA notification crosses a real mosquitto between paho-mqtt and gmqtt, both ways.

Vehicles publish and subscribe with paho-mqtt, the gateway with gmqtt; OTA
traffic is QoS 2 and leans on MQTT 5 properties (expiry, content type,
correlation data, user properties). Both libraries must agree on all of it
through the broker, byte for byte.
"""

from __future__ import annotations

import asyncio

from mqtt_clients import ReceivedMessage, gmqtt_client, ota_properties, paho_client

from v2c.contract.topics import Domain, Topic
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.tools.roundtrip import sample_update_available
from v2c.v1 import ota_pb2

TOPIC = str(Topic("eu-central-1", "VIN-1HGBH41JXMN109186", Domain.OTA, "available"))
USER_PROPERTIES = (
    ("message_type", "v2c.v1.OTAUpdateAvailable"),
    ("schema_version", "1.0"),
    ("message_type", "repeated keys keep their order"),
)


def assert_arrived_intact(
    received: ReceivedMessage, sent: ota_pb2.OTAUpdateAvailable, expiry_s: int
) -> None:
    assert received.topic == TOPIC
    assert received.qos == 2
    assert ota_pb2.OTAUpdateAvailable.FromString(received.payload) == sent
    props = received.properties
    assert props.content_type == "application/x-protobuf"
    assert props.correlation_data == sent.header.message_id
    assert props.user_properties == USER_PROPERTIES  # MQTT 5 3.3.2.3.7: order preserved
    # The broker forwards the remaining lifetime (3.3.2.3.3): whole seconds may
    # have passed in transit, but it can never grow.
    assert props.message_expiry_interval is not None
    assert 0 < props.message_expiry_interval <= expiry_s


def test_paho_publish_reaches_gmqtt_at_qos2_with_mqtt5_properties(
    mosquitto: MosquittoBroker,
) -> None:
    # Given a gateway-side gmqtt subscriber at QoS 2
    notification = sample_update_available()
    properties = ota_properties(notification.header.message_id, user_properties=USER_PROPERTIES)

    async def scenario() -> ReceivedMessage:
        async with gmqtt_client(mosquitto) as gateway:
            assert await gateway.subscribe(TOPIC, qos=2) == 2
            # When a vehicle-side paho client publishes the notification at QoS 2
            with paho_client(mosquitto) as vehicle:
                await asyncio.to_thread(
                    vehicle.publish, TOPIC, notification.SerializeToString(), 2, properties
                )
            return await gateway.receive()

    # Then it arrives equal, with every property intact
    received = asyncio.run(scenario())
    assert_arrived_intact(received, notification, expiry_s=3600)


def test_gmqtt_publish_reaches_paho_at_qos2_with_mqtt5_properties(
    mosquitto: MosquittoBroker,
) -> None:
    # Given a vehicle-side paho subscriber at QoS 2
    notification = sample_update_available()
    properties = ota_properties(
        notification.header.message_id, expiry_s=600, user_properties=USER_PROPERTIES
    )

    async def scenario() -> ReceivedMessage:
        with paho_client(mosquitto) as vehicle:
            assert await asyncio.to_thread(vehicle.subscribe, TOPIC, 2) == 2
            # When the gateway's gmqtt client publishes the notification at QoS 2
            async with gmqtt_client(mosquitto) as gateway:
                await gateway.publish(TOPIC, notification.SerializeToString(), 2, properties)
            return await asyncio.to_thread(vehicle.receive)

    # Then it arrives equal, with every property intact
    received = asyncio.run(scenario())
    assert_arrived_intact(received, notification, expiry_s=600)
