"""The rules table: which topic filter invokes which handler, and where its
failures are dead-lettered. `template.yaml` expresses the same table as AWS IoT
topic rules; a test keeps the two in step.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from v2c.contract.errors import InvalidInput
from v2c.contract.topics import Domain, TopicFilter, filter_matches, qos_for

Handler = Callable[[dict[str, Any], Any], Any]


class EventSource(StrEnum):
    """How a rule's messages reach its handler, as in AWS (ADR 0009)."""

    # IoT rule with a Lambda action: one event per message (test tables, tools).
    IOT = "iot"
    # IoT rule with an SQS action, and an event source mapping: batches of SQS
    # records, answered with a partial-batch response (the production rules).
    SQS = "sqs"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    topic_filter: str  # plain filter; the gateway subscribes to its shared form
    handler: str  # "package.module:function", imported lazily
    dlq: str  # dead-letter queue name: "telemetry" (S3) or "ota" (SQS)
    qos: int = 1
    timeout_s: float = 30.0
    source: EventSource = EventSource.IOT
    # SQS only: the queue the rule feeds (named in each record's ARN), and the
    # event source mapping's BatchSize, MaximumBatchingWindow and the queue's
    # redrive maxReceiveCount. template.yaml states the same numbers.
    queue: str = ""
    batch_size: int = 1
    batch_window_ms: int = 0
    max_receive_count: int = 3
    # SQS only: batches in their handler at once (the mapping's
    # ScalingConfig.MaximumConcurrency; None: as many as the gateway's pool
    # takes). While the calls run, the next batch keeps filling.
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_window_ms < 0 or self.max_receive_count < 1:
            raise ValueError(f"rule {self.name}: batch size, receive count >= 1; window >= 0")
        if self.max_concurrency is not None and self.max_concurrency < 2:
            # Lambda's floor for MaximumConcurrency, and what keeps one slow
            # batch from holding up every record behind it.
            raise ValueError(f"rule {self.name}: max_concurrency is at least 2")
        if self.source is EventSource.SQS and not self.queue:
            raise ValueError(f"rule {self.name}: an SQS rule names its queue")

    def matches(self, topic: str) -> bool:
        return filter_matches(self.topic_filter, topic)


def load_handler(path: str) -> Handler:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise InvalidInput(f"handler {path!r} must look like 'package.module:function'")
    handler = getattr(importlib.import_module(module_name), attr)
    if not callable(handler):
        raise InvalidInput(f"handler {path!r} is not callable")
    return handler  # type: ignore[no-any-return]


def load_rules(path: str) -> tuple[Rule, ...]:
    """`module:ATTRIBUTE` naming a sequence of rules (tests bring their own table)."""
    module_name, _, attr = path.partition(":")
    rules = getattr(importlib.import_module(module_name), attr or "RULES")
    if not all(isinstance(r, Rule) for r in rules):
        raise InvalidInput(f"{path!r} is not a sequence of Rule")
    return tuple(rules)


def match_rules(rules: Sequence[Rule], topic: str) -> list[Rule]:
    return [rule for rule in rules if rule.matches(topic)]


# The production rules' event source mapping (template.yaml says the same):
# up to 100 records, or what arrived within 20 ms, per call.
BATCH_SIZE: Final = 100
BATCH_WINDOW_MS: Final = 20
MAX_RECEIVE_COUNT: Final = 3
# Batches of one rule in their handlers at once. Unbounded, a busy store
# made every 20 ms window a call of its own: 16 small batches contending for
# the same table (and, for status reports, the same campaign item) until
# some outlived their timeout (the 1,000-vehicle rollout dead-lettered 152
# reports as handler_timeout). Bounded, records wait in the filling batch
# instead, and batches are as large as the load makes them.
MAX_CONCURRENCY: Final = 4


def _rule(name: str, domain: Domain, kind: str, handler: str, dlq: str) -> Rule:
    """A production rule: fed through its queue in batches; its QoS comes from
    the one QoS table, never restated."""
    topic_filter = str(TopicFilter(domain=domain, kind=kind))
    return queue_fed(name, topic_filter, handler, dlq, qos_for(domain))


def queue_fed(name: str, topic_filter: str, handler: str, dlq: str, qos: int) -> Rule:
    """A rule fed through its queue as every production rule is: batches of
    `BATCH_SIZE` within `BATCH_WINDOW_MS`, `MAX_CONCURRENCY` calls at once."""
    return Rule(
        name=name,
        topic_filter=topic_filter,
        handler=handler,
        dlq=dlq,
        qos=qos,
        source=EventSource.SQS,
        queue=f"v2c-{name.replace('_', '-')}-ingest",
        batch_size=BATCH_SIZE,
        batch_window_ms=BATCH_WINDOW_MS,
        max_receive_count=MAX_RECEIVE_COUNT,
        max_concurrency=MAX_CONCURRENCY,
    )


# The production table. Handlers are added here as the features land.
RULES: tuple[Rule, ...] = (
    _rule("ota_status", Domain.OTA, "status", "v2c.handlers.ota_status:lambda_handler", "ota"),
    _rule(
        "telemetry",
        Domain.TELEMETRY,
        "vehicle",
        "v2c.handlers.telemetry_ingest:lambda_handler",
        "telemetry",
    ),
    _rule(
        "telemetry_batch",
        Domain.TELEMETRY,
        "batch",
        "v2c.handlers.telemetry_batch:lambda_handler",
        "telemetry",
    ),
    # A vehicle's CSR for its next certificate; the answer goes down on its
    # `certificate/issued` (`v2c.handlers.vehicle_certificates`).
    _rule(
        "vehicle_certificates",
        Domain.CERTIFICATE,
        "renew",
        "v2c.handlers.vehicle_certificates:lambda_handler",
        "ota",
    ),
)
