"""The firmware registry as campaigns read it (`ports.PackageCatalog`).

Read-only and small on purpose: campaigns need a package's version, model,
size and SHA-256, whether it may still be deployed, whether its object is
really in the bucket, and a presigned URL. The registry's write side
(uploads, lifecycle) is `v2c.handlers.ota.firmware`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import NotFound
from v2c.handlers.ota.ddb import from_item, transient
from v2c.handlers.ota.ports import Package

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

DEPLOYABLE: Final = frozenset({"available", "active"})
URL_TTL_S: Final = 3600


def package_from_item(item: dict[str, Any]) -> Package:
    status = str(item.get("status", "available"))
    return Package(
        firmware_id=str(item["firmware_id"]),
        name=str(item.get("name", "")),
        version=str(item["version"]),
        device_model=str(item["device_model"]),
        size_bytes=int(item.get("size_bytes", 0)),
        sha256_hex=str(item.get("sha256", "")),
        available=status in DEPLOYABLE,
        status=status,
        hardware_id=str(item.get("hardware_id", "")),
        min_installed_version=str(item.get("min_installed_version", "")),
        is_beta=bool(item.get("is_beta", False)),
    )


class FirmwareCatalog:
    def __init__(self, ddb: DynamoDBClient, s3: S3Client, table: str, bucket: str) -> None:
        self._ddb = ddb
        self._s3 = s3
        self._table = table
        self._bucket = bucket

    def _item(self, firmware_id: str) -> dict[str, Any]:
        try:
            answer = self._ddb.get_item(
                TableName=self._table, Key={"firmware_id": {"S": firmware_id}}, ConsistentRead=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading the firmware registry", exc) from exc
        item = answer.get("Item")
        if not item:
            raise NotFound(f"firmware {firmware_id!r} not found")
        return from_item(item)

    def package(self, firmware_id: str) -> Package:
        return package_from_item(self._item(firmware_id))

    def find_version(self, device_model: str, version: str) -> Package | None:
        try:
            answer = self._ddb.query(
                TableName=self._table,
                IndexName="by-device-model",
                KeyConditionExpression="device_model = :m AND version = :v",
                ExpressionAttributeValues={":m": {"S": device_model}, ":v": {"S": version}},
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading the firmware registry", exc) from exc
        packages = [package_from_item(from_item(i)) for i in answer.get("Items", [])]
        usable = [p for p in packages if p.status != "deleted"]
        return usable[0] if usable else None

    def _key(self, firmware_id: str) -> str:
        return str(self._item(firmware_id).get("s3_key") or f"firmware/{firmware_id}")

    def package_exists(self, firmware_id: str) -> bool:
        try:
            self._s3.head_object(Bucket=self._bucket, Key=self._key(firmware_id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise transient("checking the firmware package", exc) from exc
        except BotoCoreError as exc:
            raise transient("checking the firmware package", exc) from exc
        return True

    def download_url(self, firmware_id: str, expires_s: int = URL_TTL_S) -> str:
        return str(
            self._s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": self._key(firmware_id)},
                ExpiresIn=expires_s,
            )
        )
