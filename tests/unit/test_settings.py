"""The stack settings model and resource names: validation and boto3 wiring, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from v2c.contract.errors import ConfigurationError
from v2c.infra.aws.resources import table_specs
from v2c.infra.names import ResourceNames
from v2c.infra.settings import (
    LOCAL_CREDENTIAL,
    AwsSettings,
    MqttSettings,
    StackSettings,
    read_settings,
)

LOCAL = AwsSettings(endpoint_url="http://127.0.0.1:4566", region="eu-west-1")
REAL = AwsSettings(region="eu-west-1")


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own AWS variables must not leak into what these tests see."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def test_local_settings_give_boto3_the_endpoint_and_dummy_credentials() -> None:
    session_kwargs = LOCAL.boto3_session_kwargs()
    client = LOCAL.client("dynamodb")

    assert session_kwargs["aws_access_key_id"] == LOCAL_CREDENTIAL
    assert session_kwargs["aws_secret_access_key"] == LOCAL_CREDENTIAL
    assert LOCAL.boto3_client_kwargs()["endpoint_url"] == "http://127.0.0.1:4566"
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"
    assert client.meta.region_name == "eu-west-1"


def test_without_an_endpoint_boto3_resolves_real_aws_and_its_own_credentials() -> None:
    client = REAL.client("dynamodb")

    assert "endpoint_url" not in REAL.boto3_client_kwargs()
    assert set(REAL.boto3_session_kwargs()) == {"region_name"}
    assert client.meta.endpoint_url == "https://dynamodb.eu-west-1.amazonaws.com"


def test_clients_retry_in_botocore_standard_mode_with_bounded_timeouts() -> None:
    config = vars(AwsSettings(max_attempts=7, connect_timeout=2, read_timeout=9).botocore_config())

    assert config["retries"] == {"mode": "standard", "max_attempts": 7}
    assert (config["connect_timeout"], config["read_timeout"]) == (2, 9)


def test_adaptive_retry_mode_is_accepted_and_other_modes_are_not() -> None:
    config = vars(AwsSettings(retry_mode="adaptive").botocore_config())
    assert config["retries"]["mode"] == "adaptive"
    with pytest.raises(ValidationError):
        AwsSettings.model_validate({"retry_mode": "legacy"})


def test_local_presigned_urls_are_path_style_on_the_moto_endpoint() -> None:
    url = LOCAL.client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": "v2c-firmware", "Key": "fw/1.2.3.bin"}, ExpiresIn=60
    )

    assert url.startswith("http://127.0.0.1:4566/v2c-firmware/fw/1.2.3.bin?")


def test_a_service_certificate_without_its_key_is_rejected() -> None:
    with pytest.raises(ValidationError, match="together"):
        MqttSettings(port=8883, service_cert=Path("service.pem"))


def test_a_port_outside_1_to_65535_is_rejected() -> None:
    with pytest.raises(ValidationError):
        MqttSettings(port=70000)


def test_an_unknown_key_in_the_stack_description_is_rejected_not_ignored() -> None:
    with pytest.raises(ValidationError, match="endpoint"):
        StackSettings.model_validate({"aws": {"endpoint": "http://127.0.0.1:1"}})


def test_settings_cannot_be_changed_after_loading() -> None:
    with pytest.raises(ValidationError):
        LOCAL.region = "us-east-1"


def test_stack_settings_survive_a_json_round_trip() -> None:
    settings = StackSettings(
        mqtt=MqttSettings(port=1883, tls_port=8883, ca_file=Path("/pki/ca.pem")),
        aws=LOCAL,
        resources=ResourceNames.with_prefix("v2c-dev"),
        processes={"moto": 42, "mosquitto": 43},
    )

    assert StackSettings.model_validate_json(settings.model_dump_json()) == settings


def test_commands_that_need_a_broker_get_a_configuration_error_without_one() -> None:
    with pytest.raises(ConfigurationError, match="mqtt"):
        StackSettings().require_mqtt()


def test_prefixed_names_replace_v2c_in_every_default_name() -> None:
    names = ResourceNames.with_prefix("acme-v2c")

    assert names.vehicle_updates_table == "acme-v2c-vehicle-updates"
    assert names.firmware_bucket == "acme-v2c-firmware"
    assert names.signing_key_alias == "alias/acme-v2c-ota-signing"
    assert names.timestream_table == ResourceNames().timestream_table  # not prefixed: per database


def test_a_stack_described_with_the_retired_dedup_table_still_loads(tmp_path: Path) -> None:
    # Given a stack.json from before the dedup table went (ADR 0001, point 6)
    written = StackSettings(aws=LOCAL, resources=ResourceNames.with_prefix("acme-v2c"))
    document = json.loads(written.model_dump_json())
    document["resources"]["dedup_table"] = "acme-v2c-telemetry-dedup"
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(document))

    # When it is read, the retired name is forgotten and every other one kept
    loaded = read_settings(path)

    assert loaded == written
    assert "dedup_table" not in loaded.resources.model_dump()


def test_an_unknown_resource_name_is_still_refused() -> None:
    with pytest.raises(ValidationError, match="dedup_tabel"):
        ResourceNames.model_validate({"dedup_tabel": "v2c-telemetry-dedup"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("firmware_bucket", "V2C_Firmware"),
        ("signing_key_alias", "v2c-ota-signing"),
        ("signing_key_alias", "alias/aws/v2c"),
        ("ota_dlq_queue", "has space"),
        ("rollbacks_table", "ab"),
    ],
)
def test_invalid_resource_names_are_rejected(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        ResourceNames.model_validate({field: value})


def test_every_table_name_field_has_exactly_one_table_spec() -> None:
    names = ResourceNames()
    table_fields = {getattr(names, f) for f in ResourceNames.model_fields if f.endswith("_table")}
    table_fields.discard(names.timestream_table)  # a Timestream table, not DynamoDB

    specs = [spec.name for spec in table_specs(names)]

    assert sorted(specs) == sorted(table_fields)


def test_ttl_is_on_the_telemetry_table_only_where_entries_must_expire() -> None:
    names = ResourceNames()
    ttl = {spec.name: spec.ttl_attribute for spec in table_specs(names)}

    assert ttl[names.telemetry_table] == "expires_at"
    assert [table for table, attribute in ttl.items() if attribute] == [names.telemetry_table]
