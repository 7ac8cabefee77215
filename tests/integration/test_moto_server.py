"""The moto server child process: start, reset, stop, and no orphans."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from v2c.infra.local.moto_server import MotoServer, MotoServerError, stop_pid, wait_ready
from v2c.infra.net import port_accepts
from v2c.infra.settings import AwsSettings

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


def _gone(pid: int, within: float = 20.0) -> bool:
    """Poll /proc until `pid` has exited (or is a zombie nobody reaped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_reset_forgets_every_resource() -> None:
    with MotoServer() as server:
        sqs = AwsSettings(endpoint_url=server.endpoint_url).client("sqs")
        sqs.create_queue(QueueName="doomed")

        server.reset()

        assert sqs.list_queues().get("QueueUrls", []) == []


def test_stop_ends_the_child_and_closes_its_port() -> None:
    server = MotoServer().start()
    pid, port = server.pid, server.port

    server.stop()
    server.stop()  # a second stop is harmless

    assert _gone(pid)
    assert not port_accepts("127.0.0.1", port)
    with pytest.raises(MotoServerError):
        _ = server.endpoint_url


def test_a_tied_server_exits_when_its_parent_dies_without_cleaning_up() -> None:
    # Given: a parent process that starts moto and dies abruptly (no stop, no atexit)
    script = (
        "import os; from v2c.infra.local.moto_server import MotoServer\n"
        "s = MotoServer().start(); print(s.pid, s.endpoint_url, flush=True); os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    pid = int(out[0])

    # Then: the orphaned server notices its stdin closing and exits on its own
    assert _gone(pid)


def test_stop_pid_stops_a_detached_server_but_not_an_unrelated_process(tmp_path: Path) -> None:
    server = MotoServer(tie_to_parent=False, log_file=tmp_path / "moto.log").start()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        assert stop_pid(bystander.pid) is False
        assert bystander.poll() is None

        assert stop_pid(server.pid) is True
        assert _gone(server.pid)
        with pytest.raises(MotoServerError):
            wait_ready(f"http://127.0.0.1:{server.port}", timeout=0.2)
    finally:
        bystander.kill()
        bystander.wait()
        server.stop()


def test_conditional_writes_are_atomic_under_concurrency(aws_stack: AwsStack) -> None:
    """Optimistic concurrency on moto means what it means on DynamoDB: of
    racing writers conditioned on the same version, exactly one wins."""
    ddb = aws_stack.aws.client("dynamodb")
    table = aws_stack.names.campaigns_table
    ddb.put_item(TableName=table, Item={"campaign_id": {"S": "race"}, "v": {"N": "0"}})
    wins: list[int] = []

    def bump(worker: int) -> None:
        for _ in range(20):
            current = ddb.get_item(TableName=table, Key={"campaign_id": {"S": "race"}})
            version = int(current["Item"]["v"]["N"])
            try:
                ddb.update_item(
                    TableName=table,
                    Key={"campaign_id": {"S": "race"}},
                    UpdateExpression="SET v = :next",
                    ConditionExpression="v = :seen",
                    ExpressionAttributeValues={
                        ":next": {"N": str(version + 1)},
                        ":seen": {"N": str(version)},
                    },
                )
            except ddb.exceptions.ConditionalCheckFailedException:
                continue
            wins.append(worker)

    threads = [threading.Thread(target=bump, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = ddb.get_item(TableName=table, Key={"campaign_id": {"S": "race"}})
    assert int(final["Item"]["v"]["N"]) == len(wins)  # no lost update


def test_a_cancelled_transaction_leaves_every_item_as_it_was(aws_stack: AwsStack) -> None:
    """The server undoes a failed transaction item by item (moto itself
    copies whole tables per item, which made a 99-item transaction on a
    10,000-record table take 25 s): a new item vanishes, an updated item and
    a range-keyed item return to what they were, an untouched one is untouched."""
    ddb = aws_stack.aws.client("dynamodb")
    campaigns = aws_stack.names.campaigns_table
    updates = aws_stack.names.vehicle_updates_table
    ddb.put_item(TableName=campaigns, Item={"campaign_id": {"S": "kept"}, "n": {"N": "1"}})
    record = {"vehicle_id": {"S": "VIN-A"}, "update_id": {"S": "u1"}, "state": {"S": "NOTIFIED"}}
    ddb.put_item(TableName=updates, Item=record)
    ddb.put_item(TableName=campaigns, Item={"campaign_id": {"S": "guard"}, "n": {"N": "0"}})

    with pytest.raises(ddb.exceptions.TransactionCanceledException) as caught:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": campaigns, "Item": {"campaign_id": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": campaigns,
                        "Key": {"campaign_id": {"S": "kept"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {
                    "Update": {
                        "TableName": updates,
                        "Key": {"vehicle_id": {"S": "VIN-A"}, "update_id": {"S": "u1"}},
                        "UpdateExpression": "SET #s = :done",
                        "ExpressionAttributeNames": {"#s": "state"},
                        "ExpressionAttributeValues": {":done": {"S": "COMPLETED"}},
                    }
                },
                {
                    "Put": {
                        "TableName": updates,
                        "Item": {"vehicle_id": {"S": "VIN-B"}, "update_id": {"S": "u1"}},
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": campaigns,
                        "Key": {"campaign_id": {"S": "guard"}},
                        "ConditionExpression": "n = :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    reasons = [r["Code"] for r in caught.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "None", "ConditionalCheckFailed"]
    assert "Item" not in ddb.get_item(TableName=campaigns, Key={"campaign_id": {"S": "new"}})
    kept = ddb.get_item(TableName=campaigns, Key={"campaign_id": {"S": "kept"}})["Item"]
    assert kept["n"] == {"N": "1"}
    a = ddb.get_item(
        TableName=updates, Key={"vehicle_id": {"S": "VIN-A"}, "update_id": {"S": "u1"}}
    )
    assert a["Item"] == record
    b = ddb.get_item(
        TableName=updates, Key={"vehicle_id": {"S": "VIN-B"}, "update_id": {"S": "u1"}}
    )
    assert "Item" not in b

    # The same transaction with its guard satisfied applies every item.
    ddb.put_item(TableName=campaigns, Item={"campaign_id": {"S": "guard"}, "n": {"N": "1"}})
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": campaigns, "Item": {"campaign_id": {"S": "new"}}}},
            {
                "ConditionCheck": {
                    "TableName": campaigns,
                    "Key": {"campaign_id": {"S": "guard"}},
                    "ConditionExpression": "n = :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
        ]
    )
    assert "Item" in ddb.get_item(TableName=campaigns, Key={"campaign_id": {"S": "new"}})


def test_the_item_size_limit_still_holds_and_items_keep_every_attribute(
    aws_stack: AwsStack,
) -> None:
    """The server measures an item once instead of once per attribute
    (`moto_items`): an item over DynamoDB's 400 KB is still refused, and a
    many-attribute item comes back whole."""
    ddb = aws_stack.aws.client("dynamodb")
    table = aws_stack.names.campaigns_table
    wide = {"campaign_id": {"S": "wide"}} | {f"a{i}": {"N": str(i)} for i in range(40)}
    ddb.put_item(TableName=table, Item=wide)
    assert ddb.get_item(TableName=table, Key={"campaign_id": {"S": "wide"}})["Item"] == wide

    big = {"campaign_id": {"S": "big"}} | {f"b{i}": {"S": "x" * 50_000} for i in range(9)}
    with pytest.raises(ddb.exceptions.ClientError, match="ValidationException"):
        ddb.put_item(TableName=table, Item=big)
    assert "Item" not in ddb.get_item(TableName=table, Key={"campaign_id": {"S": "big"}})


def test_data_plane_answers_written_directly_equal_motos_own(aws_stack: AwsStack) -> None:
    """The server writes data-plane answers as JSON directly (`moto_responses`)
    and, under the suite, also moto's own way, failing the request if the
    two differ: every attribute type, binary and sets included, comes back
    as written through each operation, with pagination and capacities."""
    ddb = aws_stack.aws.client("dynamodb")
    table = aws_stack.names.campaigns_table
    item = {
        "campaign_id": {"S": "answers-0"},
        "b": {"B": b"\x00\xffbin"},
        "bs": {"BS": [b"x", b"y"]},
        "ss": {"SS": ["p", "q"]},
        "ns": {"NS": ["1", "2.5"]},
        "m": {"M": {"n": {"NULL": True}, "l": {"L": [{"S": "z"}, {"BOOL": False}]}}},
    }
    key = {"campaign_id": item["campaign_id"]}
    assert "ConsumedCapacity" in ddb.put_item(
        TableName=table, Item=item, ReturnConsumedCapacity="TOTAL"
    )
    assert ddb.get_item(TableName=table, Key=key)["Item"] == item
    ddb.batch_write_item(
        RequestItems={
            table: [
                {"PutRequest": {"Item": item | {"campaign_id": {"S": f"answers-{n}"}}}}
                for n in range(1, 25)
            ]
        }
    )
    keys = [{"campaign_id": {"S": f"answers-{n}"}} for n in range(25)]
    read = ddb.batch_get_item(RequestItems={table: {"Keys": keys}})
    assert len(read["Responses"][table]) == 25
    assert read["UnprocessedKeys"] == {}
    assert all(got["bs"] == item["bs"] for got in read["Responses"][table])
    page = ddb.scan(TableName=table, Limit=3)
    assert page["Count"] == 3
    assert "LastEvaluatedKey" in page
    updated = ddb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET b = :b",
        ExpressionAttributeValues={":b": {"B": b"\x01"}},
        ReturnValues="ALL_NEW",
    )
    assert updated["Attributes"] == item | {"b": {"B": b"\x01"}}
    ddb.transact_write_items(
        TransactItems=[{"Put": {"TableName": table, "Item": item | {"ss": {"SS": ["r"]}}}}]
    )
    [got] = ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": key}}])[
        "Responses"
    ]
    assert got["Item"] == item | {"ss": {"SS": ["r"]}}
    old = ddb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD")
    assert old["Attributes"] == got["Item"]
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.delete_item(TableName=table, Key=keys[1], ConditionExpression="attribute_not_exists(b)")


def test_set_and_remove_updates_applied_directly_refuse_and_accept_what_moto_does(
    aws_stack: AwsStack,
) -> None:
    """SET/REMOVE-only updates skip moto's expression tree (`moto_updates`);
    under the suite the server also applies each moto's way and fails the
    request on any difference. The condition still decides, and what moto
    refuses (a key attribute, two paths on one attribute, an unused value)
    is still refused with moto's words."""
    ddb = aws_stack.aws.client("dynamodb")
    table = aws_stack.names.campaigns_table
    key = {"campaign_id": {"S": "direct"}}
    ddb.put_item(TableName=table, Item=key | {"s": {"S": "x"}, "gone": {"N": "5"}})
    names = {"#a": "s", "#b": "m", "#c": "gone"}
    ddb.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": table,
                    "Key": key,
                    "UpdateExpression": "SET #a = :a, #b = :b REMOVE #c",
                    "ConditionExpression": "#a = :old",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": {
                        ":a": {"S": "y"},
                        ":b": {"M": {"k": {"L": [{"N": "1.50"}, {"B": b"\x01"}]}}},
                        ":old": {"S": "x"},
                    },
                }
            }
        ]
    )
    assert ddb.get_item(TableName=table, Key=key)["Item"] == key | {
        "s": {"S": "y"},
        "m": {"M": {"k": {"L": [{"N": "1.50"}, {"B": b"\x01"}]}}},
    }
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #a = :a",
            ConditionExpression="#a = :old",
            ExpressionAttributeNames={"#a": "s"},
            ExpressionAttributeValues={":a": {"S": "z"}, ":old": {"S": "x"}},
        )
    refused = [
        ({"#a": "campaign_id"}, {":a": {"S": "z"}}, "SET #a = :a", "Cannot update attribute"),
        ({"#a": "q", "#b": "q"}, {":a": {"S": "z"}}, "SET #a = :a, #b = :a", "overlap"),
        ({"#a": "q"}, {":a": {"S": "z"}, ":b": {"S": "z"}}, "SET #a = :a", "unused"),
    ]
    for names, values, expression, words in refused:
        with pytest.raises(ddb.exceptions.ClientError, match=words):
            ddb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
    assert ddb.get_item(TableName=table, Key=key)["Item"]["s"] == {"S": "y"}


def test_direct_updates_answer_return_values_and_refuse_what_moto_refuses_by_size(
    aws_stack: AwsStack,
) -> None:
    """A plain UpdateItem on the direct path answers ReturnValues as moto does
    and removes an absent attribute as a no-op; an update that moto's running
    size check refuses (the replaced value counted with the new one) is
    refused, though the finished item would be under the limit."""
    ddb = aws_stack.aws.client("dynamodb")
    table = aws_stack.names.campaigns_table
    key = {"campaign_id": {"S": "direct-plain"}}
    ddb.put_item(TableName=table, Item=key | {"s": {"S": "x"}})
    old = ddb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET #a = :a REMOVE #gone",
        ExpressionAttributeNames={"#a": "s", "#gone": "never_there"},
        ExpressionAttributeValues={":a": {"S": "y"}},
        ReturnValues="UPDATED_OLD",
    )
    assert old["Attributes"] == {"s": {"S": "x"}}
    assert ddb.get_item(TableName=table, Key=key)["Item"] == key | {"s": {"S": "y"}}

    wide = {"campaign_id": {"S": "direct-wide"}}
    big = "x" * 140_000
    ddb.put_item(TableName=table, Item=wide | {"a": {"S": big}, "b": {"S": big}})
    with pytest.raises(ddb.exceptions.ClientError, match="ValidationException"):
        ddb.update_item(
            TableName=table,
            Key=wide,
            UpdateExpression="SET #b = :b",
            ExpressionAttributeNames={"#b": "b"},
            ExpressionAttributeValues={":b": {"S": "y" * 140_000}},
        )
    assert ddb.get_item(TableName=table, Key=wide)["Item"]["b"] == {"S": big}
