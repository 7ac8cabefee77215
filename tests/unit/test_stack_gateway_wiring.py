"""What the stack hands its gateway: a share group kept per stack directory, and the
handlers' environment (the OTA publisher reaches the broker as a service, over mTLS)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from v2c.contract.errors import ConfigurationError
from v2c.handlers.ota.config import OtaConfig
from v2c.handlers.telemetry.config import TelemetryConfig
from v2c.infra.local.stack_layout import StackLayout, new_share_group, stack_share_group
from v2c.infra.local.wiring import handler_environment
from v2c.infra.names import ResourceNames
from v2c.infra.settings import LOCAL_CREDENTIAL, AwsSettings, MqttSettings, StackSettings

LOCAL = StackSettings(
    aws=AwsSettings(endpoint_url="http://127.0.0.1:4566", region="eu-west-1"),
    resources=ResourceNames.with_prefix("fleet7"),
)


def test_share_groups_are_random_128_bit_names_never_the_default() -> None:
    groups = {new_share_group() for _ in range(50)}

    assert len(groups) == 50
    assert all(re.fullmatch(r"v2c-[0-9a-f]{32}", group) for group in groups)
    assert "v2c" not in groups


def test_a_stack_directory_keeps_its_share_group_across_restarts_and_only_its_owner_reads_it(
    tmp_path: Path,
) -> None:
    layout = StackLayout.for_dir(tmp_path / "stack")

    first = stack_share_group(layout)
    again = stack_share_group(layout)

    assert first == again
    assert stat.S_IMODE(layout.share_group_file.stat().st_mode) == 0o600
    other = StackLayout.for_dir(tmp_path / "other")
    assert stack_share_group(other) != first


def test_a_tampered_share_group_file_is_replaced_by_a_fresh_secret(tmp_path: Path) -> None:
    layout = StackLayout.for_dir(tmp_path)
    layout.share_group_file.write_text("v2c\n")

    group = stack_share_group(layout)

    assert re.fullmatch(r"v2c-[0-9a-f]{32}", group)
    assert layout.share_group_file.read_text().strip() == group


def test_handler_environment_of_a_local_stack_points_handlers_at_moto_and_its_resources() -> None:
    environment = handler_environment(LOCAL)
    names = LOCAL.resources

    assert environment == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIAL,
        "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIAL,
        "TELEMETRY_TABLE": names.telemetry_table,
        "VEHICLE_REGISTRY_TABLE": names.vehicle_registry_table,
        "TELEMETRY_DLQ_BUCKET": names.telemetry_dlq_bucket,
        "TIMESERIES_SINK": "firehose",
        "TIMESERIES_STREAM": "fleet7-telemetry-timeseries",
        "CAMPAIGNS_TABLE": names.campaigns_table,
        "VEHICLE_UPDATES_TABLE": names.vehicle_updates_table,
        "ROLLBACKS_TABLE": names.rollbacks_table,
        "FIRMWARE_TABLE": names.firmware_table,
        "FIRMWARE_BUCKET": names.firmware_bucket,
        "OTA_DLQ_QUEUE": names.ota_dlq_queue,
        # where an ingest DLQ record replays (`dlq.config`), from the one table of names
        "INGEST_QUEUES": json.dumps(names.ingest_queues, sort_keys=True),
        "EVENT_BUS": names.event_bus,
        "OTA_SIGNER": "kms",
        "OTA_SIGNING_KEY": names.signing_key_alias,
        **(
            {"OTA_MQTT_URL": f"mqtt://{LOCAL.mqtt.host}:{LOCAL.mqtt.port}"}
            if LOCAL.mqtt is not None
            else {}
        ),
    }
    ota = OtaConfig.from_env(environment)
    assert (ota.campaigns_table, ota.updates_table, ota.firmware_bucket) == (
        "fleet7-campaigns",
        "fleet7-vehicle-updates",
        "fleet7-firmware",
    )
    # and the handlers read back exactly the stack's resources
    config = TelemetryConfig.from_env(environment)
    assert (config.telemetry_table, config.registry_table, config.dlq_bucket) == (
        "fleet7-telemetry",
        "fleet7-vehicle-registry",
        "fleet7-telemetry-dlq",
    )
    assert (config.timeseries_sink, config.timeseries_stream) == (
        "firehose",
        "fleet7-telemetry-timeseries",
    )
    assert config.endpoint_url == "http://127.0.0.1:4566"


def test_handler_environment_for_real_aws_sets_no_endpoint_and_no_credentials() -> None:
    real = StackSettings(aws=AwsSettings(region="eu-west-1"))

    environment = handler_environment(real)

    assert not {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(environment)
    assert environment["AWS_REGION"] == "eu-west-1"


def test_a_stack_that_names_a_timestream_database_opts_its_handlers_into_timestream() -> None:
    settings = StackSettings(resources=ResourceNames(timestream_database="fleet-ts"))

    config = TelemetryConfig.from_env(handler_environment(settings))

    assert (config.timeseries_sink, config.timestream_database) == ("timestream", "fleet-ts")
    assert config.timestream_table == settings.resources.timestream_table


def test_the_ota_publisher_reaches_the_stacks_service_listener_with_the_service_identity() -> None:
    pki = Path("/srv/stack/pki")
    stack = LOCAL.model_copy(
        update={
            "mqtt": MqttSettings(
                port=8884,
                tls_port=8883,
                ca_file=pki / "ca.pem",
                service_cert=pki / "service.pem",
                service_key=pki / "service.key",
            )
        }
    )

    environment = handler_environment(stack)

    assert {k: v for k, v in environment.items() if k.startswith("OTA_MQTT")} == {
        "OTA_MQTT_URL": "mqtts://127.0.0.1:8884",
        "OTA_MQTT_CA_FILE": "/srv/stack/pki/ca.pem",
        "OTA_MQTT_CERT_FILE": "/srv/stack/pki/service.pem",
        "OTA_MQTT_KEY_FILE": "/srv/stack/pki/service.key",
    }
    ota = OtaConfig.from_env(environment)
    assert (ota.mqtt_url, ota.mqtt_ca_file, ota.mqtt_cert_file, ota.mqtt_key_file) == (
        "mqtts://127.0.0.1:8884",
        "/srv/stack/pki/ca.pem",
        "/srv/stack/pki/service.pem",
        "/srv/stack/pki/service.key",
    )


def test_a_private_plain_broker_is_still_reached_without_tls() -> None:
    plain = LOCAL.model_copy(update={"mqtt": MqttSettings(port=1883)})

    environment = handler_environment(plain)

    assert environment["OTA_MQTT_URL"] == "mqtt://127.0.0.1:1883"
    assert not any(k.startswith("OTA_MQTT_") and k.endswith("_FILE") for k in environment)


def test_an_mqtts_url_without_its_files_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OTA_MQTT_CA_FILE"):
        OtaConfig.from_env({"OTA_MQTT_URL": "mqtts://127.0.0.1:8884"})
    with pytest.raises(ConfigurationError, match="together"):
        OtaConfig.from_env(
            {
                "OTA_MQTT_URL": "mqtts://127.0.0.1:8884",
                "OTA_MQTT_CA_FILE": "/ca.pem",
                "OTA_MQTT_CERT_FILE": "/service.pem",
            }
        )
    with pytest.raises(ConfigurationError, match="mqtts://"):
        OtaConfig.from_env({"OTA_MQTT_URL": "http://127.0.0.1:8884"})
