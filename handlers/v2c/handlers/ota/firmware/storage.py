"""The firmware bucket: package objects, multipart uploads, staging and
presigned URLs. Only S3 calls live here; what to store and when is the
service's decision.

Keys: a registered package lives at `firmware/{firmware_id}/{upload_id}`:
unique per upload attempt, so two concurrent uploads of one firmware id never
write the same key, and the loser of the registry write removes its own
object without touching the winner's. Two-step uploads stage at
`firmware-staging/{token}/package` with a `ticket.json` beside it. The
bucket is versioned, so the service removes its own objects by version id
(a plain delete would only hide them behind a delete marker).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import TransientError
from v2c.handlers.aws_errors import S3_MISSING
from v2c.handlers.ota.ddb import error_code, transient

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PACKAGE_PREFIX: Final = "firmware/"
STAGING_PREFIX: Final = "firmware-staging/"


def package_key(firmware_id: str, upload_id: str) -> str:
    return f"{PACKAGE_PREFIX}{firmware_id}/{upload_id}"


def staging_prefix(token: str) -> str:
    return f"{STAGING_PREFIX}{token}/"


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    etag: str
    version_id: str | None


class MultipartWriter:
    """One multipart upload: parts in order, then `complete` or `abort`."""

    def __init__(self, s3: S3Client, bucket: str, key: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self.key = key
        try:
            self.upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        except (BotoCoreError, ClientError) as exc:
            raise transient("starting the firmware upload", exc) from exc
        self._parts: list[dict[str, Any]] = []

    def upload_part(self, data: bytes | bytearray) -> None:
        number = len(self._parts) + 1
        try:
            answer = self._s3.upload_part(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,  # type: ignore[arg-type]  # botocore accepts bytearray
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient(f"uploading firmware part {number}", exc) from exc
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> str | None:
        """Make the object visible; its version id (None if unversioned)."""
        try:
            answer = self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self._parts},  # type: ignore[typeddict-item]
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("completing the firmware upload", exc) from exc
        return answer.get("VersionId")

    def abort(self) -> None:
        """Drop every uploaded part. Raises `TransientError` when S3 refuses:
        the caller logs it (a lifecycle rule for incomplete uploads is the
        backstop)."""
        try:
            self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=self.key, UploadId=self.upload_id
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("aborting the firmware upload", exc) from exc


class S3Reader:
    """A GetObject body with S3's read errors translated to `TransientError`."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._body.read(None if size < 0 else size)
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading a staged firmware package", exc) from exc
        return data

    def close(self) -> None:
        self._body.close()


class PackageStore:
    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def start_multipart(self, key: str) -> MultipartWriter:
        return MultipartWriter(self._s3, self.bucket, key)

    def put(self, key: str, data: bytes | bytearray) -> str | None:
        """A small object in one PUT; its version id."""
        try:
            answer = self._s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))
        except (BotoCoreError, ClientError) as exc:
            raise transient("storing the firmware package", exc) from exc
        return answer.get("VersionId")

    def head(self, key: str) -> StoredObject | None:
        try:
            answer = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in S3_MISSING:
                return None
            raise transient("checking a firmware object", exc) from exc
        except BotoCoreError as exc:
            raise transient("checking a firmware object", exc) from exc
        return StoredObject(
            key, int(answer["ContentLength"]), str(answer["ETag"]), answer.get("VersionId")
        )

    def open(self, obj: StoredObject) -> S3Reader:
        """A reader of exactly the version (or ETag) that `head` saw: a PUT
        racing in between is not what gets hashed. Close it when done."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": obj.key}
        if obj.version_id:
            kwargs["VersionId"] = obj.version_id
        else:
            kwargs["IfMatch"] = obj.etag
        try:
            return S3Reader(self._s3.get_object(**kwargs)["Body"])
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading a staged firmware package", exc) from exc

    def copy(self, source: StoredObject, key: str) -> str | None:
        """A server-side copy of exactly `source`'s version; the new version id."""
        copy_source: dict[str, str] = {"Bucket": self.bucket, "Key": source.key}
        if source.version_id:
            copy_source["VersionId"] = source.version_id
        try:
            answer = self._s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource=copy_source,  # type: ignore[arg-type]
                CopySourceIfMatch=source.etag,
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("copying the firmware package", exc) from exc
        return answer.get("VersionId")

    def delete(self, key: str, version_id: str | None) -> None:
        """Remove one version for good (or the object, if unversioned)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            self._s3.delete_object(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise transient("deleting a firmware object", exc) from exc

    def purge(self, prefix: str) -> None:
        """Every version and delete marker under `prefix`, gone (staging cleanup)."""
        try:
            pages = self._s3.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                doomed = [
                    {"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                ]
                if doomed:
                    self._s3.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": doomed, "Quiet": True},  # type: ignore[typeddict-item]
                    )
        except (BotoCoreError, ClientError) as exc:
            raise transient("removing staged firmware", exc) from exc

    def put_json(self, key: str, value: dict[str, Any]) -> None:
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=json.dumps(value).encode(),
                ContentType="application/json",
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("storing an upload ticket", exc) from exc

    def get_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            with body:
                data: dict[str, Any] = json.loads(body.read())
        except ClientError as exc:
            if error_code(exc) in S3_MISSING:
                return None
            raise transient("reading an upload ticket", exc) from exc
        except BotoCoreError as exc:
            raise transient("reading an upload ticket", exc) from exc
        except ValueError as exc:
            raise TransientError(f"upload ticket {key} is not JSON: {exc}") from exc
        return data

    def presign_put(self, key: str, expires_s: int) -> str:
        return self._presign("put_object", {"Bucket": self.bucket, "Key": key}, expires_s)

    def presign_get(self, key: str, expires_s: int, filename: str = "") -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self._presign("get_object", params, expires_s)

    def _presign(self, operation: str, params: dict[str, Any], expires_s: int) -> str:
        try:
            return str(
                self._s3.generate_presigned_url(operation, Params=params, ExpiresIn=expires_s)
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("signing a firmware URL", exc) from exc
