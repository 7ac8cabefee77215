"""Who may do what on the broker, derived from the topic contract, in one place.

One definition, two renderings:

* `dynsec_config` / `vehicle_registration`: mosquitto's dynamic-security
  plugin (the local stack): clients, roles and a default of "deny";
* `aws_iot_vehicle_policy`: the AWS IoT Core policy document every vehicle
  certificate gets (`${iot:ClientId}`, the thing name, standing for the VIN).

The rules (topics `v2c/v1/{region}/{vehicle_id}/{domain}/{kind}`,
`v2c.contract.topics`):

* a **vehicle** (certificate CN = its vehicle id = its client id) publishes
  only its own uplink kinds (telemetry/*, ota/status, commands/response,
  certificate/renew) at
  exactly that depth, in a known region (`KNOWN_REGIONS`); it subscribes only
  to its own downlink topics (ota/available, commands/request,
  certificate/issued), each by its
  literal name, so no wildcard and no `$share/...` filter is ever granted, and
  it receives only those. Nothing else: not another VIN, not an unknown
  region, not a deeper or shallower topic, not a downlink kind;
* a **service** (the gateway, the OTA publisher, CLI tools: CN `v2c-...`)
  subscribes to every uplink, plainly or as `$share/<any group>/...`,
  receives every uplink and publishes every downlink;
* the **admin** service identity may use the plugin's own topics
  (`$CONTROL/dynamic-security/#`) to register vehicles in a running broker.

Why mosquitto's dynamic-security plugin rather than its `acl_file`:
mosquitto 2.0.11's ACL file never checks SUBSCRIBE
(`src/security_default.c` answers success for MOSQ_ACL_SUBSCRIBE), so a vehicle
could join the gateway's shared group and have the broker drop messages it
is not allowed to receive. The plugin checks SUBSCRIBE against the full filter
as sent (`$share/<group>/...` included: `src/handle_subscribe.c`) and a refusal
is SUBACK 0x87. It has no `%u` substitution in 2.0.11, so every vehicle is a
client of its own with a role of literal topics; a username that is not a
client of the plugin is denied everything (every ACL check defers, and a
deferred check is a denial in `src/security.c`).

Retained messages: the stack's broker runs with `retain_available false`
(nothing in v2c publishes retained); AWS IoT Core needs `iot:RetainPublish`,
which no vehicle is granted. Unsubscribing is left open in both: it only ever
removes the client's own subscriptions, and AWS IoT has no such action.

This module is pure: it builds documents, the callers write or send them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from v2c.contract.errors import InvalidInput
from v2c.contract.topics import (
    KINDS,
    KNOWN_REGIONS,
    MULTI_LEVEL,
    PREFIX,
    SINGLE_LEVEL,
    Domain,
    validate_region,
    validate_vin,
)
from v2c.infra.pki.certs import ADMIN_COMMON_NAME, SERVICE_COMMON_NAME, SERVICE_NAME_PATTERN

SERVICE_ROLE: Final = "v2c-service"
ADMIN_ROLE: Final = "v2c-admin"
CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSE_TOPIC: Final = f"{CONTROL_TOPIC}/response"
SHARE_PREFIX: Final = "$share"
# What AWS IoT substitutes with the thing name (= the VIN) of the connecting certificate.
AWS_THING_NAME: Final = "${iot:Connection.Thing.ThingName}"
# What the topic resources name the vehicle by: its client id, which the
# Connect statement makes equal to its thing name (`client/<thing name>`), so
# it names the same vehicle in every session, in 19 characters fewer per
# topic: the certificate topics took the document past AWS IoT's 2,048.
AWS_TOPIC_VEHICLE: Final = "${iot:ClientId}"

# Which way each (domain, kind) travels; every kind of the contract is in exactly one.
UPLINK: Final[dict[Domain, tuple[str, ...]]] = {
    Domain.TELEMETRY: tuple(sorted(KINDS[Domain.TELEMETRY])),
    Domain.OTA: ("status",),
    Domain.COMMANDS: ("response",),
    Domain.CERTIFICATE: ("renew",),
}
DOWNLINK: Final[dict[Domain, tuple[str, ...]]] = {
    Domain.OTA: ("available",),
    Domain.COMMANDS: ("request",),
    Domain.CERTIFICATE: ("issued",),
}


class Action(StrEnum):
    PUBLISH = "publish"  # client -> broker, on a concrete topic
    SUBSCRIBE = "subscribe"  # a filter the client may subscribe to (covered by `topic`)
    RECEIVE = "receive"  # broker -> client, on a concrete topic


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One permission; `topic` is MQTT syntax (`+`, `#` are wildcards)."""

    action: Action
    topic: str

    @property
    def literal(self) -> bool:
        return SINGLE_LEVEL not in self.topic.split("/") and MULTI_LEVEL not in self.topic


@dataclass(frozen=True, slots=True)
class Principal:
    """A broker identity (certificate CN = MQTT username) and what it may do."""

    name: str
    role: str
    grants: tuple[Grant, ...]


def _topic(region: str, vehicle: str, domain: Domain, kind: str) -> str:
    return "/".join((*PREFIX, region, vehicle, domain.value, kind))


def _pairs(table: dict[Domain, tuple[str, ...]]) -> list[tuple[Domain, str]]:
    return [(domain, kind) for domain, kinds in table.items() for kind in kinds]


def _regions(regions: Sequence[str]) -> tuple[str, ...]:
    checked = tuple(dict.fromkeys(validate_region(r) for r in regions))
    if not checked:
        raise InvalidInput("the broker policy needs at least one region")
    return checked


def _vehicle_grants(vehicle: str, regions: Sequence[str]) -> tuple[Grant, ...]:
    """`vehicle` unchecked, so that the AWS rendering can pass its policy variable."""
    grants: list[Grant] = []
    for region in regions:
        grants += [Grant(Action.PUBLISH, _topic(region, vehicle, d, k)) for d, k in _pairs(UPLINK)]
        for domain, kind in _pairs(DOWNLINK):
            own = _topic(region, vehicle, domain, kind)
            grants += [Grant(Action.SUBSCRIBE, own), Grant(Action.RECEIVE, own)]
    return tuple(grants)


def vehicle_principal(vehicle_id: str, regions: Sequence[str] = KNOWN_REGIONS) -> Principal:
    """A vehicle: its own uplink out, its own downlink in, in the known regions; literal topics."""
    vin = validate_vin(vehicle_id)
    return Principal(vin, vin, _vehicle_grants(vin, _regions(regions)))


def _every_vehicle(domain: Domain, kind: str) -> str:
    # Telemetry has several kinds: `#` covers a `+` or a literal kind alike in
    # a service's subscription filter; a deeper topic is never published.
    last = MULTI_LEVEL if domain is Domain.TELEMETRY else kind
    return "/".join((*PREFIX, SINGLE_LEVEL, SINGLE_LEVEL, domain.value, last))


def _uplink_filters() -> tuple[str, ...]:
    return tuple(dict.fromkeys(_every_vehicle(d, k) for d, k in _pairs(UPLINK)))


def _downlink_filters() -> tuple[str, ...]:
    return tuple(dict.fromkeys(_every_vehicle(d, k) for d, k in _pairs(DOWNLINK)))


def service_grants() -> tuple[Grant, ...]:
    """Every uplink in (plain or shared, any group), every downlink out."""
    uplink = _uplink_filters()
    shared = tuple(f"{SHARE_PREFIX}/{SINGLE_LEVEL}/{f}" for f in uplink)
    return (
        *(Grant(Action.SUBSCRIBE, f) for f in (*uplink, *shared)),
        *(Grant(Action.RECEIVE, f) for f in uplink),
        *(Grant(Action.PUBLISH, f) for f in _downlink_filters()),
    )


def admin_grants() -> tuple[Grant, ...]:
    control = "$CONTROL/dynamic-security/#"
    return (
        Grant(Action.PUBLISH, control),
        Grant(Action.SUBSCRIBE, control),
        Grant(Action.RECEIVE, control),
    )


def check_service_name(name: str) -> str:
    # A service named like a vehicle would get that vehicle's rights; the
    # certificates module refuses to issue one too.
    if not SERVICE_NAME_PATTERN.fullmatch(name) or name.startswith("VIN-"):
        raise InvalidInput(f"invalid service identity {name!r} for the broker policy")
    return name


def service_principals(
    services: Iterable[str] = (SERVICE_COMMON_NAME,), admin: str = ADMIN_COMMON_NAME
) -> tuple[Principal, ...]:
    names = list(dict.fromkeys(check_service_name(s) for s in services))
    if check_service_name(admin) in names:
        raise InvalidInput(f"{admin!r} is the admin identity: not also a service")
    granted = service_grants()
    return (
        *(Principal(name, SERVICE_ROLE, granted) for name in names),
        Principal(admin, ADMIN_ROLE, admin_grants()),
    )


# -- mosquitto dynamic-security ------------------------------------------------------

_DYNSEC_TYPES: Final = {
    Action.PUBLISH: ("publishClientSend", "publishClientSend"),
    Action.RECEIVE: ("publishClientReceive", "publishClientReceive"),
    Action.SUBSCRIBE: ("subscribeLiteral", "subscribePattern"),
}
# Explicit, not the plugin's defaults (which let every client receive anything).
DEFAULT_ACL_ACCESS: Final = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


def dynsec_acls(grants: Iterable[Grant]) -> list[dict[str, Any]]:
    acls = []
    for grant in grants:
        literal_type, pattern_type = _DYNSEC_TYPES[grant.action]
        acltype = literal_type if grant.literal else pattern_type
        acls.append({"acltype": acltype, "topic": grant.topic, "allow": True})
    return acls


def _role(principal: Principal) -> dict[str, Any]:
    return {"rolename": principal.role, "acls": dynsec_acls(principal.grants)}


def _client(principal: Principal) -> dict[str, Any]:
    return {"username": principal.name, "roles": [{"rolename": principal.role}]}


def dynsec_config(
    vehicle_ids: Iterable[str],
    *,
    services: Iterable[str] = (SERVICE_COMMON_NAME,),
    admin: str = ADMIN_COMMON_NAME,
    regions: Sequence[str] = KNOWN_REGIONS,
) -> dict[str, Any]:
    """The plugin's whole state (`dynamic-security.json`): services, admin, every vehicle.

    No passwords: identities come from client certificates
    (`use_identity_as_username`), where mosquitto runs no password check.
    """
    checked = _regions(regions)
    vehicles = [vehicle_principal(v, checked) for v in dict.fromkeys(vehicle_ids)]
    principals = [*service_principals(services, admin), *vehicles]
    roles = {p.role: _role(p) for p in principals}
    return {
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
        "clients": [_client(p) for p in principals],
        "groups": [],
        "roles": list(roles.values()),
    }


def vehicle_registration(
    vehicle_id: str, regions: Sequence[str] = KNOWN_REGIONS
) -> list[dict[str, Any]]:
    """The `$CONTROL/dynamic-security/v1` commands that admit one vehicle to a running broker."""
    principal = vehicle_principal(vehicle_id, regions)
    return [
        {"command": "createRole", **_role(principal)},
        {"command": "createClient", **_client(principal)},
    ]


# -- AWS IoT Core --------------------------------------------------------------------


def aws_iot_vehicle_policy(
    *,
    region: str,
    account: str,
    partition: str = "aws",
    regions: Sequence[str] = KNOWN_REGIONS,
) -> dict[str, Any]:
    """The IoT policy document attached to every vehicle certificate.

    The thing name is the vehicle id (the certificate CN); `iot:Connect` only
    as its own thing (client id = `${iot:Connection.Thing.ThingName}`), with
    the certificate attached, so `${iot:ClientId}` (`AWS_TOPIC_VEHICLE`)
    stands in the topics where the dynsec rendering has the VIN.
    """
    arn = f"arn:{partition}:iot:{region}:{account}"
    grants = _vehicle_grants(AWS_TOPIC_VEHICLE, _regions(regions))

    def resources(action: Action, kind: str) -> list[str]:
        return [f"{arn}:{kind}/{g.topic}" for g in grants if g.action is action]

    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{arn}:client/{AWS_THING_NAME}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": resources(Action.PUBLISH, "topic"),
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": resources(Action.SUBSCRIBE, "topicfilter"),
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": resources(Action.RECEIVE, "topic"),
            },
        ],
    }
