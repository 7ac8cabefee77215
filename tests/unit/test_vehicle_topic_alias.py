"""Topic aliases of one connection: the first packet sets the mapping, later ones use it."""

from __future__ import annotations

from v2c.vehicle_sim.topic_alias import TopicAliases

SINGLE = "v2c/v1/eu-west-1/VIN-1HGBH41JXMN109186/telemetry/vehicle"
BATCH = "v2c/v1/eu-west-1/VIN-1HGBH41JXMN109186/telemetry/batch"
OTHER = "v2c/v1/eu-west-1/VIN-1HGBH41JXMN109186/ota/status"


def test_first_publish_carries_topic_and_alias_later_ones_the_alias_alone() -> None:
    aliases = TopicAliases(10, [SINGLE, BATCH])
    assert aliases.resolve(SINGLE) == (SINGLE, 1)
    assert aliases.resolve(SINGLE) == ("", 1)
    assert aliases.resolve(BATCH) == (BATCH, 2)
    assert aliases.resolve(BATCH) == ("", 2)
    assert aliases.resolve(SINGLE) == ("", 1)


def test_broker_without_aliases_gets_full_topics() -> None:
    aliases = TopicAliases(0, [SINGLE])
    assert aliases.resolve(SINGLE) == (SINGLE, None)
    assert aliases.resolve(SINGLE) == (SINGLE, None)


def test_the_brokers_topic_alias_maximum_is_respected() -> None:
    aliases = TopicAliases(1, [SINGLE, BATCH])
    assert aliases.resolve(SINGLE) == (SINGLE, 1)
    assert aliases.resolve(BATCH) == (BATCH, None)
    assert aliases.assigned == {SINGLE: 1}


def test_topics_not_worth_an_alias_always_go_out_in_full() -> None:
    aliases = TopicAliases(10, [SINGLE])
    assert aliases.resolve(OTHER) == (OTHER, None)
    assert aliases.resolve(OTHER) == (OTHER, None)


def test_a_new_connection_starts_without_mappings() -> None:
    first = TopicAliases(10, [SINGLE])
    first.resolve(SINGLE)
    assert TopicAliases(10, [SINGLE]).resolve(SINGLE) == (SINGLE, 1)
