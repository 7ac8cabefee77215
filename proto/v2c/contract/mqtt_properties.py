"""MQTT 5 PUBLISH properties: the one converter between their four shapes.

A message's properties travel through four representations on their way
through v2c: gmqtt hands the gateway `{name: [value, ...]}` (every property a
list, even single ones, with the fixed header's DUP flag mixed in); paho wants
and gives a `Properties` object with CamelCase attributes; the IoT-rule event
and the dead-letter record keep them as JSON (correlation data base64, user
properties as pairs) so a replay carries exactly what the first delivery did;
and the AWS IoT data API takes its own keyword arguments. Each of those used
to be converted where it was needed, and the copies drifted (one kept the
payload format indicator, one decoded bytes, one did not).

`MqttProperties` is the value in the middle: every shape converts to and from
it here and nowhere else, so a newcomer who adds a property edits one file.
It knows only the properties v2c relies on; anything else a client library
reports is dropped on the way in, as AWS IoT's rule SQL drops it.

paho's `Properties` and `PacketTypes` are plain data (no socket, no thread),
which is why the wire contract may import them (docs/architecture.md).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

JsonDict = dict[str, Any]

# The JSON keys: the IoT-rule event's `properties` and a dead-letter record's.
EXPIRY = "message_expiry_interval"
CONTENT_TYPE = "content_type"
CORRELATION_DATA = "correlation_data_b64"
PAYLOAD_FORMAT = "payload_format_indicator"
USER_PROPERTIES = "user_properties"
DUP = "dup"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _binary(value: Any) -> bytes:
    return bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode()


def _first(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


@dataclass(frozen=True, slots=True)
class MqttProperties:
    """The PUBLISH properties v2c relies on, whatever library carried them.

    `dup` is not a property but the fixed header's DUP flag: gmqtt reports it
    among the properties and the handlers read it from the same JSON object
    (a QoS 1 redelivery), so it travels with them; it is never sent.
    """

    message_expiry_interval: int | None = None
    content_type: str | None = None
    correlation_data: bytes | None = None
    payload_format_indicator: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    dup: bool = False

    # -- JSON: the event's and the dead-letter record's shape ----------------
    def to_json(self) -> JsonDict:
        """Only the properties that are set, so an absent one stays absent."""
        out: JsonDict = {}
        if self.message_expiry_interval is not None:
            out[EXPIRY] = self.message_expiry_interval
        if self.content_type is not None:
            out[CONTENT_TYPE] = self.content_type
        if self.correlation_data is not None:
            out[CORRELATION_DATA] = base64.b64encode(self.correlation_data).decode("ascii")
        if self.payload_format_indicator is not None:
            out[PAYLOAD_FORMAT] = self.payload_format_indicator
        if self.user_properties:
            out[USER_PROPERTIES] = [[k, v] for k, v in self.user_properties]
        if self.dup:
            out[DUP] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MqttProperties:
        """Keys it does not know (a replay's `replayed_from`) are left to the caller."""
        correlation = data.get(CORRELATION_DATA)
        expiry, pfi = data.get(EXPIRY), data.get(PAYLOAD_FORMAT)
        content_type = data.get(CONTENT_TYPE)
        return cls(
            message_expiry_interval=None if expiry is None else int(expiry),
            content_type=None if content_type is None else str(content_type),
            correlation_data=None if correlation is None else base64.b64decode(correlation),
            payload_format_indicator=None if pfi is None else int(pfi),
            user_properties=tuple((str(k), str(v)) for k, v in data.get(USER_PROPERTIES) or ()),
            dup=bool(data.get(DUP)),
        )

    # -- paho: the outbound publisher, the vehicle, the test clients ---------
    def to_paho(self) -> Properties:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if self.message_expiry_interval is not None:
            props.MessageExpiryInterval = self.message_expiry_interval
        if self.content_type is not None:
            props.ContentType = self.content_type
        if self.correlation_data is not None:
            props.CorrelationData = self.correlation_data
        if self.payload_format_indicator is not None:
            props.PayloadFormatIndicator = self.payload_format_indicator
        if self.user_properties:
            props.UserProperty = list(self.user_properties)
        return props

    @classmethod
    def from_paho(cls, props: Properties | None, *, dup: bool = False) -> MqttProperties:
        """paho sets only the attributes a packet carried; `dup` is the message's flag."""
        if props is None:
            return cls(dup=dup)
        expiry = getattr(props, "MessageExpiryInterval", None)
        content_type = getattr(props, "ContentType", None)
        correlation = getattr(props, "CorrelationData", None)
        pfi = getattr(props, "PayloadFormatIndicator", None)
        return cls(
            message_expiry_interval=None if expiry is None else int(expiry),
            content_type=None if content_type is None else _text(content_type),
            correlation_data=None if correlation is None else _binary(correlation),
            payload_format_indicator=None if pfi is None else int(pfi),
            user_properties=tuple(
                (str(k), str(v)) for k, v in getattr(props, "UserProperty", None) or ()
            ),
            dup=dup,
        )

    # -- gmqtt: the gateway and the vehicle's OTA session --------------------
    def to_gmqtt(self) -> JsonDict:
        """Keyword arguments for `gmqtt.Client.publish` (its property names)."""
        kwargs: JsonDict = {}
        if self.message_expiry_interval is not None:
            kwargs["message_expiry_interval"] = self.message_expiry_interval
        if self.content_type is not None:
            kwargs["content_type"] = self.content_type
        if self.correlation_data is not None:
            kwargs["correlation_data"] = self.correlation_data
        if self.payload_format_indicator is not None:
            kwargs["payload_format_indicator"] = self.payload_format_indicator
        if self.user_properties:
            kwargs["user_property"] = list(self.user_properties)
        return kwargs

    @classmethod
    def from_gmqtt(cls, props: Mapping[str, Any]) -> MqttProperties:
        """gmqtt hands every property over as a list of values, even single ones,
        and the DUP flag beside them. (On the gateway's path for every message:
        written for speed, with no closure and one lookup per property.)"""
        expiry = _first(props.get("message_expiry_interval"))
        content_type = _first(props.get("content_type"))
        correlation = _first(props.get("correlation_data"))
        pfi = _first(props.get("payload_format_indicator"))
        pairs = props.get("user_property")
        return cls(
            None if expiry is None else int(expiry),
            None if content_type is None else _text(content_type),
            None if correlation is None else _binary(correlation),
            None if pfi is None else int(pfi),
            tuple((str(k), str(v)) for k, v in pairs) if pairs else (),
            bool(props.get("dup")),
        )

    @staticmethod
    def json_from_gmqtt(props: Mapping[str, Any]) -> JsonDict:
        """`from_gmqtt(props).to_json()` without the value in between: the
        gateway converts every message it receives, and building the frozen
        value first doubles the cost (measured: ~4 against ~10 us). A unit test
        keeps the two equal for every input."""
        out: JsonDict = {}
        if (expiry := _first(props.get("message_expiry_interval"))) is not None:
            out[EXPIRY] = int(expiry)
        if (content_type := _first(props.get("content_type"))) is not None:
            out[CONTENT_TYPE] = _text(content_type)
        if (correlation := _first(props.get("correlation_data"))) is not None:
            out[CORRELATION_DATA] = base64.b64encode(_binary(correlation)).decode("ascii")
        if (pfi := _first(props.get("payload_format_indicator"))) is not None:
            out[PAYLOAD_FORMAT] = int(pfi)
        if pairs := props.get("user_property"):
            out[USER_PROPERTIES] = [[str(k), str(v)] for k, v in pairs]
        if props.get("dup"):
            out[DUP] = True
        return out

    # -- the AWS IoT data plane (`iot-data` Publish) --------------------------
    def to_iot_data(self) -> JsonDict:
        """Keyword arguments for `iot-data`'s `publish`: botocore encodes the
        user-properties header itself; correlation data goes base64, as the
        API documents it. IoT Core has no payload format indicator here."""
        kwargs: JsonDict = {}
        if self.message_expiry_interval is not None:
            kwargs["messageExpiry"] = self.message_expiry_interval
        if self.content_type is not None:
            kwargs["contentType"] = self.content_type
        if self.correlation_data is not None:
            kwargs["correlationData"] = base64.b64encode(self.correlation_data).decode("ascii")
        if self.user_properties:
            kwargs["userProperties"] = [{k: v} for k, v in self.user_properties]
        return kwargs
