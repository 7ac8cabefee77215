"""The paths a dead-letter record is replayed through, in the local stack:
inbound records go to the handler of the rule that failed them (as the gateway
would call it), outbound records to the publisher."""

from __future__ import annotations

from collections.abc import Sequence

from v2c.contract.dead_letter import DeadLetterRecord
from v2c.contract.errors import InvalidInput
from v2c.contract.events import replay_event
from v2c.gateway.event import LambdaContext
from v2c.gateway.publisher import OutboundPublisher
from v2c.gateway.rules import Handler, Rule, load_handler


class InboundRedriver:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = {rule.name: rule for rule in rules}
        self._handlers: dict[str, Handler] = {}

    def __call__(self, record: DeadLetterRecord) -> None:
        rule = self._rules.get(record.source)
        if rule is None:
            raise InvalidInput(f"record {record.record_id} names unknown rule {record.source!r}")
        handler = self._handlers.get(rule.name) or load_handler(rule.handler)
        self._handlers[rule.name] = handler
        event = replay_event(record, qos=rule.qos)
        handler(event, LambdaContext(function_name=rule.name, timeout_s=rule.timeout_s))


class OutboundRedriver:
    def __init__(self, publisher: OutboundPublisher) -> None:
        self._publisher = publisher

    def __call__(self, record: DeadLetterRecord) -> None:
        qos = int(record.context.get("qos", 2))
        self._publisher.try_publish(record.topic, record.payload, qos=qos, props=record.properties)
