"""Telling a vehicle about an update: `OTAUpdateAvailable` on `.../ota/available`.

The signed manifest travels as the exact signed bytes; the download URL is
presigned for an hour and sits outside the signature, so a re-sent
notification gets a fresh URL without re-signing. The MQTT message carries
a message expiry of 86,400 s (a vehicle offline longer gets the update from
the next re-notification instead of a day-old URL), QoS 2, and the
per-vehicle update id as correlation data so the status reports can be
traced to it.

A campaign notifies a chunk of vehicles at once (`send_many`): the sink
keeps up to a window of publishes in flight instead of waiting for each
one's acknowledgement before the next, and answers per message, so one
dead-lettered notification never fails its neighbours.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from v2c.contract.topics import Domain, Topic
from v2c.v1.common_pb2 import Header
from v2c.v1.ota_pb2 import OTAUpdateAvailable

SCHEMA_VERSION: Final = "1.0"
URL_TTL_S: Final = 3600
MESSAGE_EXPIRY_S: Final = 86_400
NOTIFY_SOURCE: Final = "ota.notify"


@dataclass(frozen=True, slots=True)
class SinkMessage:
    """One built notification, as a sink publishes it."""

    topic: str
    payload: bytes
    correlation_id: str
    context: dict[str, Any]
    # Notifications travel at QoS 2; commands at the contract's QoS for them.
    qos: int = 2
    source: str = NOTIFY_SOURCE


class NotificationSink(Protocol):
    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        """Publish at QoS 2 with retries; False once the message was dead-lettered."""
        ...

    def send_many(self, messages: Sequence[SinkMessage]) -> list[bool]:
        """Publish each as `send` does, with a window of them in flight at
        once; one answer per message, in order."""
        ...


class NotificationSender(Protocol):
    """What the services call to notify a vehicle (`Notifier`, or a recorder in tests)."""

    def send(self, note: Notification) -> bool: ...

    def send_many(self, notes: Sequence[Notification]) -> list[bool]:
        """`send` for each, pipelined; one answer per note, in order."""
        ...


class PackageUrls(Protocol):
    def download_url(self, firmware_id: str, expires_s: int = URL_TTL_S) -> str: ...


@dataclass(frozen=True, slots=True)
class Notification:
    vehicle_id: str
    region: str
    update_id: str
    device_update_id: str
    firmware_id: str
    manifest: bytes
    signature: bytes
    key_id: str


class Notifier:
    def __init__(
        self,
        sink: NotificationSink,
        urls: PackageUrls,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._urls = urls
        self._clock = clock

    def build(self, note: Notification, url: str | None = None) -> tuple[str, bytes]:
        """Topic and payload; `url` is the package's presigned URL when the
        caller already has one (a chunk shares its firmware's)."""
        header = Header(
            message_id=uuid.uuid4().bytes,
            correlation_id=note.device_update_id,
            timestamp=int(self._clock() * 1000),
            schema_version=SCHEMA_VERSION,
        )
        message = OTAUpdateAvailable(
            header=header,
            manifest=note.manifest,
            signature=note.signature,
            key_id=note.key_id,
            download_url=url or self._urls.download_url(note.firmware_id, URL_TTL_S),
        )
        topic = Topic(note.region, note.vehicle_id, Domain.OTA, "available")
        return str(topic), message.SerializeToString()

    def message(self, note: Notification, url: str | None = None) -> SinkMessage:
        topic, payload = self.build(note, url)
        context = {
            "vehicle_id": note.vehicle_id,
            "update_id": note.update_id,
            "device_update_id": note.device_update_id,
        }
        return SinkMessage(topic, payload, note.device_update_id, context)

    def send(self, note: Notification) -> bool:
        m = self.message(note)
        return self._sink.send(
            m.topic, m.payload, correlation_id=m.correlation_id, context=m.context
        )

    def send_many(self, notes: Sequence[Notification]) -> list[bool]:
        """Build every message (one presigned URL per firmware: a campaign's
        chunk shares one) and hand them to the sink together."""
        urls: dict[str, str] = {}
        messages = []
        for note in notes:
            if note.firmware_id not in urls:
                urls[note.firmware_id] = self._urls.download_url(note.firmware_id, URL_TTL_S)
            messages.append(self.message(note, urls[note.firmware_id]))
        return self._sink.send_many(messages) if messages else []
