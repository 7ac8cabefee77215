"""`v2c dlq` end to end: a broken handler fills the real S3 telemetry DLQ on
moto through a real gateway on a real mosquitto; once the handler is fixed,
`v2c dlq replay --all` handles every record exactly once and empties the queue."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from gateway_handlers import FAIL_FLAG_ENV, FLAKY_RULES, RECORD_ENV, read_records
from gateway_support import running_gateway, vehicle_client, wait_until
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from typer.testing import CliRunner, Result

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.dlq.store import DeadLetterStore
from v2c.infra.cli.main import app
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.wiring import dead_letter_stores

VIN = "VIN-1HGBH41JXMN109186"
TELEMETRY_TOPIC = f"v2c/v1/eu-west-1/{VIN}/telemetry/vehicle"
FLAKY = "gateway_handlers:FLAKY_RULES"
COUNT = 20


def _payload(i: int) -> bytes:
    """Binary, not UTF-8: proves the bytes survive MQTT, S3, JSON and the replay."""
    return b"\xff\xfe\x00" + i.to_bytes(2, "big") + bytes(range(256))


@pytest.fixture
def stores(stack_dir: Path) -> dict[str, DeadLetterStore]:
    from v2c.infra.settings import load_settings

    return dead_letter_stores(load_settings(stack_dir))


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "handled.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(path))
    return path


@pytest.fixture
def fail_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    flag = tmp_path / "handler-broken"
    flag.touch()
    monkeypatch.setenv(FAIL_FLAG_ENV, str(flag))
    return flag


def dlq(*args: str, stack: Path) -> Result:
    return CliRunner().invoke(app, ["dlq", *args, "--stack", str(stack)], env={"COLUMNS": "250"})


def _handled_payloads(record_file: Path) -> list[bytes]:
    return [base64.b64decode(r["payload_b64"]) for r in read_records(str(record_file))]


def _properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/x-protobuf"
    props.CorrelationData = b"\x01\x02corr"
    props.UserProperty = [("schema_version", "1.0")]
    return props


def test_broken_handler_fills_the_s3_dlq_and_replay_after_the_fix_handles_each_once(
    mosquitto: MosquittoBroker,
    stack_dir: Path,
    stores: dict[str, DeadLetterStore],
    record_file: Path,
    fail_flag: Path,
) -> None:
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    telemetry = stores["telemetry"]
    with (
        running_gateway(endpoint, FLAKY_RULES, stores, client_id="gw-dlq-replay") as gateway,
        vehicle_client(endpoint, VIN) as vehicle,
    ):
        # Given: the handler fails for every one of COUNT messages
        for i in range(COUNT):
            info = vehicle.publish(TELEMETRY_TOPIC, _payload(i), qos=1, properties=_properties())
            info.wait_for_publish(10)
        wait_until(lambda: telemetry.depth() == COUNT, what=f"{COUNT} records in the S3 DLQ")
        assert gateway.metrics.failed.labels("telemetry", "handler_error")._value.get() == COUNT

        # Then: each record holds everything needed to replay it
        records = list(telemetry.list())
        assert sorted(r.payload for r in records) == sorted(_payload(i) for i in range(COUNT))
        for record in records:
            assert (record.topic, record.vehicle_id, record.source) == (
                TELEMETRY_TOPIC,
                VIN,
                "telemetry",
            )
            assert record.direction is Direction.INBOUND
            assert (record.reason, record.attempts) == ("handler_error", 1)
            assert "store unavailable" in record.error
            assert record.properties["content_type"] == "application/x-protobuf"
            assert record.properties["user_properties"] == [["schema_version", "1.0"]]
            assert base64.b64decode(record.properties["correlation_data_b64"]) == b"\x01\x02corr"
        assert _handled_payloads(record_file) == []

        # A dry run says what it would do and changes nothing
        dry = dlq("replay", "--all", "--queue", "telemetry", "--rules", FLAKY, "--dry-run",
                  stack=stack_dir)  # fmt: skip
        assert dry.exit_code == 0, dry.output
        assert f"{COUNT} would replay" in dry.output
        assert sorted(telemetry.list(), key=lambda r: r.record_id) == sorted(
            records, key=lambda r: r.record_id
        )

        # A replay while the handler is still broken fails, keeps the record, counts the attempt
        victim = records[0]
        failed = dlq("replay", "--id", victim.record_id, "--rules", FLAKY, stack=stack_dir)
        assert failed.exit_code == 1, failed.output
        assert "1 failed" in failed.output
        again = telemetry.get(victim.record_id)
        assert again.attempts == 2
        assert again.payload == victim.payload
        assert again.last_failed_at >= victim.last_failed_at
        assert telemetry.depth() == COUNT

        # When: the handler is fixed; the gateway has kept serving all along
        fail_flag.unlink()
        vehicle.publish(TELEMETRY_TOPIC, b"live-after-fix", qos=1).wait_for_publish(10)
        wait_until(lambda: len(_handled_payloads(record_file)) == 1, what="a live message")

        replay = dlq("replay", "--all", "--queue", "telemetry", "--rules", FLAKY, stack=stack_dir)

        # Then: every record handled exactly once, and the queue is empty
        assert replay.exit_code == 0, replay.output
        assert f"{COUNT} replayed, 0 failed" in replay.output
        handled = _handled_payloads(record_file)
        assert sorted(handled) == sorted([b"live-after-fix"] + [_payload(i) for i in range(COUNT)])
        assert telemetry.depth() == 0
        replayed = [r for r in read_records(str(record_file)) if r["payload"] != "live-after-fix"]
        assert all(r["properties"]["replayed_from"] for r in replayed)
        assert all(r["properties"]["content_type"] == "application/x-protobuf" for r in replayed)

        # Replaying again is a no-op
        noop = dlq("replay", "--all", "--rules", FLAKY, stack=stack_dir)
        assert noop.exit_code == 0, noop.output
        assert "nothing to replay" in noop.output
        assert len(_handled_payloads(record_file)) == COUNT + 1


def _put(store: DeadLetterStore, n: int, *, age_ms: int, now_ms: int) -> DeadLetterRecord:
    record = DeadLetterRecord.from_error(
        queue=store.name,
        direction=Direction.INBOUND,
        source="telemetry",
        topic=TELEMETRY_TOPIC,
        payload=b"\x1b[31m\x00" + bytes([n]),  # an escape sequence must not reach the terminal
        error=RuntimeError(f"\x1b[2J[bold]boom {n}[/bold]"),  # nor markup be interpreted
        attempts=1,
        vehicle_id=VIN,
        now_ms=now_ms - age_ms,
    )
    store.put(record)
    return record


def test_list_and_show_print_records_safely_and_json_is_lossless(
    stack_dir: Path, stores: dict[str, DeadLetterStore]
) -> None:
    import time

    now = int(time.time() * 1000)
    old = _put(stores["telemetry"], 1, age_ms=3 * 3_600_000, now_ms=now)
    new = _put(stores["telemetry"], 2, age_ms=0, now_ms=now)
    ota = _put(stores["ota"], 3, age_ms=0, now_ms=now)

    table = dlq("list", stack=stack_dir)
    assert table.exit_code == 0, table.output
    for record in (old, new, ota):
        assert record.record_id in table.output
    assert "3 records" in table.output
    assert "\x1b" not in table.output

    recent = dlq("list", "--queue", "telemetry", "--since", "1h", "--json", stack=stack_dir)
    assert recent.exit_code == 0, recent.output
    listed = json.loads(recent.stdout)  # one JSON document, as the API's list
    assert [DeadLetterRecord.from_json(item) for item in listed["items"]] == [new]
    assert listed["count"] == 1

    shown = dlq("show", old.record_id, stack=stack_dir)
    assert shown.exit_code == 0, shown.output
    assert "\\x1b[2J[bold]boom 1[/bold]" in shown.output  # escaped, and not read as markup
    assert "\x1b" not in shown.output
    assert "1b 5b 33 31 6d 00 01" in shown.output  # the hex preview
    assert base64.b64encode(old.payload).decode() in shown.output

    as_json = dlq("show", ota.record_id, "--json", stack=stack_dir)
    assert DeadLetterRecord.from_json(json.loads(as_json.output)) == ota


def test_show_or_replay_of_an_unknown_id_exits_3(stack_dir: Path) -> None:
    missing = "0000000000000-0000000000000000"

    shown = dlq("show", missing, stack=stack_dir)
    replayed = dlq("replay", "--id", missing, stack=stack_dir)

    assert (shown.exit_code, replayed.exit_code) == (3, 3)  # not found: `cli_errors`
    assert f"no dead-letter record {missing}" in shown.output


def test_purge_asks_first_and_deletes_only_older_records(
    stack_dir: Path, stores: dict[str, DeadLetterStore]
) -> None:
    import time

    now = int(time.time() * 1000)
    old = _put(stores["ota"], 1, age_ms=8 * 86_400_000, now_ms=now)
    new = _put(stores["ota"], 2, age_ms=0, now_ms=now)
    older_telemetry = _put(stores["telemetry"], 3, age_ms=8 * 86_400_000, now_ms=now)

    declined = CliRunner().invoke(
        app, ["dlq", "purge", "--older-than", "7d", "--queue", "ota", "--stack", str(stack_dir)],
        input="n\n",
    )  # fmt: skip
    assert declined.exit_code == 1
    assert "Delete 1 record(s) from the ota queue" in declined.output
    assert stores["ota"].depth() == 2

    purged = dlq("purge", "--older-than", "7d", "--queue", "ota", "--yes", stack=stack_dir)

    assert purged.exit_code == 0, purged.output
    assert "purged 1 record from the ota queue" in purged.output
    assert [r.record_id for r in stores["ota"].list()] == [new.record_id]
    assert old.record_id not in {r.record_id for r in stores["ota"].list()}
    assert [r.record_id for r in stores["telemetry"].list()] == [older_telemetry.record_id]


def test_list_json_is_one_document_even_when_the_queues_are_empty(
    stack_dir: Path, stores: dict[str, DeadLetterStore]
) -> None:
    empty = dlq("list", "-o", "json", stack=stack_dir)
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout) == {"items": [], "count": 0, "truncated": False}

    import time

    now = int(time.time() * 1000)
    records = [_put(stores["telemetry"], n, age_ms=n, now_ms=now) for n in (1, 2)]
    listed = dlq("list", "-o", "json", stack=stack_dir)

    answer = json.loads(listed.stdout)  # one document: json.loads reads all of stdout
    assert answer["count"] == 2
    oldest_first = sorted(records, key=lambda r: (r.last_failed_at, r.record_id))
    assert [DeadLetterRecord.from_json(item) for item in answer["items"]] == oldest_first


def test_purge_json_asks_on_stderr_and_prints_only_json_on_stdout(
    stack_dir: Path, stores: dict[str, DeadLetterStore]
) -> None:
    """The installed `v2c` as a shell runs it, answering the question on
    stdin: click's `confirm` writes one space to stdout (a readline
    work-around), which a JSON parser skips; the question is on stderr."""
    import subprocess
    import sys
    import time

    now = int(time.time() * 1000)
    _put(stores["ota"], 1, age_ms=8 * 86_400_000, now_ms=now)

    purged = subprocess.run(
        [str(Path(sys.executable).parent / "v2c"), "dlq", "purge", "--older-than", "7d",
         "-o", "json", "--stack", str(stack_dir)],
        input="y\n", capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert purged.returncode == 0, purged.stderr
    assert "Delete 1 record(s) from all queues" in purged.stderr
    assert "Delete" not in purged.stdout
    assert json.loads(purged.stdout)["purged"] == 1  # stdout is one JSON document
    assert stores["ota"].depth() == 0
