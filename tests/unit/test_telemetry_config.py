"""The telemetry handlers' environment-based configuration."""

from __future__ import annotations

import boto3
import pytest

from v2c.contract.errors import ConfigurationError
from v2c.handlers.telemetry.config import TelemetryConfig, sink_kind, timeseries_sink
from v2c.handlers.telemetry.firehose_sink import FirehoseSink
from v2c.handlers.telemetry.timeseries import TimestreamSink
from v2c.infra.names import ResourceNames


def test_defaults_name_the_resources_the_local_stack_creates() -> None:
    names = ResourceNames()
    config = TelemetryConfig.from_env({})

    assert config.telemetry_table == names.telemetry_table
    assert config.registry_table == names.vehicle_registry_table
    assert config.dlq_bucket == names.telemetry_dlq_bucket
    assert config.timeseries_sink == "firehose"
    assert config.timeseries_stream == names.timeseries_stream
    assert config.timestream_database == names.timestream_database
    assert config.timestream_table == names.timestream_table
    assert config.endpoint_url is None


def test_environment_variables_override_every_default() -> None:
    config = TelemetryConfig.from_env(
        {
            "TELEMETRY_TABLE": "t",
            "VEHICLE_REGISTRY_TABLE": "r",
            "TELEMETRY_DLQ_BUCKET": "b",
            "TIMESERIES_SINK": "timestream",
            "TIMESERIES_STREAM": "s",
            "TIMESTREAM_DATABASE": "d",
            "TIMESTREAM_TABLE": "tt",
            "TELEMETRY_DEDUP_WINDOW_S": "60",
            "VEHICLE_REGISTRY_CACHE_TTL_S": "5",
            "TELEMETRY_RETENTION_DAYS": "7",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        }
    )

    assert config == TelemetryConfig(
        "t", "r", "b", "timestream", "s", "d", "tt", 60.0, 5.0, 7, "http://127.0.0.1:5000"
    )


def test_an_empty_timestream_database_turns_time_series_writes_off() -> None:
    config = TelemetryConfig.from_env({"TIMESTREAM_DATABASE": ""})

    assert (config.timeseries_sink, config.timestream_database) == ("none", None)


@pytest.mark.parametrize(
    ("environment", "sink"),
    [
        ({}, "firehose"),
        ({"TIMESERIES_SINK": ""}, "firehose"),
        ({"TIMESERIES_SINK": "firehose"}, "firehose"),
        ({"TIMESERIES_SINK": " Timestream ", "TIMESTREAM_DATABASE": "fleet-ts"}, "timestream"),
        ({"TIMESERIES_SINK": "none"}, "none"),
        # configured before TIMESERIES_SINK existed: keeps what it had
        ({"TIMESTREAM_DATABASE": "fleet-ts"}, "timestream"),
        ({"TIMESTREAM_DATABASE": ""}, "none"),
        # the explicit choice wins over the old variable
        ({"TIMESERIES_SINK": "firehose", "TIMESTREAM_DATABASE": "fleet-ts"}, "firehose"),
        ({"TIMESERIES_SINK": "none", "TIMESTREAM_DATABASE": "fleet-ts"}, "none"),
    ],
)
def test_the_time_series_sink_is_chosen_by_the_environment(
    environment: dict[str, str], sink: str
) -> None:
    assert sink_kind(environment) == sink
    assert TelemetryConfig.from_env(environment).timeseries_sink == sink


def test_the_firehose_stream_defaults_to_the_stacks_and_can_be_named() -> None:
    assert TelemetryConfig.from_env({}).timeseries_stream == "v2c-telemetry-timeseries"
    named = TelemetryConfig.from_env({"TIMESERIES_STREAM": "fleet7-ts"})
    assert named.timeseries_stream == "fleet7-ts"


@pytest.mark.parametrize("value", ["kinesis", "s3", "timestream,firehose", "off"])
def test_an_unknown_time_series_sink_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="TIMESERIES_SINK"):
        TelemetryConfig.from_env({"TIMESERIES_SINK": value})


def test_timestream_chosen_without_a_database_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="TIMESTREAM_DATABASE"):
        TelemetryConfig.from_env({"TIMESERIES_SINK": "timestream"})
    with pytest.raises(ConfigurationError, match="TIMESTREAM_DATABASE"):
        TelemetryConfig.from_env({"TIMESERIES_SINK": "timestream", "TIMESTREAM_DATABASE": ""})


@pytest.mark.parametrize(
    ("sink", "expected"), [("firehose", FirehoseSink), ("timestream", TimestreamSink)]
)
def test_the_chosen_sink_is_the_one_built(sink: str, expected: type) -> None:
    session = boto3.Session(
        region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    config = TelemetryConfig.from_env({"TIMESERIES_SINK": sink, "TIMESTREAM_DATABASE": "db"})

    built = timeseries_sink(config, session)

    assert isinstance(built, expected)
    assert built is not None
    assert built.name == sink
    assert timeseries_sink(TelemetryConfig.from_env({"TIMESERIES_SINK": "none"}), session) is None


def test_a_setting_that_is_not_a_number_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="invalid telemetry handler setting"):
        TelemetryConfig.from_env({"TELEMETRY_DEDUP_WINDOW_S": "five minutes"})
