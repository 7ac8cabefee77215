"""What a message on a topic needs, looked up once per topic: the rules it
matches, each with its metric children, its batcher and its event head.

Why: these were found again for every message (a `labels()` lookup takes a
lock and hashes the labels; `build_event` parsed and validated the topic),
the same answer each time for a topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from v2c.contract.errors import InvalidTopic
from v2c.gateway.batcher import RuleBatcher
from v2c.gateway.event import EventFactory, build_event
from v2c.gateway.metrics import GatewayMetrics
from v2c.gateway.rules import Rule


@dataclass(frozen=True, slots=True)
class RuleMetrics:
    received: Counter
    handled: Counter
    latency: Histogram

    @classmethod
    def of(cls, metrics: GatewayMetrics, rule: str) -> RuleMetrics:
        return cls(
            received=metrics.received.labels(rule),
            handled=metrics.handled.labels(rule),
            latency=metrics.latency.labels(rule),
        )


@dataclass(frozen=True, slots=True)
class Route:
    """One rule a topic matches, with what its messages need, looked up once per topic."""

    rule: Rule
    topic: str
    metrics: RuleMetrics
    batcher: RuleBatcher | None
    factory: EventFactory | None  # None: the topic is outside the scheme

    @classmethod
    def of(cls, rule: Rule, topic: str, metrics: RuleMetrics, batcher: RuleBatcher | None) -> Route:
        try:
            factory: EventFactory | None = EventFactory(rule.name, topic)
        except InvalidTopic:  # outside the scheme
            # Each message is then built (and refused) by `build_event` itself,
            # and dead-lettered with its error, as before the factory.
            factory = None
        return cls(rule, topic, metrics, batcher, factory)

    def event(
        self, payload: bytes, qos: int, props: dict[str, Any], received: int
    ) -> dict[str, Any]:
        if self.factory is None:
            return build_event(
                rule=self.rule.name,
                topic=self.topic,
                payload=payload,
                qos=qos,
                properties=props,
                received_at_ms=received,
            )
        return self.factory(payload, qos, props, received)
