"""Topic scheme: building, parsing, filters, shared subscriptions and the QoS table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from v2c.contract.errors import InvalidTopic
from v2c.contract.topics import (
    Domain,
    Topic,
    TopicFilter,
    filter_matches,
    qos_for,
    strip_share,
    validate_vin,
)

VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-5YJ3E1EA7KF317000"
TELEMETRY = f"v2c/v1/us-east-1/{VIN}/telemetry/vehicle"


def test_topic_round_trips_through_text() -> None:
    topic = Topic.parse(TELEMETRY)
    assert (topic.region, topic.vehicle_id, topic.domain, topic.kind) == (
        "us-east-1",
        VIN,
        Domain.TELEMETRY,
        "vehicle",
    )
    assert str(topic) == TELEMETRY
    assert Topic("eu-west-1", VIN, Domain.OTA, "status") == Topic.parse(
        f"v2c/v1/eu-west-1/{VIN}/ota/status"
    )


@pytest.mark.parametrize(
    ("domain", "kind", "qos"),
    [
        (Domain.TELEMETRY, "vehicle", 1),
        (Domain.TELEMETRY, "batch", 1),
        (Domain.OTA, "available", 2),
        (Domain.OTA, "status", 2),
        (Domain.COMMANDS, "request", 1),
    ],
)
def test_qos_table_is_per_domain(domain: Domain, kind: str, qos: int) -> None:
    assert Topic("us-east-1", VIN, domain, kind).qos == qos
    assert qos_for(domain.value) == qos


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "v2c/v1/us-east-1/VIN-1HGBH41JXMN109186/telemetry",  # too short
        "v2c/v2/us-east-1/VIN-1HGBH41JXMN109186/telemetry/vehicle",  # wrong version
        "v2c/v1/US-EAST-1/VIN-1HGBH41JXMN109186/telemetry/vehicle",  # region case
        "v2c/v1/mars/VIN-1HGBH41JXMN109186/telemetry/vehicle",  # not a region
        "v2c/v1/us-east-1/1HGBH41JXMN109186/telemetry/vehicle",  # no VIN- prefix
        "v2c/v1/us-east-1/VIN-1HGBH41JXMN10918/telemetry/vehicle",  # 16 characters
        "v2c/v1/us-east-1/VIN-1HGBH41JXMN10918O/telemetry/vehicle",  # O is not a VIN char
        "v2c/v1/us-east-1/+/telemetry/vehicle",  # wildcard in a topic name
        "v2c/v1/us-east-1/VIN-1HGBH41JXMN109186/firmware/vehicle",  # unknown domain
        "v2c/v1/us-east-1/VIN-1HGBH41JXMN109186/ota/vehicle",  # kind of another domain
        "v2c/v1/us-east-1/VIN-1HGBH41JXMN109186/telemetry/vehicle/extra",
    ],
)
def test_invalid_topic_raises_typed_error_with_reason_code(bad: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        Topic.parse(bad)
    assert info.value.reason == "invalid_topic"


def test_filters_render_wildcards_and_shared_form() -> None:
    assert str(TopicFilter(domain=Domain.TELEMETRY, kind="vehicle")) == (
        "v2c/v1/+/+/telemetry/vehicle"
    )
    assert str(TopicFilter(domain=Domain.OTA)) == "v2c/v1/+/+/ota/+"
    assert str(TopicFilter.for_vehicle(VIN)) == f"v2c/v1/+/{VIN}/#"
    assert TopicFilter(domain=Domain.OTA, kind="status").shared("gateway") == (
        "$share/gateway/v2c/v1/+/+/ota/status"
    )
    with pytest.raises(InvalidTopic):
        TopicFilter(domain=Domain.OTA).shared("bad/group")
    with pytest.raises(InvalidTopic):
        TopicFilter(kind="status")


def test_vehicle_filter_matches_only_its_own_topics() -> None:
    own = TopicFilter.for_vehicle(VIN)
    assert own.matches(TELEMETRY)
    assert own.matches(Topic("ap-south-1", VIN, Domain.OTA, "status"))
    assert not own.matches(TELEMETRY.replace(VIN, OTHER_VIN))


@pytest.mark.parametrize(
    ("flt", "topic", "expected"),
    [
        ("a/b/c", "a/b/c", True),
        ("a/+/c", "a/b/c", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),  # '#' also matches the parent level
        ("a/#", "a/b/c", True),
        ("#", "$SYS/broker", False),  # wildcards never match $-topics
        ("+/b", "$SYS/b", False),
        ("$share/g/a/+", "a/b", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_filter_matching_follows_mqtt5(flt: str, topic: str, expected: bool) -> None:
    assert filter_matches(flt, topic) is expected


def test_strip_share_rejects_malformed_share() -> None:
    assert strip_share("$share/g/a/b") == "a/b"
    with pytest.raises(InvalidTopic):
        strip_share("$share/g")


VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


@given(
    vin=st.text(alphabet=VIN_CHARS, min_size=17, max_size=17),
    region=st.sampled_from(["us-east-1", "eu-central-2", "us-gov-west-1", "ap-southeast-4"]),
    domain=st.sampled_from(list(Domain)),
    data=st.data(),
)
def test_any_valid_topic_round_trips_and_matches_its_filters(
    vin: str, region: str, domain: Domain, data: st.DataObject
) -> None:
    from v2c.contract.topics import KINDS

    kind = data.draw(st.sampled_from(sorted(KINDS[domain])))
    topic = Topic(region, validate_vin(f"VIN-{vin}"), domain, kind)
    assert Topic.parse(str(topic)) == topic
    assert TopicFilter(domain=domain, kind=kind).matches(topic)
    assert TopicFilter(domain=domain).matches(topic)
    assert TopicFilter.for_vehicle(topic.vehicle_id).matches(topic)
