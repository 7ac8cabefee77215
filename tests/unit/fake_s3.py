"""An S3 bucket in memory with S3's conditional writes, atomic as S3's are.

Enough of the S3 client for the fleet index (`FleetIndex`): get, put with
`IfMatch` / `IfNoneMatch`, list with a prefix (paged), delete, head. Each
call runs under one lock, so a conditional write is checked and applied at
once, as in S3 (moto's server checks and writes without a lock: a race test
against moto can lose an update S3 would refuse). `before_put` lets a test
run something just before a write lands (another writer winning a race),
`before_get` just before a read (a compaction between a LIST and a GET).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError


def _error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


class FakeS3:
    def __init__(self, page: int = 1000) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.lock = threading.Lock()
        self.page = page
        self.puts = 0
        self.before_put: Callable[[str], None] | None = None
        self.before_get: Callable[[str], None] | None = None

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        hook = self.before_get
        if hook is not None:
            self.before_get = None
            hook(Key)
        with self.lock:
            if Key not in self.objects:
                raise _error("NoSuchKey", "GetObject")
            body, etag = self.objects[Key]
        return {"Body": io.BytesIO(body), "ETag": etag}

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        with self.lock:
            if Key not in self.objects:
                raise _error("404", "HeadObject")
            return {"ETag": self.objects[Key][1]}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **condition: str) -> None:  # noqa: N803
        hook = self.before_put
        if hook is not None:
            self.before_put = None
            hook(Key)
        with self.lock:
            current = self.objects.get(Key)
            if "IfNoneMatch" in condition and current is not None:
                raise _error("PreconditionFailed", "PutObject")
            if "IfMatch" in condition and (current is None or current[1] != condition["IfMatch"]):
                raise _error("PreconditionFailed", "PutObject")
            self.puts += 1
            etag = f'"{hashlib.md5(Body + str(self.puts).encode()).hexdigest()}"'
            self.objects[Key] = (bytes(Body), etag)

    def list_objects_v2(self, *, Bucket: str, Prefix: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        with self.lock:
            keys = sorted(k for k in self.objects if k.startswith(Prefix))
            sizes = {k: len(self.objects[k][0]) for k in keys}
        start = int(kwargs.get("ContinuationToken", 0))
        page = keys[start : start + self.page]
        answer: dict[str, Any] = {"Contents": [{"Key": k, "Size": sizes[k]} for k in page]}
        if start + self.page < len(keys):
            answer.update(IsTruncated=True, NextContinuationToken=str(start + self.page))
        return answer

    def delete_objects(self, *, Bucket: str, Delete: dict[str, Any]) -> None:  # noqa: N803
        with self.lock:
            for item in Delete["Objects"]:
                self.objects.pop(item["Key"], None)
