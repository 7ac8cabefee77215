"""The fleet index in S3: read in a few requests, written without losing a change.

Layout, in the bucket of the campaign plans (the firmware bucket):

    fleet-index/v1/meta.json                        written by a rebuild
    fleet-index/v1/m/<model>/b/<shard>.json.zst     16 base shards per model (`codec`)
    fleet-index/v1/m/<model>/d/<stamp>.p.<vin>.<v>  a new installed version: the key is all
    fleet-index/v1/m/<model>/d/<stamp>.b.<uuid>     changes in a body (e.g. a busy shard's rows)

Reading a model is one LIST of its prefix (shards and deltas at once), then
its shards and delta bodies in parallel: 100,000 vehicles cost ~20 requests,
not 100,000 items read a 1-MB page at a time.

Writing a shard is read, fold, and a conditional PUT (`If-Match` the ETag
read; `If-None-Match: *` for a new shard): a writer that lost the race reads
again and folds again, so registrations, compactions and a rebuild running
at once never overwrite each other. Folding is by stamp (`codec`), so a
change folded twice or late changes nothing.

Compaction folds a model's deltas into its shards and deletes them only
after every shard write succeeded; a reader LISTs the deltas before it GETs
a shard, so each change is in what it read: in a delta it listed, or in a
shard written before that delta was deleted (S3 reads are strongly
consistent). A delta body that vanished between the LIST and its GET was
compacted meanwhile: the read starts over.

Consistency, as AWS IoT fleet indexing's: eventual. A registry write
reaches the index in the same call (`FleetRegistry`), but the two are not
one transaction: a process that dies between them, or an S3 outage, leaves
the index behind the table until a `rebuild`. A stale installed version
cannot cause a wrong update: eligibility is checked again by the update
agent (it refuses a package for another model or not newer than what it
runs) and a vehicle the index thinks up to date is left out, never updated.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import TransientError
from v2c.handlers.aws_errors import S3_MISSING, error_code
from v2c.handlers.aws_errors import translate as transient
from v2c.handlers.ota.fleet_index.codec import (
    SHARDS,
    Change,
    Columns,
    DeltaName,
    IndexRow,
    IndexUnreadable,
    Patch,
    body_key,
    decode_delta,
    decode_shard,
    encode_delta,
    encode_shard,
    fold_rebuild,
    model_of_token,
    model_token,
    parse_delta_key,
    patch_key,
    shard_of,
)
from v2c.handlers.ota.fleet_index.select import FleetSnapshot

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

PREFIX: Final = "fleet-index/v1"
DELTA_BYTES: Final = 64  # what a delta counts for in `size` (a patch has no body)
_LOST_RACE: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_READ_ATTEMPTS: Final = 3
_WORKERS: Final = 8  # S3 requests at once, shared by every index of the process
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK: Final = threading.Lock()
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Delta:
    key: str
    name: DeltaName


@dataclass
class ModelListing:
    shards: dict[int, tuple[str, int]] = field(default_factory=dict)  # shard -> (key, bytes)
    deltas: list[Delta] = field(default_factory=list)  # oldest first

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.shards.values()) + DELTA_BYTES * len(self.deltas)


class _Vanished(Exception):
    """A listed delta body was compacted away before it was read."""


def _pool() -> ThreadPoolExecutor:
    """One pool per process (a Lambda container), not one per index: the
    services are built per test, per container and per tool."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_WORKERS, thread_name_prefix="fleet-index")
        return _POOL


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FleetIndex:
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        prefix: str = PREFIX,
        shards: int = SHARDS,
        cas_attempts: int = 6,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._s3 = client
        self._bucket = bucket
        self._prefix = prefix
        self._shards = shards
        self._attempts = cas_attempts
        self._clock = clock

    # -- keys and plumbing -----------------------------------------------------

    def _model_prefix(self, model: str) -> str:
        return f"{self._prefix}/m/{model_token(model)}/"

    def _shard_key(self, model: str, shard: int) -> str:
        return f"{self._model_prefix(model)}b/{shard:02d}.json.zst"

    def _delta_key(self, model: str, name: str) -> str:
        return f"{self._model_prefix(model)}d/{name}"

    @property
    def _meta_key(self) -> str:
        return f"{self._prefix}/meta.json"

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`fn` over `items`, several S3 requests at once (one alone: inline)."""
        if len(items) <= 1:
            return [fn(i) for i in items]
        return list(_pool().map(fn, items))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """The object's body and ETag; None if there is none."""
        try:
            answer = self._s3.get_object(Bucket=self._bucket, Key=key)
            return answer["Body"].read(), str(answer["ETag"])
        except ClientError as exc:
            if error_code(exc) in S3_MISSING:
                return None
            raise transient("reading the fleet index", exc) from exc
        except BotoCoreError as exc:
            raise transient("reading the fleet index", exc) from exc

    def _put(self, key: str, body: bytes, **condition: str) -> bool:
        """Write the object; False when its condition lost a race."""
        try:
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, **condition)  # type: ignore[arg-type]
        except ClientError as exc:
            if condition and error_code(exc) in _LOST_RACE:
                return False
            raise transient("writing the fleet index", exc) from exc
        except BotoCoreError as exc:
            raise transient("writing the fleet index", exc) from exc
        return True

    # -- listing and reading ---------------------------------------------------

    def listing(self, models: Iterable[str] | None = None) -> dict[str, ModelListing]:
        """What the index holds for `models` (None: every model), from LISTs alone."""
        prefixes = (
            [f"{self._prefix}/m/"]
            if models is None
            else [self._model_prefix(m) for m in sorted(set(models))]
        )
        found: dict[str, ModelListing] = {}
        for prefix in prefixes:
            for key, size in self._list(prefix):
                try:
                    self._note(found, key, size)
                except (IndexUnreadable, ValueError):  # not ours: never fail every campaign
                    logger.warning("ignoring an object in the fleet index: %s", key)
        return found

    def _list(self, prefix: str) -> Iterator[tuple[str, int]]:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        while True:
            try:
                answer = self._s3.list_objects_v2(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise transient("listing the fleet index", exc) from exc
            for item in answer.get("Contents", []):
                yield str(item["Key"]), int(item.get("Size", 0))
            if not answer.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = answer["NextContinuationToken"]

    def _note(self, found: dict[str, ModelListing], key: str, size: int) -> None:
        token, kind, name = key[len(self._prefix) + 3 :].split("/", 2)
        listing = found.setdefault(model_of_token(token), ModelListing())
        if kind == "b":
            listing.shards[int(name.split(".", 1)[0])] = (key, size)
        elif kind == "d":
            listing.deltas.append(Delta(key, parse_delta_key(name)))
        else:
            raise IndexUnreadable(f"not a fleet index object: {key!r}")

    def size(self, models: Iterable[str] | None = None) -> int:
        """Bytes a read of `models` would fetch (a patch counts `DELTA_BYTES`)."""
        return sum(m.bytes for m in self.listing(models).values())

    def read(self, models: Iterable[str] | None = None) -> FleetSnapshot:
        """The index for `models` (None: every model), overlay folded in."""
        wanted = None if models is None else frozenset(models)
        for _ in range(_READ_ATTEMPTS):
            try:
                return self._read(self.listing(wanted))
            except _Vanished:
                continue  # compacted meanwhile: the shards now hold it
        raise TransientError("the fleet index kept changing while it was read; try again")

    def _read(self, listing: Mapping[str, ModelListing]) -> FleetSnapshot:
        jobs: list[tuple[str, str, bool]] = []  # (model, key, is_shard)
        for model, found in listing.items():
            jobs += [(model, key, True) for key, _ in found.shards.values()]
            jobs += [(model, d.key, False) for d in found.deltas if d.name.patch is None]

        def load(job: tuple[str, str, bool]) -> Columns | list[Change]:
            model, key, is_shard = job
            got = self._get(key)
            if got is None:
                if is_shard:
                    return Columns(model)  # a shard is never deleted; a rebuild may empty one
                raise _Vanished(key)
            return decode_shard(got[0], model) if is_shard else decode_delta(got[0], model)

        loaded = self._map(load, jobs)
        merged = {model: Columns(model) for model in listing}
        changes: dict[str, list[Change]] = defaultdict(list)
        for (model, _, _), part in zip(jobs, loaded, strict=True):
            if isinstance(part, Columns):
                merged[model].extend(part)
            else:
                changes[model] += part
        for model, found in listing.items():
            changes[model] += [d.name.patch for d in found.deltas if d.name.patch is not None]
            if changes[model]:
                merged[model].apply(changes[model])
        return FleetSnapshot(merged)

    # -- writing -----------------------------------------------------------------

    def _fold(self, model: str, shard: int, fold: Callable[[Columns], Columns | None]) -> bool:
        """Read the shard, `fold` it (None: nothing to write), write it back
        if no one else wrote it meanwhile; False after `cas_attempts` lost races."""
        key = self._shard_key(model, shard)
        for _ in range(self._attempts):
            got = self._get(key)
            current = decode_shard(got[0], model) if got is not None else Columns(model)
            folded = fold(current)
            if folded is None:
                return True
            condition = {"IfMatch": got[1]} if got is not None else {"IfNoneMatch": "*"}
            if self._put(key, encode_shard(folded, shard), **condition):
                return True
        return False

    @staticmethod
    def _applying(changes: Sequence[Change]) -> Callable[[Columns], Columns | None]:
        def fold(columns: Columns) -> Columns | None:
            return columns if columns.apply(changes) else None

        return fold

    def merge(self, rows: Sequence[IndexRow]) -> int:
        """Fold registered vehicles into their shards (one conditional write
        per shard touched); rows of a shard that kept losing races go to a
        delta body instead. Returns the shards written."""
        by_shard: dict[tuple[str, int], list[IndexRow]] = defaultdict(list)
        for row in rows:
            by_shard[(row.model, shard_of(row.vehicle_id, self._shards))].append(row)
        parts = sorted(by_shard.items())
        done = self._map(lambda part: self._fold(*part[0], self._applying(part[1])), parts)
        for ((model, _), part_rows), ok in zip(parts, done, strict=True):
            if not ok:
                logger.warning("fleet index shard busy: registration kept as a delta")
                self._put_body(model, part_rows, ())
        return len(parts)

    def _put_body(self, model: str, rows: Sequence[IndexRow], patches: Sequence[Patch]) -> None:
        stamp = max([r.stamp for r in rows] + [p.stamp for p in patches], default=self._now_ms())
        name = body_key(stamp, uuid.uuid4().hex)
        self._put(self._delta_key(model, name), encode_delta(rows, patches))

    def patch(self, patches: Mapping[str, Sequence[Patch]]) -> None:
        """Record new installed versions, by model: one delta object per
        model (its key alone, for a single change)."""
        for model, changes in patches.items():
            if not changes:
                continue
            name = patch_key(changes[0]) if len(changes) == 1 else None
            if name is not None:
                self._put(self._delta_key(model, name), b"")
            else:
                self._put_body(model, (), changes)

    def _delta_changes(self, model: str, deltas: Sequence[Delta]) -> tuple[list[Change], list[str]]:
        """The changes of `deltas` and the keys they came from (a body that
        vanished was compacted by someone else: its keys are not returned)."""
        bodies = [d for d in deltas if d.name.patch is None]
        loaded = self._map(lambda d: self._get(d.key), bodies)
        changes: list[Change] = [d.name.patch for d in deltas if d.name.patch is not None]
        keys = [d.key for d in deltas if d.name.patch is not None]
        for delta, got in zip(bodies, loaded, strict=True):
            if got is not None:
                changes += decode_delta(got[0], model)
                keys.append(delta.key)
        return changes, keys

    def compact(
        self, models: Iterable[str] | None = None, *, min_deltas: int = 1, min_age_ms: int = 0
    ) -> int:
        """Fold the deltas of each model that has at least `min_deltas` of
        them, or one older than `min_age_ms`, into its shards; then delete
        them. Returns how many deltas were folded."""
        now = self._now_ms()
        folded = 0
        for model, found in sorted(self.listing(models).items()):
            if not found.deltas:
                continue
            oldest = min(d.name.stamp for d in found.deltas)
            if len(found.deltas) < min_deltas and now - oldest < min_age_ms:
                continue
            changes, keys = self._delta_changes(model, found.deltas)
            by_shard: dict[int, list[Change]] = defaultdict(list)
            for change in changes:
                by_shard[shard_of(change.vehicle_id, self._shards)].append(change)
            parts = [(model, shard, part) for shard, part in sorted(by_shard.items())]
            done = self._map(lambda p: self._fold(p[0], p[1], self._applying(p[2])), parts)
            if not all(done):
                logger.warning("fleet index compaction of %s lost races; next pass retries", model)
                continue
            self._delete(keys)
            folded += len(keys)
        return folded

    def _delete(self, keys: Sequence[str]) -> None:
        for chunk in _chunks(keys, 1000):
            try:
                self._s3.delete_objects(
                    Bucket=self._bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            except (BotoCoreError, ClientError) as exc:
                raise transient("compacting the fleet index", exc) from exc

    # -- rebuilding ---------------------------------------------------------------

    def is_built(self) -> bool:
        try:
            self._s3.head_object(Bucket=self._bucket, Key=self._meta_key)
        except ClientError as exc:
            if error_code(exc) in S3_MISSING:
                return False
            raise transient("reading the fleet index", exc) from exc
        except BotoCoreError as exc:
            raise transient("reading the fleet index", exc) from exc
        return True

    def rebuild(self, rows: Iterable[IndexRow], started_ms: int) -> int:
        """Make the index what a scan of the registry table (begun at
        `started_ms`) found, keeping changes newer than the scan; mark the
        index built. Returns the rows scanned."""
        scanned: dict[tuple[str, int], list[IndexRow]] = defaultdict(list)
        stamps: dict[str, int] = {}
        for row in rows:
            scanned[(row.model, shard_of(row.vehicle_id, self._shards))].append(row)
            stamps[row.vehicle_id] = row.stamp
        present = {
            (model, shard) for model, found in self.listing().items() for shard in found.shards
        }
        parts = sorted(present | set(scanned))

        def rebuilt(part: tuple[str, int]) -> bool:
            model, shard = part
            rows_now = scanned.get(part, [])
            return self._fold(model, shard, lambda c: fold_rebuild(c, rows_now, started_ms, stamps))

        if not all(self._map(rebuilt, parts)):
            raise TransientError("the fleet index rebuild kept losing races; try again")
        total = sum(len(r) for r in scanned.values())
        self.mark_built(started_ms, total)
        return total

    def mark_built(self, built_at_ms: int, rows: int = 0) -> None:
        """Say the index holds the registry (a rebuild did it, or the registry
        table was created empty together with it: `v2c aws bootstrap`)."""
        meta = {"format": "v2c-fleet-index/1", "built_at_ms": built_at_ms, "rows": rows}
        self._put(self._meta_key, json.dumps(meta).encode())
