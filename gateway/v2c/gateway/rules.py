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
from v2c.contract.topics import Domain, TopicFilter, filter_matches

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


def _filter(domain: Domain, kind: str) -> str:
    return str(TopicFilter(domain=domain, kind=kind))


# The production table. Handlers are added here as the features land.
RULES: tuple[Rule, ...] = (
    Rule(
        name="ota_status",
        topic_filter=_filter(Domain.OTA, "status"),
        handler="v2c.handlers.noop:lambda_handler",
        dlq="ota",
        qos=2,
    ),
    Rule(
        name="telemetry",
        topic_filter=_filter(Domain.TELEMETRY, "vehicle"),
        handler="v2c.handlers.telemetry_ingest:lambda_handler",
        dlq="telemetry",
        qos=1,
    ),
    Rule(
        name="telemetry_batch",
        topic_filter=_filter(Domain.TELEMETRY, "batch"),
        handler="v2c.handlers.telemetry_batch:lambda_handler",
        dlq="telemetry",
        qos=1,
    ),
)
