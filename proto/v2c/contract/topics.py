"""The topic scheme `v2c/v1/{region}/{vehicle_id}/{domain}/{kind}` as value objects.

Topics are validated where they are made, so a `Topic` that exists is a topic
the broker ACL, the gateway's rules table and the handlers all agree on. The
one QoS table lives here too: telemetry travels at QoS 1, everything under
`ota/` at QoS 2 (exactly-once in effect also rests on ids and sequence
numbers, because AWS IoT Core downgrades QoS 2 to 1), commands at QoS 1,
certificate rotation at QoS 1 (`certificate/renew` up with a CSR,
`certificate/issued` down with the answer: `v2c.contract.certificate_renewal`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from v2c.contract.errors import InvalidTopic

PREFIX: Final = ("v2c", "v1")
VIN_PATTERN: Final = re.compile(r"^VIN-[A-HJ-NPR-Z0-9]{17}$")
# AWS region names: us-east-1, eu-central-2, us-gov-west-1, ap-southeast-4 ...
REGION_PATTERN: Final = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
# The regions the fleet operates in: the broker lets a vehicle publish only there
# (`v2c.infra.device_policy`); the simulated fleet spreads its vehicles over them.
KNOWN_REGIONS: Final = ("us-east-1", "eu-west-1", "ap-southeast-2")
SHARE_GROUP_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SINGLE_LEVEL: Final = "+"
MULTI_LEVEL: Final = "#"


class Domain(StrEnum):
    TELEMETRY = "telemetry"
    OTA = "ota"
    COMMANDS = "commands"
    CERTIFICATE = "certificate"


# Kinds each domain knows; anything else is an invalid topic.
KINDS: Final[dict[Domain, frozenset[str]]] = {
    Domain.TELEMETRY: frozenset({"vehicle", "batch", "heartbeat"}),
    Domain.OTA: frozenset({"available", "status"}),
    Domain.COMMANDS: frozenset({"request", "response"}),
    Domain.CERTIFICATE: frozenset({"renew", "issued"}),
}

QOS: Final[dict[Domain, int]] = {
    Domain.TELEMETRY: 1,
    Domain.OTA: 2,
    Domain.COMMANDS: 1,
    Domain.CERTIFICATE: 1,
}


def validate_vin(vehicle_id: str) -> str:
    """A vehicle id is `VIN-` and a 17-character VIN (no I, O or Q, as ISO 3779)."""
    if not VIN_PATTERN.fullmatch(vehicle_id):
        raise InvalidTopic(f"invalid vehicle id {vehicle_id!r}: expected VIN- and 17 characters")
    return vehicle_id


def validate_region(region: str) -> str:
    if not REGION_PATTERN.fullmatch(region):
        raise InvalidTopic(f"invalid region {region!r}: expected an AWS region such as us-east-1")
    return region


def _domain(value: str) -> Domain:
    try:
        return Domain(value)
    except ValueError:
        known = ", ".join(d.value for d in Domain)
        raise InvalidTopic(f"unknown topic domain {value!r}: expected one of {known}") from None


def _check_kind(domain: Domain, kind: str) -> None:
    if kind not in KINDS[domain]:
        known = ", ".join(sorted(KINDS[domain]))
        raise InvalidTopic(f"unknown kind {kind!r} for domain {domain.value}: expected {known}")


def qos_for(domain: Domain | str) -> int:
    """The QoS every publish and subscription in `domain` uses."""
    return QOS[_domain(domain) if isinstance(domain, str) else domain]


@dataclass(frozen=True, slots=True)
class Topic:
    """One concrete topic, e.g. `v2c/v1/us-east-1/VIN-1HGBH41JXMN109186/telemetry/vehicle`."""

    region: str
    vehicle_id: str
    domain: Domain
    kind: str

    def __post_init__(self) -> None:
        validate_region(self.region)
        validate_vin(self.vehicle_id)
        object.__setattr__(self, "domain", _domain(self.domain))
        _check_kind(self.domain, self.kind)

    @classmethod
    def parse(cls, topic: str) -> Topic:
        levels = topic.split("/")
        if len(levels) != 6 or tuple(levels[:2]) != PREFIX:
            shape = "v2c/v1/{region}/{vehicle_id}/{domain}/{kind}"
            raise InvalidTopic(f"invalid topic {topic!r}: expected {shape}")
        return cls(levels[2], levels[3], _domain(levels[4]), levels[5])

    @property
    def qos(self) -> int:
        return QOS[self.domain]

    def __str__(self) -> str:
        return "/".join((*PREFIX, self.region, self.vehicle_id, self.domain.value, self.kind))


@dataclass(frozen=True, slots=True)
class TopicFilter:
    """A subscription filter over the scheme; `None` means the `+` wildcard.

    `kind=None` with `domain=None` ends the filter in `#` (everything below).
    """

    region: str | None = None
    vehicle_id: str | None = None
    domain: Domain | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.region is not None:
            validate_region(self.region)
        if self.vehicle_id is not None:
            validate_vin(self.vehicle_id)
        if self.domain is not None:
            object.__setattr__(self, "domain", _domain(self.domain))
            if self.kind is not None:
                _check_kind(self.domain, self.kind)
        elif self.kind is not None:
            raise InvalidTopic("a filter with a kind needs a domain")

    @classmethod
    def for_vehicle(cls, vehicle_id: str) -> TopicFilter:
        """Everything one vehicle may touch: the shape of its broker ACL."""
        return cls(vehicle_id=vehicle_id)

    def __str__(self) -> str:
        levels = [*PREFIX, self.region or SINGLE_LEVEL, self.vehicle_id or SINGLE_LEVEL]
        if self.domain is None:
            levels.append(MULTI_LEVEL)
        else:
            levels += [self.domain.value, self.kind or SINGLE_LEVEL]
        return "/".join(levels)

    def shared(self, group: str) -> str:
        """The MQTT 5 shared-subscription form, `$share/<group>/<filter>`."""
        if not SHARE_GROUP_PATTERN.fullmatch(group):
            raise InvalidTopic(f"invalid share group {group!r}")
        return f"$share/{group}/{self}"

    def matches(self, topic: str | Topic) -> bool:
        return filter_matches(str(self), str(topic))

    @property
    def qos(self) -> int:
        """QoS for a subscription: the domain's, or the highest when it spans domains."""
        return QOS[self.domain] if self.domain is not None else max(QOS.values())


def strip_share(topic_filter: str) -> str:
    """`$share/group/a/b` -> `a/b`; any other filter is returned unchanged."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise InvalidTopic(f"invalid shared subscription {topic_filter!r}")
        return parts[2]
    return topic_filter


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 5 topic-filter matching (section 4.7), shared prefixes ignored."""
    f_levels = strip_share(topic_filter).split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in (SINGLE_LEVEL, MULTI_LEVEL):
        return False
    for i, f_level in enumerate(f_levels):
        if f_level == MULTI_LEVEL:
            return i == len(f_levels) - 1
        if i >= len(t_levels):
            return False
        if f_level not in (SINGLE_LEVEL, t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)
