"""Who may connect and who may call: the vehicle policy, the thing type, the API's users.

The vehicle policy in the template is `device_policy.aws_iot_vehicle_policy`
with the topic region taken from the thing's `region` attribute; for every
region it is exactly the per-region rendering, and it fits AWS IoT's size
limit. The API is a REST API behind a Cognito authorizer whose groups are
the API's roles; its public routes are the ones `roles.py` says are public.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from v2c.contract.topics import KNOWN_REGIONS
from v2c.handlers.api import ApiAuth, ApiServices, build_app
from v2c.handlers.api.roles import Role
from v2c.handlers.dashboard import ASSETS
from v2c.handlers.ota.config import OtaConfig, iot_data_url
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.aws.template_iot import (
    IOT_POLICY_MAX_CHARS,
    THING_ATTRIBUTES,
    THING_REGION,
    vehicle_policy_document,
)
from v2c.infra.device_policy import aws_iot_vehicle_policy
from v2c.infra.names import ResourceNames

NAMES = ResourceNames()
ACCOUNT = "123456789012"
OUTPUTS = {
    "ApiUrl",
    "IotDataEndpoint",
    "UserPoolId",
    "UserPoolClientId",
    "IotPolicyName",
    "ThingTypeName",
    "FirmwareBucket",
    "DlqAdminFunction",
    "AlarmTopicArn",  # where the alarms notify (template_alarms)
}


def _template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.safe_load(TEMPLATE_PATH.read_text())
    return template


def _deployed(document: Any, region: str) -> Any:
    """What CloudFormation makes of the template's document in `region`."""
    if isinstance(document, list):
        return [_deployed(v, region) for v in document]
    if isinstance(document, dict):
        if set(document) == {"Fn::Sub"}:
            text = document["Fn::Sub"]
            for name, value in (
                ("AWS::Partition", "aws"),
                ("AWS::Region", region),
                ("AWS::AccountId", ACCOUNT),
            ):
                text = text.replace(f"${{{name}}}", value)
            return text.replace("${!", "${")
        return {k: _deployed(v, region) for k, v in document.items()}
    return document


def _policy() -> Any:
    return _template()["Resources"]["VehiclePolicy"]["Properties"]


def test_the_vehicle_policy_is_named_as_the_onboarding_api_attaches_it() -> None:
    assert _policy()["PolicyName"] == NAMES.iot_policy == "v2c-vehicle"


@pytest.mark.parametrize("region", KNOWN_REGIONS)
def test_for_a_thing_of_any_region_the_policy_is_the_device_policys_for_that_region(
    region: str,
) -> None:
    deployed = _deployed(_policy()["PolicyDocument"], "eu-central-1")
    text = json.dumps(deployed).replace(THING_REGION, region)

    expected = aws_iot_vehicle_policy(region="eu-central-1", account=ACCOUNT, regions=(region,))

    assert json.loads(text) == expected


def test_the_deployed_policy_fits_aws_iots_size_limit() -> None:
    longest = max(KNOWN_REGIONS, key=len)
    deployed = _deployed(_policy()["PolicyDocument"], longest)
    every_region = aws_iot_vehicle_policy(region=longest, account=ACCOUNT)

    assert len(json.dumps(deployed, separators=(",", ":"))) <= IOT_POLICY_MAX_CHARS
    # why the region is an attribute: one copy per region does not fit
    assert len(json.dumps(every_region, separators=(",", ":"))) > IOT_POLICY_MAX_CHARS


def test_a_vehicle_connects_only_as_its_own_attached_thing() -> None:
    connect = vehicle_policy_document()["Statement"][0]

    assert connect["Action"] == "iot:Connect"
    assert connect["Resource"].endswith(":client/${iot:Connection.Thing.ThingName}")
    assert connect["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
    topics = json.dumps(vehicle_policy_document()["Statement"][1:])
    assert not re.search(r"/v2c/v1/(?!\$\{iot:Connection\.Thing\.Attributes\[region\]\})", topics)


def test_the_thing_type_searches_the_attributes_the_onboarding_api_sets() -> None:
    thing_type = _template()["Resources"]["VehicleThingType"]["Properties"]

    assert thing_type["ThingTypeName"] == NAMES.thing_type
    assert thing_type["ThingTypeProperties"]["SearchableAttributes"] == list(THING_ATTRIBUTES)
    assert "region" in THING_ATTRIBUTES


def test_the_api_function_knows_the_policy_thing_type_and_regions() -> None:
    env = _template()["Resources"]["OtaApiFunction"]["Properties"]["Environment"]["Variables"]

    assert env["IOT_POLICY_NAME"] == {"Ref": "VehiclePolicy"}
    assert env["IOT_THING_TYPE"] == {"Ref": "VehicleThingType"}
    assert env["VEHICLE_REGIONS"] == {"Fn::Join": [",", {"Ref": "VehicleRegions"}]}
    assert env["V2C_API_TRUST_AUTHORIZER"] == "1"


def test_the_api_is_rest_behind_cognito_with_one_group_per_role() -> None:
    resources = _template()["Resources"]
    api = resources["Api"]["Properties"]
    groups = {
        r["Properties"]["GroupName"]
        for r in resources.values()
        if r["Type"] == "AWS::Cognito::UserPoolGroup"
    }
    client = resources["UserPoolClient"]["Properties"]

    assert resources["Api"]["Type"] == "AWS::Serverless::Api"  # REST, v1 proxy events
    assert api["Auth"]["DefaultAuthorizer"] == "CognitoAuthorizer"
    assert api["Auth"]["AddDefaultAuthorizerToCorsPreflight"] is False
    # Raw and multipart firmware uploads reach the function as bytes, unmangled.
    assert api["BinaryMediaTypes"] == ["application~1octet-stream", "multipart~1form-data"]
    assert groups == {role.value for role in Role}
    assert client["GenerateSecret"] is False
    assert client["ExplicitAuthFlows"] == ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    assert resources["UserPool"]["Properties"]["MfaConfiguration"] == "OPTIONAL"


def test_only_health_the_openapi_document_and_the_dashboards_files_are_public() -> None:
    events = _template()["Resources"]["OtaApiFunction"]["Properties"]["Events"]

    public = {
        e["Properties"]["Path"]
        for e in events.values()
        if e["Properties"].get("Auth", {}).get("Authorizer") == "NONE"
    }
    guarded = {e["Properties"]["Path"] for e in events.values()} - public

    # the dashboard's page and exactly the assets the function serves without a credential
    dashboard = {"/dashboard", *(f"/dashboard/assets/{name}" for name in ASSETS)}
    assert public == {"/health", "/api/v1/openapi.json", *dashboard}
    # the same paths the function itself serves without a credential
    assert public == build_app(ApiServices(), ApiAuth([])).public_paths
    assert guarded == {"/{proxy+}"}
    assert all(e["Properties"]["RestApiId"] == {"Ref": "Api"} for e in events.values())


def test_parameters_and_outputs() -> None:
    template = _template()
    parameters = template["Parameters"]

    assert set(template["Outputs"]) == OUTPUTS
    assert parameters["VehicleRegions"]["Type"] == "CommaDelimitedList"
    assert parameters["VehicleRegions"]["Default"] == ",".join(KNOWN_REGIONS)
    assert parameters["SignerBackend"]["AllowedValues"] == ["kms"]  # what a Lambda can reach
    assert parameters["TimeSeriesSink"]["AllowedValues"] == ["firehose", "none"]
    assert re.fullmatch(
        parameters["IotDataEndpoint"]["AllowedPattern"],
        "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com",
    )
    assert template["Globals"]["Function"]["CodeUri"] == "build/lambda"


def test_the_functions_use_the_endpoint_signer_and_sink_parameters() -> None:
    resources = _template()["Resources"]

    def env(function: str) -> dict[str, Any]:
        variables: dict[str, Any] = resources[function]["Properties"]["Environment"]["Variables"]
        return variables

    for function in ("OtaStatusFunction", "OtaApiFunction", "OtaMonitorFunction"):
        assert env(function)["IOT_DATA_ENDPOINT"] == {"Ref": "IotDataEndpoint"}
        assert env(function)["OTA_SIGNER"] == {"Ref": "SignerBackend"}
    for function in ("TelemetryFunction", "TelemetryBatchFunction"):
        assert env(function)["TIMESERIES_SINK"] == {"Ref": "TimeSeriesSink"}
        assert env(function)["TIMESERIES_STREAM"] == {"Ref": "TimeseriesStream"}
        assert "TIMESTREAM_DATABASE" not in env(function)
    assert env("DlqAdminFunction")["IOT_DATA_ENDPOINT"] == {"Ref": "IotDataEndpoint"}


def test_the_handlers_publish_through_the_configured_data_endpoint_except_locally() -> None:
    host = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com"
    deployed = OtaConfig.from_env({"IOT_DATA_ENDPOINT": host})
    local = OtaConfig.from_env({"IOT_DATA_ENDPOINT": host, "AWS_ENDPOINT_URL": "http://m:5000"})

    assert iot_data_url(deployed.iot_data_endpoint, deployed.endpoint_url) == f"https://{host}"
    assert iot_data_url(local.iot_data_endpoint, local.endpoint_url) is None
    assert iot_data_url(None, None) is None  # the SDK's default endpoint
