"""The telemetry handlers' environment-based configuration."""

from __future__ import annotations

import pytest

from v2c.contract.errors import ConfigurationError
from v2c.handlers.telemetry.config import TelemetryConfig
from v2c.infra.names import ResourceNames


def test_defaults_name_the_resources_the_local_stack_creates() -> None:
    names = ResourceNames()
    config = TelemetryConfig.from_env({})

    assert config.telemetry_table == names.telemetry_table
    assert config.registry_table == names.vehicle_registry_table
    assert config.dlq_bucket == names.telemetry_dlq_bucket
    assert config.timestream_database == names.timestream_database
    assert config.timestream_table == names.timestream_table
    assert config.endpoint_url is None


def test_environment_variables_override_every_default() -> None:
    config = TelemetryConfig.from_env(
        {
            "TELEMETRY_TABLE": "t",
            "VEHICLE_REGISTRY_TABLE": "r",
            "TELEMETRY_DLQ_BUCKET": "b",
            "TIMESTREAM_DATABASE": "d",
            "TIMESTREAM_TABLE": "tt",
            "TELEMETRY_DEDUP_WINDOW_S": "60",
            "VEHICLE_REGISTRY_CACHE_TTL_S": "5",
            "TELEMETRY_RETENTION_DAYS": "7",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        }
    )

    assert config == TelemetryConfig(
        "t", "r", "b", "d", "tt", 60.0, 5.0, 7, "http://127.0.0.1:5000"
    )


def test_an_empty_timestream_database_turns_time_series_writes_off() -> None:
    assert TelemetryConfig.from_env({"TIMESTREAM_DATABASE": ""}).timestream_database is None


def test_a_setting_that_is_not_a_number_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="invalid telemetry handler setting"):
        TelemetryConfig.from_env({"TELEMETRY_DEDUP_WINDOW_S": "five minutes"})
