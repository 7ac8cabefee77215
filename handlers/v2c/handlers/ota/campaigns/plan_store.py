"""The stored rollout plan: the ordered targets in S3, in fixed-size chunks.

The dispatcher reads only the chunk(s) holding the next batch, so a
100,000-vehicle campaign never loads its whole target list into a Lambda.
Chunks are written before the campaign item (or before the planner's
write that makes a planning campaign `created`), and that write is what
makes the plan count: a creation or a planner that dies half-way leaves
only unreferenced chunks behind (overwritten by a retry with the same
campaign id, or collected by a lifecycle rule), never a half campaign.
The chunks of a plan are independent objects, so they are written several
at once: 100 chunks of a 100,000-target plan take a few round trips.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import TransientError
from v2c.handlers.ota.domain.plan import Target

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK: Final = 1_000
PREFIX: Final = "campaign-plans"
WRITERS: Final = 8  # chunk PUTs at once


class PlanStore:
    def __init__(
        self, client: S3Client, bucket: str, chunk: int = CHUNK, writers: int = WRITERS
    ) -> None:
        self._s3 = client
        self._bucket = bucket
        self._chunk = chunk
        self._writers = writers

    def _key(self, campaign_id: str, number: int) -> str:
        return f"{PREFIX}/{campaign_id}/{number:06d}.json"

    def write(self, campaign_id: str, targets: Sequence[Target]) -> int:
        """Store the plan; returns the number of chunks."""
        starts = range(0, len(targets), self._chunk)

        def put(start: int) -> None:
            rows = [t.to_json() for t in targets[start : start + self._chunk]]
            body = json.dumps(rows, separators=(",", ":")).encode()
            try:
                self._s3.put_object(
                    Bucket=self._bucket,
                    Key=self._key(campaign_id, start // self._chunk),
                    Body=body,
                    ContentType="application/json",
                )
            except (BotoCoreError, ClientError) as exc:
                raise TransientError(f"storing the campaign plan failed: {exc}") from exc

        if len(starts) <= 1:
            for start in starts:
                put(start)
        else:
            with ThreadPoolExecutor(min(self._writers, len(starts))) as pool:
                list(pool.map(put, starts))  # the first failure is raised here
        return len(starts)

    def read(self, campaign_id: str, start: int, stop: int) -> list[Target]:
        """Targets `[start, stop)` in plan order."""
        found: list[Target] = []
        number = start // self._chunk
        while start < stop:
            base = number * self._chunk
            try:
                body = self._s3.get_object(Bucket=self._bucket, Key=self._key(campaign_id, number))
                rows = json.loads(body["Body"].read())
            except (BotoCoreError, ClientError) as exc:
                raise TransientError(f"reading the campaign plan failed: {exc}") from exc
            take = rows[start - base : stop - base]
            found.extend(Target.from_json(r) for r in take)
            start = base + self._chunk
            number += 1
        return found
