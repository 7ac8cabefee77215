"""Resource bootstrap and stack settings against a real moto server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.gateway.rules import RULES
from v2c.infra.aws.resources import (
    DLQ_RETENTION_DAYS,
    ResourceMismatch,
    ensure_resources,
    ingest_rules,
    queue_specs,
    table_specs,
)
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.local.moto_server import reset
from v2c.infra.names import ResourceNames
from v2c.infra.settings import (
    ENV_ENDPOINT_URL,
    ENV_STACK_DIR,
    AwsSettings,
    MqttSettings,
    StackNotFound,
    StackSettings,
    load_settings,
    write_settings,
)

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


NAMES = ResourceNames()


def test_bootstrap_on_an_empty_moto_creates_every_resource(aws_stack: AwsStack) -> None:
    report = aws_stack.report

    assert [item.action for item in report.items] == ["created"] * len(report.items)
    kinds = {(item.kind, item.name) for item in report.items}
    assert {("dynamodb-table", spec.name) for spec in table_specs(NAMES)} <= kinds
    assert ("s3-bucket", NAMES.firmware_bucket) in kinds
    assert ("s3-bucket", NAMES.telemetry_dlq_bucket) in kinds
    assert ("sqs-queue", NAMES.ota_dlq_queue) in kinds
    assert ("sqs-queue", NAMES.ingest_dlq_queue) in kinds
    assert {("sqs-queue", rule.queue) for rule in ingest_rules(RULES)} <= kinds
    assert ("kms-key", NAMES.signing_key_alias) in kinds
    assert ("event-bus", NAMES.event_bus) in kinds
    assert ("s3-bucket", NAMES.timeseries_bucket) in kinds
    assert ("firehose-stream", NAMES.timeseries_stream) in kinds
    # Timestream only when a database is named: never by default
    assert NAMES.timestream_database is None
    assert not any(kind.startswith("timestream") for kind, _ in kinds)


def test_a_second_bootstrap_creates_nothing_and_reports_everything_as_existing(
    aws_stack: AwsStack,
) -> None:
    again = ensure_resources(aws_stack.aws, aws_stack.names)

    assert again.created == []
    assert not again.changed
    assert [(i.kind, i.name) for i in again.items] == [
        (i.kind, i.name) for i in aws_stack.report.items
    ]


def test_every_table_is_on_demand_with_the_documented_keys_indexes_and_ttl(
    aws_stack: AwsStack,
) -> None:
    ddb = aws_stack.aws.client("dynamodb")
    for spec in table_specs(aws_stack.names):
        table = ddb.describe_table(TableName=spec.name)["Table"]
        ttl = ddb.describe_time_to_live(TableName=spec.name)["TimeToLiveDescription"]

        assert table.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST"
        assert table["KeySchema"][0] == {"AttributeName": spec.partition.name, "KeyType": "HASH"}
        assert len(table["KeySchema"]) == (2 if spec.sort else 1)
        indexes = {gsi["IndexName"] for gsi in table.get("GlobalSecondaryIndexes", [])}
        assert indexes == {index.name for index in spec.indexes}
        if spec.ttl_attribute:
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == spec.ttl_attribute
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_telemetry_table_expires_records_by_expires_at(aws_stack: AwsStack) -> None:
    ttl = aws_stack.aws.client("dynamodb").describe_time_to_live(
        TableName=aws_stack.names.telemetry_table
    )["TimeToLiveDescription"]

    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_vehicle_updates_can_be_queried_by_campaign(aws_stack: AwsStack) -> None:
    ddb = aws_stack.aws.client("dynamodb")
    table = aws_stack.names.vehicle_updates_table
    for vin, campaign in (("VIN-A", "c1"), ("VIN-B", "c1"), ("VIN-C", "c2")):
        ddb.put_item(
            TableName=table,
            Item={
                "vehicle_id": {"S": vin},
                "update_id": {"S": f"u-{vin}"},
                "campaign_id": {"S": campaign},
            },
        )

    found = ddb.query(
        TableName=table,
        IndexName="by-campaign",
        KeyConditionExpression="campaign_id = :c",
        ExpressionAttributeValues={":c": {"S": "c1"}},
    )["Items"]

    assert sorted(item["vehicle_id"]["S"] for item in found) == ["VIN-A", "VIN-B"]


def test_telemetry_dlq_bucket_expires_objects_after_90_days(aws_stack: AwsStack) -> None:
    s3 = aws_stack.aws.client("s3")
    bucket = aws_stack.names.telemetry_dlq_bucket

    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert len(rules) == 1
    assert rules[0]["Status"] == "Enabled"
    assert rules[0].get("Expiration", {}).get("Days") == DLQ_RETENTION_DAYS == 90
    assert rules[0].get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 90
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())


def test_firmware_bucket_drops_old_fleet_index_versions_after_a_day_and_keeps_packages(
    aws_stack: AwsStack,
) -> None:
    s3 = aws_stack.aws.client("s3")
    bucket = aws_stack.names.firmware_bucket

    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}

    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    index = rules["fleet-index-versions"]
    assert index.get("Filter", {}).get("Prefix") == "fleet-index/"
    assert index.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 1
    # no rule ever expires a current object of the firmware bucket
    assert all("Expiration" not in rule for rule in rules.values())


def test_ota_dlq_queue_keeps_messages_for_14_days(aws_stack: AwsStack) -> None:
    sqs = aws_stack.aws.client("sqs")
    url = sqs.get_queue_url(QueueName=aws_stack.names.ota_dlq_queue)["QueueUrl"]

    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])

    assert attrs["Attributes"]["MessageRetentionPeriod"] == "1209600"


def _queue_attributes(sqs: Any, name: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attributes: dict[str, str] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return attributes


def test_ingest_queues_redrive_to_the_ingest_dlq_after_the_rules_receive_count(
    aws_stack: AwsStack,
) -> None:
    sqs = aws_stack.aws.client("sqs")
    dlq = _queue_attributes(sqs, aws_stack.names.ingest_dlq_queue)

    assert dlq["MessageRetentionPeriod"] == "1209600"
    for rule in ingest_rules(RULES):
        attributes = _queue_attributes(sqs, rule.queue)
        redrive = json.loads(attributes["RedrivePolicy"])

        assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == rule.max_receive_count
        assert int(attributes["VisibilityTimeout"]) >= 6 * rule.timeout_s


def test_a_record_received_max_receive_count_times_moves_to_the_ingest_dlq(
    aws_stack: AwsStack,
) -> None:
    # Given a record on the telemetry queue that every receiver fails (never deletes)
    rule = next(r for r in RULES if r.name == "telemetry")
    sqs = aws_stack.aws.client("sqs")
    url = sqs.get_queue_url(QueueName=rule.queue)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"rule": "telemetry"}')

    # When it is received max_receive_count times, made visible again at once each time
    for _ in range(rule.max_receive_count):
        (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )

    # Then the next receive finds it in the DLQ, not on the queue
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
    dlq = sqs.get_queue_url(QueueName=aws_stack.names.ingest_dlq_queue)["QueueUrl"]
    (moved,) = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)["Messages"]
    assert moved["Body"] == '{"rule": "telemetry"}'


def test_the_bootstrapped_queues_are_the_templates_queues(aws_stack: AwsStack) -> None:
    sqs = aws_stack.aws.client("sqs")
    resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    declared = {
        logical: r["Properties"]
        for logical, r in resources.items()
        if r["Type"] == "AWS::SQS::Queue"
    }
    names = {logical: props["QueueName"] for logical, props in declared.items()}

    assert sorted(names.values()) == sorted(spec.name for spec in queue_specs(aws_stack.names))
    for props in declared.values():
        have = _queue_attributes(sqs, props["QueueName"])
        assert have["MessageRetentionPeriod"] == str(props["MessageRetentionPeriod"])
        if "VisibilityTimeout" in props:
            assert have["VisibilityTimeout"] == str(props["VisibilityTimeout"])
        if "RedrivePolicy" in props:
            want, redrive = props["RedrivePolicy"], json.loads(have["RedrivePolicy"])
            target = names[want["deadLetterTargetArn"]["Fn::GetAtt"][0]]
            assert redrive["deadLetterTargetArn"].endswith(f":{target}")
            assert int(redrive["maxReceiveCount"]) == want["maxReceiveCount"]
        else:
            assert "RedrivePolicy" not in have


def test_signing_key_is_a_p256_sign_verify_key_whose_signatures_verify(
    aws_stack: AwsStack,
) -> None:
    kms = aws_stack.aws.client("kms")
    alias = aws_stack.names.signing_key_alias
    meta = kms.describe_key(KeyId=alias)["KeyMetadata"]
    manifest = b"canonical manifest bytes"

    signature = kms.sign(
        KeyId=alias, Message=manifest, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
    )["Signature"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=alias)["PublicKey"])

    assert (meta["KeySpec"], meta["KeyUsage"], meta["KeyState"]) == (
        "ECC_NIST_P256",
        "SIGN_VERIFY",
        "Enabled",
    )
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, manifest, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, manifest + b"!", ec.ECDSA(hashes.SHA256()))


def test_event_bus_exists_and_timestream_only_when_a_database_is_named(
    aws_stack: AwsStack,
) -> None:
    names = aws_stack.names
    bus = aws_stack.aws.client("events").describe_event_bus(Name=names.event_bus)
    databases = aws_stack.aws.client("timestream-write").list_databases()["Databases"]

    assert bus["Name"] == names.event_bus
    assert databases == []

    named = names.model_copy(update={"timestream_database": "v2c-telemetry-ts"})
    report = ensure_resources(aws_stack.aws, named)

    assert report.find("timestream-database", "v2c-telemetry-ts").action == "created"
    table = aws_stack.aws.client("timestream-write").describe_table(
        DatabaseName="v2c-telemetry-ts", TableName=named.timestream_table
    )["Table"]
    assert table.get("TableStatus") == "ACTIVE"


def test_bootstrap_puts_drifted_settings_back_and_reports_them_updated(
    aws_stack: AwsStack,
) -> None:
    # Given: someone removed the DLQ lifecycle, shortened the queue retention, disabled a TTL
    aws, names = aws_stack.aws, aws_stack.names
    aws.client("s3").delete_bucket_lifecycle(Bucket=names.telemetry_dlq_bucket)
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName=names.ota_dlq_queue)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    ddb = aws.client("dynamodb")
    ddb.update_time_to_live(
        TableName=names.telemetry_table,
        TimeToLiveSpecification={"Enabled": False, "AttributeName": "expires_at"},
    )

    # When
    report = ensure_resources(aws, names)

    # Then
    updated = {item.name for item in report.items if item.action == "updated"}
    assert updated == {names.telemetry_dlq_bucket, names.ota_dlq_queue, names.telemetry_table}
    assert ensure_resources(aws, names).changed is False


def test_bootstrap_puts_a_removed_redrive_policy_and_visibility_timeout_back(
    aws_stack: AwsStack,
) -> None:
    # Given: someone took the batch queue's redrive policy and shortened its visibility
    aws, names = aws_stack.aws, aws_stack.names
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName=names.telemetry_batch_ingest_queue)["QueueUrl"]
    sqs.set_queue_attributes(
        QueueUrl=url, Attributes={"RedrivePolicy": "", "VisibilityTimeout": "30"}
    )
    before = _queue_attributes(sqs, names.telemetry_batch_ingest_queue)

    # When
    report = ensure_resources(aws, names)

    # Then
    assert report.find("sqs-queue", names.telemetry_batch_ingest_queue).action == "updated"
    assert [i.name for i in report.items if i.action == "updated"] == [
        names.telemetry_batch_ingest_queue
    ]
    after = _queue_attributes(sqs, names.telemetry_batch_ingest_queue)
    assert (before.get("RedrivePolicy") or "") == ""
    assert json.loads(after["RedrivePolicy"])["maxReceiveCount"] in (3, "3")
    assert after["VisibilityTimeout"] == "180"
    assert ensure_resources(aws, names).changed is False


def test_a_missing_index_is_added_to_an_existing_table(
    moto_server: str, aws_settings: AwsSettings
) -> None:
    reset(moto_server)
    ddb = aws_settings.client("dynamodb")
    ddb.create_table(
        TableName=NAMES.vehicle_updates_table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "vehicle_id", "KeyType": "HASH"},
            {"AttributeName": "update_id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "vehicle_id", "AttributeType": "S"},
            {"AttributeName": "update_id", "AttributeType": "S"},
        ],
    )

    report = ensure_resources(aws_settings, NAMES)

    assert report.find("dynamodb-table", NAMES.vehicle_updates_table).action == "updated"
    table = ddb.describe_table(TableName=NAMES.vehicle_updates_table)["Table"]
    assert {g["IndexName"] for g in table.get("GlobalSecondaryIndexes", [])} == {
        "by-campaign",
        "by-update",
        "by-due",
    }


def test_an_existing_table_with_another_key_schema_is_a_mismatch_not_replaced(
    moto_server: str, aws_settings: AwsSettings
) -> None:
    reset(moto_server)
    ddb = aws_settings.client("dynamodb")
    ddb.create_table(
        TableName=NAMES.campaigns_table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )

    with pytest.raises(ResourceMismatch, match=NAMES.campaigns_table):
        ensure_resources(aws_settings, NAMES)

    assert NAMES.campaigns_table in ddb.list_tables()["TableNames"]


def test_an_alias_on_a_symmetric_key_is_a_mismatch(
    moto_server: str, aws_settings: AwsSettings
) -> None:
    reset(moto_server)
    kms = aws_settings.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=NAMES.signing_key_alias, TargetKeyId=key_id)

    with pytest.raises(ResourceMismatch, match="SYMMETRIC_DEFAULT"):
        ensure_resources(aws_settings, NAMES)


def test_prefixed_names_make_a_second_independent_set(aws_stack: AwsStack) -> None:
    other = ResourceNames.with_prefix("v2c-t2")

    report = ensure_resources(aws_stack.aws, other)

    assert len(report.created) == len(report.items) > 0
    assert report.find("kms-key", "alias/v2c-t2-ota-signing").action == "created"


def test_settings_round_trip_through_stack_json_and_reach_the_same_moto(
    aws_stack: AwsStack, tmp_path: Path
) -> None:
    certs = tmp_path / "pki"
    certs.mkdir()
    written = StackSettings(
        mqtt=MqttSettings(
            port=1883,
            tls_port=8883,
            ca_file=certs / "ca.pem",
            service_cert=certs / "service.pem",
            service_key=certs / "service.key",
        ),
        aws=aws_stack.aws,
        resources=aws_stack.names,
        processes={"moto": 1234},
    )

    path = write_settings(written, tmp_path)
    loaded = load_settings(tmp_path, environ={})

    assert path == tmp_path / "stack.json"
    assert '"pki/ca.pem"' in path.read_text()  # stored relative: the directory can move
    assert loaded == written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".stack-")] == []
    tables = loaded.aws.client("dynamodb").list_tables()["TableNames"]
    assert aws_stack.names.telemetry_table in tables


def _stack_at(directory: Path, endpoint: str, region: str = "us-east-1") -> Path:
    write_settings(StackSettings(aws=AwsSettings(endpoint_url=endpoint, region=region)), directory)
    return directory


def test_stack_dir_flag_beats_the_environment_which_beats_the_cwd(tmp_path: Path) -> None:
    flag = _stack_at(tmp_path / "flag", "http://127.0.0.1:1001")
    env = _stack_at(tmp_path / "env", "http://127.0.0.1:1002")
    _stack_at(tmp_path / "cwd" / ".stack", "http://127.0.0.1:1003")
    environ = {ENV_STACK_DIR: str(env)}
    cwd = tmp_path / "cwd"

    from_flag = load_settings(flag, environ=environ, cwd=cwd)
    from_env = load_settings(environ=environ, cwd=cwd)
    from_cwd = load_settings(environ={}, cwd=cwd)

    assert from_flag.aws.endpoint_url == "http://127.0.0.1:1001"
    assert from_env.aws.endpoint_url == "http://127.0.0.1:1002"
    assert from_cwd.aws.endpoint_url == "http://127.0.0.1:1003"


def test_endpoint_and_region_flags_beat_the_environment_which_beats_the_file(
    tmp_path: Path,
) -> None:
    stack = _stack_at(tmp_path, "http://127.0.0.1:1001", region="eu-west-1")
    environ = {ENV_ENDPOINT_URL: "http://127.0.0.1:1002", "AWS_REGION": "eu-central-1"}

    from_file = load_settings(stack, environ={})
    from_env = load_settings(stack, environ=environ)
    from_flags = load_settings(
        stack, endpoint_url="http://127.0.0.1:1003", region="us-west-2", environ=environ
    )

    assert (from_file.aws.endpoint_url, from_file.aws.region) == (
        "http://127.0.0.1:1001",
        "eu-west-1",
    )
    assert (from_env.aws.endpoint_url, from_env.aws.region) == (
        "http://127.0.0.1:1002",
        "eu-central-1",
    )
    assert (from_flags.aws.endpoint_url, from_flags.aws.region) == (
        "http://127.0.0.1:1003",
        "us-west-2",
    )


def test_endpoint_word_aws_overrides_a_local_endpoint_in_the_file(tmp_path: Path) -> None:
    stack = _stack_at(tmp_path, "http://127.0.0.1:1001")

    settings = load_settings(stack, endpoint_url="aws", environ={})

    assert settings.aws.endpoint_url is None
    assert "endpoint_url" not in settings.aws.boto3_client_kwargs()


def test_no_stack_anywhere_is_a_typed_error_naming_the_ways_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(StackNotFound, match=ENV_STACK_DIR):
        load_settings(environ={"AWS_REGION": "eu-west-1"}, cwd=tmp_path)


def test_an_explicit_stack_dir_without_stack_json_does_not_fall_back_to_the_cwd(
    tmp_path: Path,
) -> None:
    _stack_at(tmp_path / ".stack", "http://127.0.0.1:1003")

    with pytest.raises(StackNotFound, match="empty"):
        load_settings(tmp_path / "empty", environ={}, cwd=tmp_path)


def test_an_explicit_endpoint_without_any_stack_file_uses_the_default_names(
    tmp_path: Path,
) -> None:
    settings = load_settings(environ={ENV_ENDPOINT_URL: "http://127.0.0.1:1004"}, cwd=tmp_path)

    assert settings.aws.endpoint_url == "http://127.0.0.1:1004"
    assert settings.resources == ResourceNames()
    assert settings.mqtt is None


def test_bootstrap_command_creates_then_reports_everything_unchanged(moto_server: str) -> None:
    from typer.testing import CliRunner

    from v2c.infra.cli.main import app

    reset(moto_server)
    args = ["aws", "bootstrap", "--endpoint-url", moto_server]
    env = {"COLUMNS": "200", "V2C_STACK_DIR": "", "AWS_REGION": "us-east-1"}

    first = CliRunner().invoke(app, args, env=env)
    second = CliRunner().invoke(app, args, env=env)

    assert first.exit_code == 0, first.output
    assert "18 created, 0 updated, 0 unchanged" in first.output
    assert "alias/v2c-ota-signing" in first.output
    assert second.exit_code == 0, second.output
    assert "0 created, 0 updated, 18 unchanged" in second.output


def test_bootstrap_command_fails_with_a_hint_when_moto_is_not_running() -> None:
    from typer.testing import CliRunner

    from v2c.infra.cli.main import app
    from v2c.infra.net import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["aws", "bootstrap", "--endpoint-url", url])

    assert result.exit_code == 1
    assert "is the moto server running?" in result.output
