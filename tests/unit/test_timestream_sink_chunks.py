"""TimestreamSink: WriteRecords calls of the API's maximum whatever the vehicles."""

from __future__ import annotations

from typing import Any

from v2c.handlers.telemetry.timeseries import (
    WRITE_LIMIT,
    Measure,
    TimeSeriesPoint,
    TimestreamSink,
)


class RecordingClient:
    """Stands in for the timestream-write client: keeps each call's arguments."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def write_records(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {}


def _point(n: int) -> TimeSeriesPoint:
    return TimeSeriesPoint(
        vehicle_id=f"VIN-{n:05d}",
        region="eu-west-1" if n % 2 else "us-east-1",
        time_us=1_000_000 + n,
        measures=(Measure("rpm", n, "BIGINT"),),
        message_id=f"m{n}",
    )


def test_singles_from_many_vehicles_go_in_calls_of_one_hundred() -> None:
    client = RecordingClient()
    sink = TimestreamSink(client, "db", "table")  # type: ignore[arg-type]

    failures = sink.write([_point(n) for n in range(250)])

    assert failures == []
    assert [len(c["Records"]) for c in client.calls] == [WRITE_LIMIT, WRITE_LIMIT, 50]
    assert sink.requests == 3
    first = client.calls[0]["Records"][7]
    assert first["Dimensions"] == [
        {"Name": "vehicle_id", "Value": "VIN-00007"},
        {"Name": "region", "Value": "eu-west-1"},
    ]
    assert client.calls[0]["CommonAttributes"] == {
        "MeasureName": "telemetry",
        "MeasureValueType": "MULTI",
        "TimeUnit": "MICROSECONDS",
    }
