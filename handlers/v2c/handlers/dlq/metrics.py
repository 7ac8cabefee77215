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

`v2c_dlq_depth{queue}` (gauge) is what waits in each dead-letter queue now,
read from the stores when scraped (`DeadLetterDepthCollector`: SQS
`GetQueueAttributes` for the OTA and ingest queues, a key listing for the
telemetry bucket that stops at `S3DeadLetterStore.DEPTH_CAP`, 10,001 keys,
so that value means "at least"): a counter of writes cannot say whether a
replay emptied the queue. A store that does not answer is logged and left
out of that scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from v2c.contract.dead_letter import UNKNOWN_REGION, topic_region
from v2c.handlers.per_registry import PerRegistry

if TYPE_CHECKING:
    from v2c.handlers.dlq.store import DeadLetterStore

logger = logging.getLogger(__name__)

NAME: Final = "v2c_dlq_messages"
LABELS: Final = ("queue", "region", "message_type", "reason")

__all__ = [
    "LABELS",
    "NAME",
    "UNKNOWN_REGION",
    "DeadLetterDepthCollector",
    "dlq_messages",
    "topic_region",
]

_COUNTERS: PerRegistry[Counter] = PerRegistry(
    lambda registry: Counter(
        NAME, "Records written to a dead-letter queue", LABELS, registry=registry
    )
)


def dlq_messages(registry: CollectorRegistry) -> Counter:
    """The registry's one DLQ counter, registered on first use."""
    return _COUNTERS.get(registry)


class DeadLetterDepthCollector(Collector):
    """`v2c_dlq_depth{queue}` read from each store on scrape."""

    def __init__(self, stores: Mapping[str, DeadLetterStore]) -> None:
        self._stores = dict(stores)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "v2c_dlq_depth", "Records waiting in the dead-letter queue", labels=["queue"]
        )

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for name, store in sorted(self._stores.items()):
            try:
                depth = store.depth()
            except Exception:  # one queue that does not answer leaves the others
                logger.warning("dead-letter depth of %s not read", name, exc_info=True)
                continue
            family.add_metric([name], depth)
        return [family]
