"""What a vehicle does with the broker's PUBACK reason code for a cloud-bound message.

MQTT 5 calls 0x10 "No matching subscribers" a success, and for a chat app it
is. For v2c it means nobody in the cloud took the message: measured on
mosquitto 2.0.11, shared subscriptions are not restored from the persistence
file, so between a broker restart and the gateway's re-subscription every
publish is acknowledged with 0x10 and dropped. A vehicle therefore keeps such
a message and sends it again later; the cloud deduplicates by message id, so
a retry never double-counts. Refusals (0x80 and above) are final for these
bytes: retrying cannot help.
"""

from __future__ import annotations

from enum import StrEnum

from v2c.contract.errors import MqttReasonCode


class PubackOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRY_LATER = "retry_later"
    REFUSED = "refused"


def classify_puback(reason_code: int) -> PubackOutcome:
    if reason_code == MqttReasonCode.NO_MATCHING_SUBSCRIBERS:
        return PubackOutcome.RETRY_LATER
    if reason_code >= 0x80:
        if reason_code in (MqttReasonCode.SERVER_BUSY, MqttReasonCode.QUOTA_EXCEEDED):
            return PubackOutcome.RETRY_LATER
        return PubackOutcome.REFUSED
    return PubackOutcome.DELIVERED
