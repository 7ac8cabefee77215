"""The rules table: which topic filter invokes which handler, and where its
failures are dead-lettered. `template.yaml` expresses the same table as AWS IoT
topic rules; a test keeps the two in step.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from v2c.contract.errors import InvalidInput
from v2c.contract.topics import Domain, TopicFilter, filter_matches, qos_for

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    topic_filter: str  # plain filter; the gateway subscribes to its shared form
    handler: str  # "package.module:function", imported lazily
    dlq: str  # dead-letter queue name: "telemetry" (S3) or "ota" (SQS)
    qos: int = 1
    timeout_s: float = 30.0

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


def _rule(name: str, domain: Domain, kind: str, handler: str, dlq: str) -> Rule:
    """A production rule; its QoS comes from the one QoS table, never restated."""
    return Rule(
        name=name,
        topic_filter=str(TopicFilter(domain=domain, kind=kind)),
        handler=handler,
        dlq=dlq,
        qos=qos_for(domain),
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
)
