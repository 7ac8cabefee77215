"""The one MQTT 5 properties codec: every shape converts to the value and back unchanged."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from v2c.contract.mqtt_properties import MqttProperties

FULL = MqttProperties(
    message_expiry_interval=86_400,
    content_type="application/x-protobuf",
    correlation_data=b"\x00update-1\xff",
    payload_format_indicator=0,
    user_properties=(("update_id", "u-1"), ("message_type", "v2c.v1.OTAUpdateAvailable")),
)

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
properties = st.builds(
    MqttProperties,
    message_expiry_interval=st.none() | st.integers(0, 2**32 - 1),
    content_type=st.none() | text,
    correlation_data=st.none() | st.binary(max_size=32),
    payload_format_indicator=st.none() | st.integers(0, 1),
    user_properties=st.lists(st.tuples(text, text), max_size=4).map(tuple),
)


def test_the_json_form_is_the_events_and_the_dead_letter_records() -> None:
    assert FULL.to_json() == {
        "message_expiry_interval": 86_400,
        "content_type": "application/x-protobuf",
        "correlation_data_b64": base64.b64encode(b"\x00update-1\xff").decode(),
        "payload_format_indicator": 0,
        "user_properties": [
            ["update_id", "u-1"],
            ["message_type", "v2c.v1.OTAUpdateAvailable"],
        ],
    }


def test_absent_properties_stay_absent() -> None:
    assert MqttProperties().to_json() == {}
    assert MqttProperties().to_gmqtt() == {}
    assert MqttProperties().to_iot_data() == {}
    assert MqttProperties.from_json({}) == MqttProperties()
    assert MqttProperties.from_paho(None) == MqttProperties()


@given(properties)
def test_json_round_trip(props: MqttProperties) -> None:
    assert MqttProperties.from_json(props.to_json()) == props


@given(properties)
def test_paho_round_trip(props: MqttProperties) -> None:
    assert MqttProperties.from_paho(props.to_paho()) == props


@given(properties)
def test_gmqtt_round_trip(props: MqttProperties) -> None:
    """gmqtt hands every received property over as a list of values."""
    received = {
        name: [value] for name, value in props.to_gmqtt().items() if name != "user_property"
    }
    received["user_property"] = list(props.user_properties)
    assert MqttProperties.from_gmqtt(received) == props


@given(properties, st.booleans())
def test_the_gateways_shortcut_equals_the_codec(props: MqttProperties, dup: bool) -> None:
    received: dict[str, object] = {name: [value] for name, value in props.to_gmqtt().items()}
    received["user_property"] = list(props.user_properties)
    received["dup"], received["retain"] = int(dup), 0
    assert MqttProperties.json_from_gmqtt(received) == MqttProperties.from_gmqtt(received).to_json()


def test_paho_properties_survive_the_wire_encoding() -> None:
    packed = FULL.to_paho().pack()
    unpacked = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    unpacked.unpack(packed)  # type: ignore[no-untyped-call]
    assert MqttProperties.from_paho(unpacked) == FULL


def test_the_dup_flag_travels_in_the_json_but_is_never_sent() -> None:
    received = {"content_type": [b"application/x-protobuf"], "dup": 1, "retain": 0}
    props = MqttProperties.from_gmqtt(received)
    assert props == MqttProperties(content_type="application/x-protobuf", dup=True)
    assert props.to_json() == {"content_type": "application/x-protobuf", "dup": True}
    assert MqttProperties.from_json(props.to_json()).dup is True
    assert props.to_gmqtt() == {"content_type": "application/x-protobuf"}
    assert not hasattr(props.to_paho(), "Dup")


def test_unknown_json_keys_are_left_to_the_caller() -> None:
    """A replay marks its event `replayed_from`; that is no MQTT property."""
    data = {**FULL.to_json(), "replayed_from": "0001-abc", "retain": True}
    assert MqttProperties.from_json(data) == FULL


def test_iot_data_takes_correlation_data_base64_and_user_properties_as_objects() -> None:
    assert FULL.to_iot_data() == {
        "messageExpiry": 86_400,
        "contentType": "application/x-protobuf",
        "correlationData": base64.b64encode(b"\x00update-1\xff").decode(),
        "userProperties": [
            {"update_id": "u-1"},
            {"message_type": "v2c.v1.OTAUpdateAvailable"},
        ],
    }
