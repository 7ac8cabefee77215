"""The firmware table: one item per package, keyed by firmware id, plus one
uniqueness marker per (device model, version).

Item layout (attribute names shared with `v2c.handlers.ota.firmware_catalog`,
the campaign side's reader): `firmware_id`, `name`, `version`,
`device_model`, `manufacturer`, `description`, `is_beta`,
`is_security_update`, `tags`, `metadata_json`, `hardware_id`,
`min_installed_version`, `filename`, `file_format`, `size_bytes`, `md5`, `sha256`,
`s3_key`, `status`, `status_reason`, `created_at`, `updated_at` (ISO 8601,
UTC), `created_by`, `download_count`.

BR-OTA-005 makes (device_model, version) unique, but the key is the firmware
id, which also hashes the name: two uploads of one model and version under
different names have different ids. A conditional put on the id cannot
catch that, and a GSI read before the write is eventually consistent. So a
new package is written in one transaction with a marker item
`firmware_id = "model-version#{version}#{device_model}"` (no `device_model`
attribute, so it stays out of the by-device-model index and out of listings),
both conditional on not existing: two concurrent uploads can never both win.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import Conflict, NotFound
from v2c.handlers.ota.ddb import error_code, from_item, to_item, transient
from v2c.handlers.ota.firmware.formats import FirmwareFormat
from v2c.handlers.ota.firmware.model import FirmwareRecord, FirmwareStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BY_DEVICE_MODEL: Final = "by-device-model"
MARKER_PREFIX: Final = "model-version#"


class FirmwareIdTaken(Conflict):
    """A record with this firmware id exists already (the service decides
    whether that is an idempotent retry or a conflict)."""

    def __init__(self, firmware_id: str) -> None:
        super().__init__(f"firmware {firmware_id} already exists")
        self.firmware_id = firmware_id


class ModelVersionTaken(Conflict):
    """BR-OTA-005: another package already has this device model and version."""

    def __init__(self, device_model: str, version: str, owner: str) -> None:
        super().__init__(
            f"device model {device_model!r} already has firmware version {version} "
            f"(firmware {owner}); upload a new version or use the same name"
        )
        self.owner = owner


def iso(moment: datetime) -> str:
    """UTC, millisecond precision, `Z`: sorts as text in time order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def marker_key(device_model: str, version: str) -> str:
    # The version comes first: it cannot contain '#', so the key is unambiguous.
    return f"{MARKER_PREFIX}{version}#{device_model}"


def record_to_item(record: FirmwareRecord) -> dict[str, Any]:
    return {
        "firmware_id": record.firmware_id,
        "name": record.name,
        "version": record.version,
        "device_model": record.device_model,
        "manufacturer": record.manufacturer,
        "description": record.description,
        "is_beta": record.is_beta,
        "is_security_update": record.is_security_update,
        "tags": list(record.tags),
        "metadata_json": json.dumps(record.metadata, sort_keys=True),
        "hardware_id": record.hardware_id,
        "min_installed_version": record.min_installed_version,
        "filename": record.filename,
        "file_format": record.file_format.value,
        "size_bytes": record.file_size,
        "md5": record.checksum_md5,
        "sha256": record.checksum_sha256,
        "s3_key": record.s3_key,
        "status": record.status.value,
        "status_reason": record.status_reason,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "created_by": record.created_by,
        "download_count": record.download_count,
    }


def record_from_item(item: dict[str, Any]) -> FirmwareRecord:
    return FirmwareRecord.model_validate(
        {
            "firmware_id": item["firmware_id"],
            "name": item["name"],
            "version": item["version"],
            "device_model": item["device_model"],
            "manufacturer": item.get("manufacturer", ""),
            "description": item.get("description", ""),
            "is_beta": bool(item.get("is_beta", False)),
            "is_security_update": bool(item.get("is_security_update", False)),
            "tags": tuple(item.get("tags", ())),
            "metadata": json.loads(item.get("metadata_json") or "{}"),
            "hardware_id": item.get("hardware_id", ""),
            "min_installed_version": item.get("min_installed_version", ""),
            "filename": item.get("filename", ""),
            "file_format": item.get("file_format", FirmwareFormat.BIN.value),
            "file_size": int(item.get("size_bytes", 0)),
            "checksum_md5": item.get("md5", ""),
            "checksum_sha256": item.get("sha256", ""),
            "s3_key": item.get("s3_key") or f"firmware/{item['firmware_id']}",
            "status": item.get("status", FirmwareStatus.AVAILABLE.value),
            "status_reason": item.get("status_reason", ""),
            "created_at": item["created_at"],
            "updated_at": item.get("updated_at", item["created_at"]),
            "created_by": item.get("created_by", ""),
            "download_count": int(item.get("download_count", 0)),
        }
    )


class FirmwareRepository:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self.table = table

    # -- reads -------------------------------------------------------------

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            answer = self._ddb.get_item(
                TableName=self.table, Key={"firmware_id": {"S": key}}, ConsistentRead=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading the firmware registry", exc) from exc
        item = answer.get("Item")
        return from_item(item) if item else None

    def get(self, firmware_id: str) -> FirmwareRecord | None:
        """The record (deleted ones included), or None."""
        if firmware_id.startswith(MARKER_PREFIX):
            return None
        item = self._get(firmware_id)
        return record_from_item(item) if item else None

    def model_version_owner(self, device_model: str, version: str) -> str | None:
        """The firmware id holding (device_model, version), read consistently."""
        item = self._get(marker_key(device_model, version))
        return str(item["owner"]) if item else None

    def by_device_model(self, device_model: str) -> Iterator[FirmwareRecord]:
        """Every record of one model, through the by-device-model index."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_DEVICE_MODEL,
            "KeyConditionExpression": "device_model = :m",
            "ExpressionAttributeValues": {":m": {"S": device_model}},
        }
        yield from self._pages("query", kwargs)

    def all(self) -> Iterator[FirmwareRecord]:
        """Every record (markers left out), by a paginated Scan."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "attribute_exists(device_model)",
        }
        yield from self._pages("scan", kwargs)

    def _pages(self, operation: str, kwargs: dict[str, Any]) -> Iterator[FirmwareRecord]:
        call = self._ddb.query if operation == "query" else self._ddb.scan
        while True:
            try:
                answer: Any = call(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise transient("listing firmware", exc) from exc
            for item in answer.get("Items", []):
                yield record_from_item(from_item(item))
            last = answer.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    # -- writes ------------------------------------------------------------

    def put_new(self, record: FirmwareRecord) -> None:
        """Write a new record and its (model, version) marker in one transaction.

        `FirmwareIdTaken` when the id exists, `ModelVersionTaken` when only
        the marker does (another name holds this model and version)."""
        marker = {
            "firmware_id": marker_key(record.device_model, record.version),
            "owner": record.firmware_id,
            "created_at": iso(record.created_at),
        }
        condition = "attribute_not_exists(firmware_id)"
        try:
            self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": to_item(record_to_item(record)),
                            "ConditionExpression": condition,
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": to_item(marker),
                            "ConditionExpression": condition,
                        }
                    },
                ]
            )
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise transient("registering firmware", exc) from exc
            codes = [str(r.get("Code", "")) for r in exc.response.get("CancellationReasons", [])]
            if codes and codes[0] == "ConditionalCheckFailed":
                raise FirmwareIdTaken(record.firmware_id) from exc
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                owner = self.model_version_owner(record.device_model, record.version) or "?"
                raise ModelVersionTaken(record.device_model, record.version, owner) from exc
            raise transient("registering firmware", exc) from exc
        except BotoCoreError as exc:
            raise transient("registering firmware", exc) from exc

    def change_status(
        self,
        firmware_id: str,
        expected: FirmwareStatus,
        status: FirmwareStatus,
        reason: str,
        now: datetime,
    ) -> FirmwareRecord:
        """Move the record from `expected` to `status`, conditional on it still
        being `expected`; `Conflict` when another request moved it first."""
        try:
            answer = self._ddb.update_item(
                TableName=self.table,
                Key={"firmware_id": {"S": firmware_id}},
                UpdateExpression="SET #s = :s, status_reason = :r, updated_at = :t",
                ConditionExpression="#s = :expected",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":s": {"S": status.value},
                    ":r": {"S": reason},
                    ":t": {"S": iso(now)},
                    ":expected": {"S": expected.value},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise Conflict(
                    f"firmware {firmware_id} changed status while this request ran; read it again"
                ) from exc
            raise transient("changing the firmware status", exc) from exc
        except BotoCoreError as exc:
            raise transient("changing the firmware status", exc) from exc
        return record_from_item(from_item(answer["Attributes"]))

    def count_download(self, firmware_id: str) -> None:
        """BR-OTA-010: one more download (an atomic ADD, never read-modify-write)."""
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={"firmware_id": {"S": firmware_id}},
                UpdateExpression="ADD download_count :one",
                ConditionExpression="attribute_exists(firmware_id)",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise NotFound(f"firmware {firmware_id} not found") from exc
            raise transient("counting a firmware download", exc) from exc
        except BotoCoreError as exc:
            raise transient("counting a firmware download", exc) from exc
