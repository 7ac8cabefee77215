"""`v2c_dlq_messages_total`: one counter of dead-letter records for every writer.

The gateway (a handler that raised, a cloud-to-vehicle publish that failed)
and the telemetry handlers (bad data, writes that failed) both write DLQ
records into one process, and spec 001 alerts on the one series
(`v2c_dlq_messages_total > 1000`). So each registry holds one such counter
and every writer counts into it: two counters of one name cannot be
registered in one registry, and two registries served side by side would
put two families of one name on one endpoint.

Labels:
* `queue`: the dead-letter queue (`telemetry`: S3, `ota`: SQS);
* `region`: from the topic (`unknown` when there is none to read);
* `message_type`: what was dead-lettered. The telemetry handlers write
  `individual`, `batch`, `batch_samples` (one record for the failed samples of
  a batch) or `unparsed`; the gateway writes the
  rule whose handler failed, or the source of a failed outbound publish;
* `reason`: the record's reason (the error's `reason`).
"""

from __future__ import annotations

import threading
from typing import Final
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter

from v2c.contract.dead_letter import UNKNOWN_REGION, topic_region

NAME: Final = "v2c_dlq_messages"
LABELS: Final = ("queue", "region", "message_type", "reason")

__all__ = ["LABELS", "NAME", "UNKNOWN_REGION", "dlq_messages", "topic_region"]

_COUNTERS: WeakKeyDictionary[CollectorRegistry, Counter] = WeakKeyDictionary()
_LOCK = threading.Lock()


def dlq_messages(registry: CollectorRegistry) -> Counter:
    """The registry's one DLQ counter, registered on first use."""
    with _LOCK:
        counter = _COUNTERS.get(registry)
        if counter is None:
            counter = _COUNTERS[registry] = Counter(
                NAME, "Records written to a dead-letter queue", LABELS, registry=registry
            )
        return counter
