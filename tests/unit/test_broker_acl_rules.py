"""The broker ACL as text, and what it grants under mosquitto 2.0.11's rules.

`allowed` below evaluates the rendered file the way mosquitto's default ACL
check does (`src/security_default.c`): the connected user's `topic` lines,
then every `pattern` line with `%u` replaced by the username; anything
unmatched is denied. The integration tests check the real broker agrees.
"""

from __future__ import annotations

import pytest

from v2c.contract.errors import InvalidInput
from v2c.contract.topics import KINDS, Domain, filter_matches
from v2c.gateway.rules import RULES, Rule
from v2c.infra.acl import DOWNLINK, UPLINK, VEHICLE_PATTERN, render_acl

VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-2HGBH41JXMN109186"
SERVICE = "v2c-gateway"


def allowed(acl: str, username: str, access: str, topic: str) -> bool:
    current_user: str | None = None
    grants: list[tuple[str, str]] = []
    for raw in acl.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "user":
            current_user = rest
            continue
        kind, _, pattern = rest.partition(" ")
        if keyword == "pattern":
            grants.append((kind, pattern.replace("%u", username)))
        elif keyword == "topic" and current_user == username:
            grants.append((kind, pattern))
    for kind, pattern in grants:
        if filter_matches(pattern, topic):
            if kind == "deny":
                return False
            if access in kind:  # "read" / "write" are both in "readwrite"
                return True
    return False


def topic(vin: str, domain: str, kind: str, region: str = "eu-west-1") -> str:
    return f"v2c/v1/{region}/{vin}/{domain}/{kind}"


ALL_TOPICS = [(d.value, k) for d in Domain for k in sorted(KINDS[d])]
UPLINK_TOPICS = [t for t in ALL_TOPICS if any(filter_matches(f, topic(VIN, *t)) for f in UPLINK)]


def test_vehicles_get_one_pattern_line_for_their_own_subtree() -> None:
    lines = render_acl().splitlines()

    assert f"pattern readwrite {VEHICLE_PATTERN}" in lines
    assert VEHICLE_PATTERN == "v2c/v1/+/%u/#"


def test_service_block_reads_every_uplink_and_writes_every_downlink() -> None:
    lines = render_acl().splitlines()

    block = lines[lines.index(f"user {SERVICE}") + 1 :]
    assert block == [
        "topic read v2c/v1/+/+/telemetry/+",
        "topic read v2c/v1/+/+/ota/status",
        "topic read v2c/v1/+/+/commands/response",
        "topic write v2c/v1/+/+/ota/available",
        "topic write v2c/v1/+/+/commands/request",
    ]


@pytest.mark.parametrize(("domain", "kind"), ALL_TOPICS)
def test_a_vehicle_reads_and_writes_its_own_topics_in_any_region(domain: str, kind: str) -> None:
    acl = render_acl()
    for region in ("eu-west-1", "us-east-1"):
        own = topic(VIN, domain, kind, region)
        assert allowed(acl, VIN, "write", own)
        assert allowed(acl, VIN, "read", own)


@pytest.mark.parametrize(("domain", "kind"), ALL_TOPICS)
def test_a_vehicle_can_neither_write_nor_read_another_vehicles_topics(
    domain: str, kind: str
) -> None:
    acl = render_acl()
    foreign = topic(OTHER_VIN, domain, kind)

    assert not allowed(acl, VIN, "write", foreign)
    assert not allowed(acl, VIN, "read", foreign)


def test_a_vehicle_gets_nothing_outside_the_topic_scheme() -> None:
    acl = render_acl()

    for foreign in ("$SYS/broker/clients/connected", "v2c/v2/eu-west-1/" + VIN + "/ota/status"):
        assert not allowed(acl, VIN, "read", foreign)
        assert not allowed(acl, VIN, "write", foreign)


def test_uplink_is_telemetry_ota_status_and_command_responses() -> None:
    assert UPLINK_TOPICS == [
        ("telemetry", "batch"),
        ("telemetry", "heartbeat"),
        ("telemetry", "vehicle"),
        ("ota", "status"),
        ("commands", "response"),
    ]


@pytest.mark.parametrize("uplink", UPLINK_TOPICS)
def test_the_service_reads_uplink_but_cannot_forge_it(uplink: tuple[str, str]) -> None:
    acl = render_acl()
    concrete = topic(VIN, *uplink)

    assert allowed(acl, SERVICE, "read", concrete)
    assert not allowed(acl, SERVICE, "write", concrete)


@pytest.mark.parametrize("downlink", DOWNLINK)
def test_the_service_writes_downlink_for_every_vehicle_but_does_not_read_it(downlink: str) -> None:
    acl = render_acl()
    concrete = downlink.replace("+", "eu-west-1", 1).replace("+", OTHER_VIN, 1)

    assert allowed(acl, SERVICE, "write", concrete)
    assert not allowed(acl, SERVICE, "read", concrete)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_every_gateway_rule_is_readable_by_the_service_identity(rule: Rule) -> None:
    # mosquitto checks a shared subscription at delivery, against each message's topic.
    filter_levels = rule.topic_filter.split("/")
    domain = Domain(filter_levels[4])
    kind = filter_levels[5] if filter_levels[5] not in ("+", "#") else sorted(KINDS[domain])[0]

    assert allowed(render_acl(), SERVICE, "read", topic(VIN, domain.value, kind))


def test_each_service_identity_gets_its_own_block_once() -> None:
    lines = render_acl([SERVICE, "v2c-api", SERVICE]).splitlines()

    assert [line for line in lines if line.startswith("user ")] == [
        f"user {SERVICE}",
        "user v2c-api",
    ]


@pytest.mark.parametrize("name", ["", "two words", "a+b", "all#", VIN, "x\nuser root", "a/b"])
def test_names_that_could_widen_or_corrupt_the_acl_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        render_acl([name])


def test_an_acl_without_a_service_identity_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at least one"):
        render_acl([])
