"""Who may do what on the broker (`device_policy`), in both renderings.

`dynsec_allows` evaluates the dynamic-security document the way mosquitto
2.0.11's plugin does (`plugins/dynamic-security/acl.c`): the client's roles'
ACLs of the access type, `subscribeLiteral` by string equality,
`subscribePattern` with `sub_acl_check` (`sub_matches_sub.c`), publish and
receive with MQTT topic matching; a username that is no client of the plugin,
or no matching ACL with the default access false, is a denial.
`aws_allows` evaluates the IoT policy document: its ARNs are literal. The
integration tests (`tests/integration/test_broker_acl.py`) check the real
broker agrees.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from v2c.contract.errors import InvalidInput
from v2c.contract.topics import KINDS, KNOWN_REGIONS, Domain, filter_matches
from v2c.gateway.rules import RULES, Rule
from v2c.infra.device_policy import (
    ADMIN_COMMON_NAME,
    AWS_TOPIC_VEHICLE,
    DEFAULT_ACL_ACCESS,
    DOWNLINK,
    UPLINK,
    Action,
    aws_iot_vehicle_policy,
    dynsec_config,
    vehicle_registration,
)

VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-2HGBH41JXMN109186"
UNREGISTERED = "VIN-3HGBH41JXMN109186"
SERVICE = "v2c-gateway"
ARN = "arn:aws:iot:eu-west-1:123456789012"


def sub_acl_check(acl: str, sub: str) -> bool:
    """mosquitto 2.0.11's `sub_acl_check`: does the ACL filter cover the subscription filter?"""
    if acl == "#":
        return True
    acl_hash, sub_hash = acl == "#" or acl.endswith("/#"), sub == "#" or sub.endswith("/#")
    acl_levels = acl.removesuffix("#").removesuffix("/").split("/") if acl_hash else acl.split("/")
    sub_levels = sub.removesuffix("#").removesuffix("/").split("/") if sub_hash else sub.split("/")
    if sub_hash and not acl_hash:
        return False
    if len(acl_levels) > len(sub_levels):
        return False
    if len(sub_levels) > len(acl_levels) and not acl_hash:
        return False
    for i, token in enumerate(sub_levels):
        if i < len(acl_levels) and acl_levels[i] in ("+", token):
            continue
        if i >= len(acl_levels) and acl_hash:
            continue
        return False
    return True


def dynsec_allows(config: dict[str, Any], user: str, action: Action, topic: str) -> bool:
    client = next((c for c in config["clients"] if c["username"] == user), None)
    if client is None:
        return False  # the plugin defers, and a deferred check is a denial
    names = {r["rolename"] for r in client["roles"]}
    acls = [a for r in config["roles"] if r["rolename"] in names for a in r["acls"]]
    for acl in acls:
        kind, pattern = acl["acltype"], acl["topic"]
        if action is Action.PUBLISH and kind == "publishClientSend":
            hit = filter_matches(pattern, topic) and not topic.startswith("$share/")
        elif action is Action.RECEIVE and kind == "publishClientReceive":
            hit = filter_matches(pattern, topic)
        elif action is Action.SUBSCRIBE and kind == "subscribeLiteral":
            hit = pattern == topic
        elif action is Action.SUBSCRIBE and kind == "subscribePattern":
            hit = sub_acl_check(pattern, topic)
        else:
            continue
        if hit:
            return bool(acl["allow"])
    default = {
        Action.PUBLISH: "publishClientSend",
        Action.RECEIVE: "publishClientReceive",
        Action.SUBSCRIBE: "subscribe",
    }
    return bool(config["defaultACLAccess"][default[action]])


def aws_allows(policy: dict[str, Any], thing: str, action: Action, topic: str) -> bool:
    iot_action, resource = {
        Action.PUBLISH: ("iot:Publish", f"{ARN}:topic/{topic}"),
        Action.RECEIVE: ("iot:Receive", f"{ARN}:topic/{topic}"),
        Action.SUBSCRIBE: ("iot:Subscribe", f"{ARN}:topicfilter/{topic}"),
    }[action]
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow" and statement["Action"] == iot_action:
            resources = [r.replace(AWS_TOPIC_VEHICLE, thing) for r in statement["Resource"]]
            if resource in resources:
                return True
    return False


def topic(vin: str, domain: str, kind: str, region: str = "eu-west-1") -> str:
    return f"v2c/v1/{region}/{vin}/{domain}/{kind}"


ALL_KINDS = [(d.value, k) for d in Domain for k in sorted(KINDS[d])]
UPLINK_KINDS = [(d.value, k) for d, kinds in UPLINK.items() for k in kinds]
DOWNLINK_KINDS = [(d.value, k) for d, kinds in DOWNLINK.items() for k in kinds]
REGIONS = [*KNOWN_REGIONS, "eu-central-1"]
CONFIG = dynsec_config([VIN, OTHER_VIN])


def concrete_topics() -> list[str]:
    """Every topic of the scheme for two vehicles and four regions, plus wrong shapes."""
    topics = [
        topic(v, d, k, r)
        for v, (d, k), r in itertools.product((VIN, OTHER_VIN), ALL_KINDS, REGIONS)
    ]
    own = topic(VIN, "telemetry", "vehicle")
    topics += [
        own + "/extra",
        own.rsplit("/", 1)[0],
        f"v2c/v2/eu-west-1/{VIN}/telemetry/vehicle",
        f"v2c/v1/eu-west-1/{VIN}/telemetry/unknown",
        "$SYS/broker/clients/connected",
        "$CONTROL/dynamic-security/v1",
    ]
    return topics


def subscription_filters(group: str = "v2c-0123") -> list[str]:
    own = [topic(VIN, d, k, r) for (d, k), r in itertools.product(ALL_KINDS, REGIONS)]
    filters = [
        *own,
        *(topic(OTHER_VIN, d, k) for d, k in ALL_KINDS),
        "#",
        "v2c/#",
        "v2c/v1/+/+/#",
        "v2c/v1/+/+/telemetry/#",
        "v2c/v1/+/+/telemetry/vehicle",
        f"v2c/v1/+/{VIN}/#",
        f"v2c/v1/eu-west-1/{VIN}/ota/+",
        f"v2c/v1/+/{VIN}/ota/available",
        f"v2c/v1/+/{OTHER_VIN}/#",
        "$CONTROL/dynamic-security/#",
        "$SYS/#",
    ]
    filters += [f"$share/{group}/{f}" for f in filters if not f.startswith("$")]
    return filters


# -- the direction table -------------------------------------------------------------


def test_every_kind_of_the_contract_travels_one_way_exactly() -> None:
    assert sorted(UPLINK_KINDS + DOWNLINK_KINDS) == sorted(ALL_KINDS)
    assert not set(UPLINK_KINDS) & set(DOWNLINK_KINDS)
    assert UPLINK_KINDS == [
        ("telemetry", "batch"),
        ("telemetry", "heartbeat"),
        ("telemetry", "vehicle"),
        ("ota", "status"),
        ("commands", "response"),
        ("certificate", "renew"),
    ]


# -- vehicles ------------------------------------------------------------------------


def test_a_vehicle_publishes_exactly_its_own_uplink_in_the_known_regions() -> None:
    allowed = {t for t in concrete_topics() if dynsec_allows(CONFIG, VIN, Action.PUBLISH, t)}

    assert allowed == {
        topic(VIN, d, k, r) for (d, k), r in itertools.product(UPLINK_KINDS, KNOWN_REGIONS)
    }


def test_a_vehicle_subscribes_to_and_receives_only_its_own_downlink_by_literal_name() -> None:
    subscribable = {
        f for f in subscription_filters() if dynsec_allows(CONFIG, VIN, Action.SUBSCRIBE, f)
    }
    receivable = {t for t in concrete_topics() if dynsec_allows(CONFIG, VIN, Action.RECEIVE, t)}

    own_downlink = {
        topic(VIN, d, k, r) for (d, k), r in itertools.product(DOWNLINK_KINDS, KNOWN_REGIONS)
    }
    assert subscribable == own_downlink  # no wildcard, no $share, no other vehicle
    assert receivable == own_downlink


def test_a_vehicle_never_gets_a_shared_or_wildcard_subscription() -> None:
    for group in ("v2c", "v2c-0123456789abcdef0123456789abcdef"):
        for candidate in subscription_filters(group):
            if candidate.startswith("$share/") or "+" in candidate or "#" in candidate:
                assert not dynsec_allows(CONFIG, VIN, Action.SUBSCRIBE, candidate), candidate


def test_an_unregistered_vehicle_may_do_nothing() -> None:
    for action, candidates in (
        (Action.PUBLISH, concrete_topics()),
        (Action.RECEIVE, concrete_topics()),
        (Action.SUBSCRIBE, subscription_filters()),
    ):
        for candidate in candidates:
            assert not dynsec_allows(CONFIG, UNREGISTERED, action, candidate)


def test_vehicle_roles_hold_literal_topics_only() -> None:
    vehicle_roles = [r for r in CONFIG["roles"] if r["rolename"].startswith("VIN-")]

    assert {r["rolename"] for r in vehicle_roles} == {VIN, OTHER_VIN}
    for role in vehicle_roles:
        for acl in role["acls"]:
            assert "+" not in acl["topic"]
            assert "#" not in acl["topic"]
            assert role["rolename"] in acl["topic"]
            assert acl["acltype"] in {
                "publishClientSend",
                "publishClientReceive",
                "subscribeLiteral",
            }


# -- services and the admin ----------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_the_service_subscribes_to_every_gateway_rule_plainly_and_shared(rule: Rule) -> None:
    for subscription in (rule.topic_filter, f"$share/any-group/{rule.topic_filter}"):
        assert dynsec_allows(CONFIG, SERVICE, Action.SUBSCRIBE, subscription)


def test_the_service_reads_every_uplink_and_writes_every_downlink_never_the_reverse() -> None:
    for vin, (d, k), region in itertools.product((VIN, OTHER_VIN), ALL_KINDS, REGIONS):
        concrete = topic(vin, d, k, region)
        uplink = (d, k) in UPLINK_KINDS
        assert dynsec_allows(CONFIG, SERVICE, Action.RECEIVE, concrete) is uplink
        assert dynsec_allows(CONFIG, SERVICE, Action.PUBLISH, concrete) is not uplink


def test_the_service_cannot_subscribe_to_everything_nor_to_the_control_topic() -> None:
    for candidate in ("#", "v2c/#", "v2c/v1/+/+/#", "$CONTROL/dynamic-security/#", "$SYS/#"):
        assert not dynsec_allows(CONFIG, SERVICE, Action.SUBSCRIBE, candidate)
    assert not dynsec_allows(CONFIG, SERVICE, Action.PUBLISH, "$CONTROL/dynamic-security/v1")


def test_only_the_admin_uses_the_plugins_control_topic() -> None:
    control, response = "$CONTROL/dynamic-security/v1", "$CONTROL/dynamic-security/v1/response"

    assert dynsec_allows(CONFIG, ADMIN_COMMON_NAME, Action.PUBLISH, control)
    assert dynsec_allows(CONFIG, ADMIN_COMMON_NAME, Action.SUBSCRIBE, response)
    assert dynsec_allows(CONFIG, ADMIN_COMMON_NAME, Action.RECEIVE, response)
    for candidate in concrete_topics():
        if not candidate.startswith("$CONTROL"):
            assert not dynsec_allows(CONFIG, ADMIN_COMMON_NAME, Action.PUBLISH, candidate)
            assert not dynsec_allows(CONFIG, ADMIN_COMMON_NAME, Action.RECEIVE, candidate)
    for user in (VIN, SERVICE):
        assert not dynsec_allows(CONFIG, user, Action.PUBLISH, control)
        assert not dynsec_allows(CONFIG, user, Action.SUBSCRIBE, response)


# -- the document ----------------------------------------------------------------------


def test_nothing_is_allowed_by_default_but_unsubscribing() -> None:
    assert (
        CONFIG["defaultACLAccess"]
        == DEFAULT_ACL_ACCESS
        == {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        }
    )


def test_each_identity_is_one_client_with_one_role_and_no_password() -> None:
    config = dynsec_config([VIN, OTHER_VIN, VIN], services=[SERVICE, "v2c-api", SERVICE])

    users = [c["username"] for c in config["clients"]]
    assert users == [SERVICE, "v2c-api", ADMIN_COMMON_NAME, VIN, OTHER_VIN]
    assert all(set(c) == {"username", "roles"} for c in config["clients"])
    assert len({r["rolename"] for r in config["roles"]}) == len(config["roles"])


def test_registration_commands_create_the_vehicles_role_then_its_client() -> None:
    create_role, create_client = vehicle_registration(VIN)

    assert create_role["command"] == "createRole"
    assert create_role["rolename"] == VIN
    role = next(r for r in CONFIG["roles"] if r["rolename"] == VIN)
    assert create_role["acls"] == role["acls"]
    assert create_client == {
        "command": "createClient",
        "username": VIN,
        "roles": [{"rolename": VIN}],
    }


@pytest.mark.parametrize("name", ["", "two words", "a+b", "all#", VIN, "x\nuser", "a/b"])
def test_service_names_that_could_widen_the_policy_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        dynsec_config([], services=[name])


@pytest.mark.parametrize("bad", ["VIN-BAD", "VIN-1HGBH41JXMN10918#", "+"])
def test_vehicle_ids_outside_the_scheme_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        dynsec_config([bad])


def test_the_admin_cannot_also_be_a_service() -> None:
    with pytest.raises(InvalidInput, match="admin"):
        dynsec_config([], services=[ADMIN_COMMON_NAME])


# -- AWS IoT Core ----------------------------------------------------------------------


POLICY = aws_iot_vehicle_policy(region="eu-west-1", account="123456789012")


def test_aws_policy_connects_a_certificate_only_as_its_own_thing() -> None:
    connect = next(s for s in POLICY["Statement"] if s["Action"] == "iot:Connect")

    assert connect["Resource"] == f"{ARN}:client/${{iot:Connection.Thing.ThingName}}"
    assert connect["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
    actions = {s["Action"] for s in POLICY["Statement"]}
    assert actions == {"iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"}
    assert all(s["Effect"] == "Allow" for s in POLICY["Statement"])  # no iot:RetainPublish


@pytest.mark.parametrize("action", list(Action))
def test_both_renderings_grant_the_same_things(action: Action) -> None:
    candidates = subscription_filters() if action is Action.SUBSCRIBE else concrete_topics()
    for candidate in candidates:
        assert dynsec_allows(CONFIG, VIN, action, candidate) == aws_allows(
            POLICY, VIN, action, candidate
        ), candidate
    granted = [c for c in candidates if aws_allows(POLICY, VIN, action, c)]
    assert granted  # the comparison is not vacuous
