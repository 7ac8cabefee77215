"""The ingest DLQ on a real moto server: a record its function never handled is
received `maxReceiveCount` times from its rule's ingest queue, SQS's redrive
policy moves it to `v2c-ingest-dlq`, and `v2c dlq`, the `dlq_admin` Lambda's
service (built from its environment, as in AWS) and the API's `/api/v1/dlq/ingest`
list it, show it and put it back on the right ingest queue with its body intact.
A body that is no ingest event stays in the DLQ with a clear error."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from api_support import AUTH_HEADERS, VIEWER_HEADERS
from typer.testing import CliRunner, Result

from v2c.contract.dead_letter import DeadLetterRecord
from v2c.contract.events import build_event
from v2c.handlers.dlq import admin
from v2c.handlers.dlq import config as dlq_config
from v2c.infra.cli.main import app
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.infra.local.wiring import handler_environment
from v2c.infra.settings import write_settings

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

VIN = "VIN-1HGBH41JXMN109186"
TELEMETRY_TOPIC = f"v2c/v1/eu-west-1/{VIN}/telemetry/vehicle"
STATUS_TOPIC = f"v2c/v1/eu-west-1/{VIN}/ota/status"
PAYLOAD = b"\xff\xfe\x00" + bytes(range(256))  # not UTF-8: the bytes must survive


@pytest.fixture
def api_server(moto_api_server: ApiHttpServer) -> ApiHttpServer:
    return moto_api_server


class Queues:
    """The stack's SQS queues on moto, by name."""

    def __init__(self, stack: AwsStack) -> None:
        self.sqs: Any = stack.aws.client("sqs")
        self.names = stack.names

    def url(self, name: str) -> str:
        return str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])

    def exhaust(self, queue: str, body: str) -> str:
        """Send `body` to `queue` and fail it as its function would: received
        `maxReceiveCount` times, never deleted (visible again at once). The
        next receive finds it past the count, and SQS moves it to the DLQ."""
        url = self.url(queue)
        policy = json.loads(
            self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])[
                "Attributes"
            ]["RedrivePolicy"]
        )
        message_id = str(self.sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"])
        for _ in range(int(policy["maxReceiveCount"])):
            (message,) = self.sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"]
            assert message["MessageId"] == message_id
            self.sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        assert self.sqs.receive_message(QueueUrl=url).get("Messages", []) == []
        return message_id

    def bodies(self, queue: str) -> list[str]:
        """Every message on `queue`, taken off it."""
        url, found = self.url(queue), []
        while messages := self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30
        ).get("Messages", []):
            for message in messages:
                found.append(message["Body"])
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return found

    def dlq_depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.url(self.names.ingest_dlq_queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())


@pytest.fixture
def queues(aws_stack: AwsStack) -> Queues:
    return Queues(aws_stack)


@pytest.fixture
def stack(tmp_path: Path, aws_stack: AwsStack) -> Path:
    """A stack.json over this moto (no broker: nothing here publishes)."""
    write_settings(aws_stack.settings(), tmp_path / "stack")
    return tmp_path / "stack"


def dlq(*args: str, stack: Path) -> Result:
    return CliRunner().invoke(app, ["dlq", *args, "--stack", str(stack)], env={"COLUMNS": "250"})


def _body(rule: str, topic: str, payload: bytes = PAYLOAD) -> str:
    """The message an IoT rule's SQS action writes: the event's JSON."""
    event = build_event(
        rule=rule,
        topic=topic,
        payload=payload,
        qos=1,
        properties={"content_type": "application/octet-stream"},
    )
    return json.dumps(event)


def test_an_exhausted_record_is_listed_shown_and_replayed_onto_its_ingest_queue(
    queues: Queues, stack: Path
) -> None:
    names = queues.names
    body = _body("telemetry", TELEMETRY_TOPIC)
    message_id = queues.exhaust(names.telemetry_ingest_queue, body)
    assert queues.dlq_depth() == 1

    listed = dlq("list", "--queue", "ingest", "--json", stack=stack)
    assert listed.exit_code == 0, listed.output
    (record,) = [DeadLetterRecord.from_json(i) for i in json.loads(listed.stdout)["items"]]
    assert (record.record_id, record.queue, record.source) == (message_id, "ingest", "telemetry")
    assert (record.topic, record.vehicle_id, record.payload) == (TELEMETRY_TOPIC, VIN, PAYLOAD)
    assert record.reason == "exhausted_receives"
    assert record.attempts == 4  # SQS's receive count: the three failures and this look

    shown = dlq("show", message_id, "--json", stack=stack)  # no --queue: found by its id
    assert shown.exit_code == 0, shown.output
    assert DeadLetterRecord.loads(shown.output).payload == PAYLOAD

    dry = dlq("replay", "--queue", "ingest", "--all", "--dry-run", stack=stack)
    assert dry.exit_code == 0, dry.output
    assert "1 would replay" in dry.output
    assert queues.dlq_depth() == 1

    replay = dlq("replay", "--queue", "ingest", "--id", message_id, stack=stack)

    assert replay.exit_code == 0, replay.output
    assert "1 replayed, 0 failed" in replay.output
    assert queues.bodies(names.telemetry_ingest_queue) == [body]  # byte for byte
    assert queues.bodies(names.telemetry_batch_ingest_queue) == []
    assert queues.bodies(names.ota_status_ingest_queue) == []
    assert queues.dlq_depth() == 0
    gone = dlq("show", message_id, "--queue", "ingest", stack=stack)
    assert gone.exit_code == 3, gone.output


def test_a_malformed_body_stays_with_a_clear_error_and_only_purge_removes_it(
    queues: Queues, stack: Path
) -> None:
    names = queues.names
    good = _body("ota_status", STATUS_TOPIC, b'{"status": "installed"}')
    queues.exhaust(names.ota_status_ingest_queue, good)
    bad_id = queues.exhaust(names.telemetry_ingest_queue, "not an event \u00e9{")

    replay = dlq("replay", "--queue", "ingest", "--all", stack=stack)

    # one bad record never holds back the others, and is never lost
    assert replay.exit_code == 1, replay.output
    assert "1 replayed, 1 failed" in replay.output
    assert queues.bodies(names.ota_status_ingest_queue) == [good]
    assert queues.bodies(names.telemetry_ingest_queue) == []
    listed = dlq("list", "--queue", "ingest", "--json", stack=stack)
    (kept,) = [DeadLetterRecord.from_json(i) for i in json.loads(listed.stdout)["items"]]
    assert (kept.record_id, kept.reason) == (bad_id, "malformed_body")
    assert kept.payload == "not an event \u00e9{".encode()
    assert "not JSON" in kept.error
    assert "cannot be replayed" in kept.error

    purged = dlq("purge", "--queue", "ingest", "--older-than", "2100-01-01", "--yes", stack=stack)

    assert purged.exit_code == 0, purged.output
    assert "purged 1 record from the ingest queue" in purged.output
    assert queues.dlq_depth() == 0


def test_the_dlq_admin_function_configured_from_its_environment_replays_ingest_records(
    queues: Queues, aws_stack: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment the template gives `dlq_admin` (and the API function)."""
    names = queues.names
    for name, value in handler_environment(aws_stack.settings()).items():
        monkeypatch.setenv(name, value)
    env = {
        "TELEMETRY_DLQ_BUCKET": names.telemetry_dlq_bucket,
        "OTA_DLQ_QUEUE_URL": queues.url(names.ota_dlq_queue),
        "INGEST_DLQ_QUEUE_URL": queues.url(names.ingest_dlq_queue),
        "INGEST_QUEUES": handler_environment(aws_stack.settings())["INGEST_QUEUES"],
    }
    service = dlq_config.build_service(env)
    body = _body("telemetry_batch", TELEMETRY_TOPIC.replace("vehicle", "batch"))
    message_id = queues.exhaust(names.telemetry_batch_ingest_queue, body)

    depths = admin.handle({"action": "depths"}, service)
    listed = admin.handle({"action": "list", "queue": "ingest"}, service)
    dry = admin.handle(
        {"action": "replay", "queue": "ingest", "all": True, "dry_run": True}, service
    )
    replayed = admin.handle({"action": "replay", "queue": "ingest", "all": True}, service)

    assert depths["depths"]["ingest"] == 1
    assert [(o["status"], o["detail"]) for o in dry["outcomes"]] == [
        ("would_replay", "to v2c-telemetry-batch-ingest")
    ]
    (summary,) = listed["records"]
    assert (summary["record_id"], summary["source"]) == (message_id, "telemetry_batch")
    assert "payload_b64" not in summary
    assert replayed["ok"]
    assert replayed["failed"] == 0
    assert not replayed["limit_reached"]
    assert replayed["outcomes"][0]["detail"] == "to v2c-telemetry-batch-ingest"
    assert queues.bodies(names.telemetry_batch_ingest_queue) == [body]
    assert admin.handle({"action": "depths"}, service)["depths"]["ingest"] == 0


def test_the_operator_lists_and_replays_the_ingest_dlq_over_the_api(
    queues: Queues, api_server: ApiHttpServer
) -> None:
    names = queues.names
    body = _body("telemetry", TELEMETRY_TOPIC)
    message_id = queues.exhaust(names.telemetry_ingest_queue, body)
    url = f"{api_server.base_url}/api/v1/dlq/ingest"

    viewer = requests.get(url, headers=VIEWER_HEADERS, timeout=60)
    listed = requests.get(url, headers=AUTH_HEADERS, timeout=60)
    unknown = requests.get(url.replace("ingest", "billing"), headers=AUTH_HEADERS, timeout=60)

    assert viewer.status_code == 403, viewer.text
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert (item["record_id"], item["source"], item["vehicle_id"]) == (message_id, "telemetry", VIN)
    assert (item["reason"], item["payload_size"]) == ("exhausted_receives", len(PAYLOAD))
    assert unknown.status_code == 400, unknown.text
    assert "telemetry|ota|ingest" in unknown.json()["detail"]

    # One record whole, the payload included: the operator's alone (it is vehicle data)
    shown = requests.get(f"{url}/records/{message_id}", headers=AUTH_HEADERS, timeout=60)
    assert shown.status_code == 200, shown.text
    assert base64.b64decode(shown.json()["payload_b64"]) == PAYLOAD
    assert (shown.json()["record_id"], shown.json()["topic"]) == (message_id, TELEMETRY_TOPIC)
    hidden = requests.get(f"{url}/records/{message_id}", headers=VIEWER_HEADERS, timeout=60)
    assert hidden.status_code == 403, hidden.text
    missing = requests.get(f"{url}/records/no-such-record", headers=AUTH_HEADERS, timeout=60)
    assert (missing.status_code, missing.json()["reason"]) == (404, "not_found")

    replay = requests.post(
        f"{url}/replay", json={"all": True, "limit": 10}, headers=AUTH_HEADERS, timeout=60
    )

    assert replay.status_code == 200, replay.text
    assert (replay.json()["replayed"], replay.json()["failed"]) == (1, 0)
    assert replay.json()["outcomes"][0]["detail"] == "to v2c-telemetry-ingest"
    assert queues.bodies(names.telemetry_ingest_queue) == [body]
    assert queues.dlq_depth() == 0
