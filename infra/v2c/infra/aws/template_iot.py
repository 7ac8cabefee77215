"""Vehicle identity in `template.yaml`: the IoT policy every certificate gets, the thing type.

The policy document is `v2c.infra.device_policy.aws_iot_vehicle_policy`, the
one definition of what a vehicle may do (its mosquitto rendering is the local
broker's ACL), with one change of form: the region level of every topic is
the policy variable `${iot:Connection.Thing.Attributes[region]}` instead of
one copy of every grant per known region. Two reasons:

* size: AWS IoT refuses a policy document over 2048 characters (whitespace
  excluded). The per-region rendering is ~1,180 characters per region, so
  three regions (3,538 for a real account id) cannot be deployed;
* scope: a vehicle publishes and subscribes in the region its thing was
  registered in (the onboarding API sets the `region` attribute, checked
  against the stack's `VehicleRegions`), not in every region. A thing
  without the attribute matches no topic: closed by default.

For every region `r`, replacing the variable by `r` gives exactly
`aws_iot_vehicle_policy(regions=(r,))`, which a unit test checks.
"""

from __future__ import annotations

import json
from typing import Any, Final

from v2c.contract.topics import KNOWN_REGIONS, PREFIX
from v2c.infra.device_policy import AWS_THING_NAME, aws_iot_vehicle_policy
from v2c.infra.names import ResourceNames

REGION_ATTRIBUTE: Final = "region"
# The thing type's searchable attributes (IoT allows three), as the
# onboarding API sets them (`v2c.handlers.vehicles.iot_issuer`).
THING_ATTRIBUTES: Final = ("model", REGION_ATTRIBUTE, "year")
THING_REGION: Final = f"${{iot:Connection.Thing.Attributes[{REGION_ATTRIBUTE}]}}"
IOT_POLICY_MAX_CHARS: Final = 2048
VEHICLE_POLICY: Final = "VehiclePolicy"
VEHICLE_THING_TYPE: Final = "VehicleThingType"
# Stand-ins rendered by `aws_iot_vehicle_policy`, replaced afterwards.
_SENTINEL_REGION: Final = KNOWN_REGIONS[0]
_PSEUDO: Final = {
    "region": "${AWS::Region}",
    "account": "${AWS::AccountId}",
    "partition": "${AWS::Partition}",
}


def _topic_level(region: str) -> str:
    return "/" + "/".join((*PREFIX, region)) + "/"


def vehicle_policy_document(region_level: str = THING_REGION) -> dict[str, Any]:
    """The policy with `region_level` where the topics name a region, the
    account's ARN parts still as `${AWS::...}` placeholders."""
    document = aws_iot_vehicle_policy(**_PSEUDO, regions=(_SENTINEL_REGION,))
    text = json.dumps(document).replace(_topic_level(_SENTINEL_REGION), _topic_level(region_level))
    found: dict[str, Any] = json.loads(text)
    return found


def _substituted(value: Any) -> Any:
    """Every ARN string through `Fn::Sub` for the pseudo parameters, with the
    IoT policy variables escaped (`${!iot:...}` is `${iot:...}` after Sub)."""
    if isinstance(value, list):
        return [_substituted(v) for v in value]
    if isinstance(value, dict):
        return {k: _substituted(v) for k, v in value.items()}
    if isinstance(value, str) and "${AWS::" in value:
        return {"Fn::Sub": value.replace("${iot:", "${!iot:")}
    return value


def vehicle_policy(names: ResourceNames) -> dict[str, Any]:
    return {
        "Type": "AWS::IoT::Policy",
        "Properties": {
            "PolicyName": names.iot_policy,
            "PolicyDocument": _substituted(vehicle_policy_document()),
        },
    }


def thing_type(names: ResourceNames) -> dict[str, Any]:
    return {
        "Type": "AWS::IoT::ThingType",
        "Properties": {
            "ThingTypeName": names.thing_type,
            "ThingTypeProperties": {
                "ThingTypeDescription": "A v2c vehicle: thing name = vehicle id = certificate CN",
                "SearchableAttributes": list(THING_ATTRIBUTES),
            },
        },
    }


def device_identity(names: ResourceNames) -> dict[str, Any]:
    return {VEHICLE_POLICY: vehicle_policy(names), VEHICLE_THING_TYPE: thing_type(names)}


__all__ = ["AWS_THING_NAME", "THING_ATTRIBUTES", "device_identity", "vehicle_policy_document"]
