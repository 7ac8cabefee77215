"""The fleet index as bytes and keys, and how changes fold into it: pure.

A shard is one model's vehicles whose VIN hashes to it (`shard_of`), stored
as zstd-compressed columnar JSON:

    {"format": "v2c-fleet-index/1", "model": "Accord", "shard": 3,
     "vehicle_id": [...sorted...], "stamp_base": s0, "stamp": [s - s0, ...],
     "year": [2024, ...], "region": [["eu-west-1", ...], [0, 1, 0, ...]], ...}

Text columns (region, make, hardware_id, installed_version, groups) are
dictionary-coded, since a fleet has few of each: a row costs its VIN, a
stamp and a few small integers, so 100,000 vehicles fit in a few hundred KB.
Decommissioned vehicles are listed sparsely (`"retired": [row positions]`,
absent when none): their rows stay, so that an older registration folded
late cannot bring one back, but no campaign selects them (`select`).

Every row carries the stamp (epoch ms) of the registry change it reflects,
and a change applies only over an older one: folding the same changes twice,
or in another order, gives the same index, so concurrent writers, retries
and a rebuild running beside registrations cannot put an older value back.

Changes not yet folded into a shard are delta objects. A registration's rows
travel in a delta body (when its shard write kept losing races); a vehicle's
new installed version, the change the status path makes most, is encoded in
the delta's key alone (`patch_key`), so reading the overlay costs one LIST
per 1,000 changes and no GET.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote

import zstandard

from v2c.contract.errors import TransientError

FORMAT: Final = "v2c-fleet-index/1"
SHARDS: Final = 16
# A shard of a million vehicles is ~40 MB of JSON; refuse more than that.
MAX_SHARD_BYTES: Final = 256 * 1024 * 1024
MAX_KEY_VERSION: Final = 256  # longer versions travel in a delta body
_LEVEL: Final = 3  # zstd: ~100 MB/s on this kind of machine, ratio close to level 9


class IndexUnreadable(TransientError):
    """An index object is not what this code writes: rebuild the index
    (`FleetIndex.rebuild`); planning retries after that."""


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One vehicle as the index keeps it: what a target filter reads."""

    vehicle_id: str
    model: str
    region: str
    year: int = 0
    make: str = ""
    hardware_id: str = ""
    installed_version: str = ""
    groups: tuple[str, ...] = ()  # sorted
    stamp: int = 0  # epoch ms of the registry change this row reflects
    retired: bool = False  # decommissioned: kept, never targeted


@dataclass(frozen=True, slots=True)
class Patch:
    """A vehicle's installed version changed (the status path's change)."""

    vehicle_id: str
    installed_version: str
    stamp: int


Change = IndexRow | Patch


def shard_of(vehicle_id: str, shards: int = SHARDS) -> int:
    """The shard a vehicle lives in: stable across processes and releases."""
    return zlib.crc32(vehicle_id.encode()) % shards


def model_token(model: str) -> str:
    """A model name as one S3 key segment (reversible; `/` never appears)."""
    return "m=" + quote(model, safe="")


def model_of_token(token: str) -> str:
    if not token.startswith("m="):
        raise IndexUnreadable(f"not a fleet index model segment: {token!r}")
    return unquote(token[2:])


@dataclass(slots=True)
class Columns:
    """One model's rows (a shard, or every shard of it) as parallel lists.

    Columnar because a campaign reads 100,000 rows and keeps a few: the
    filter runs once per distinct attribute combination (`select`), and
    only the rows it keeps become objects."""

    model: str
    vehicle_id: list[str] = field(default_factory=list)
    stamp: list[int] = field(default_factory=list)
    region: list[str] = field(default_factory=list)
    year: list[int] = field(default_factory=list)
    make: list[str] = field(default_factory=list)
    hardware_id: list[str] = field(default_factory=list)
    installed_version: list[str] = field(default_factory=list)
    groups: list[tuple[str, ...]] = field(default_factory=list)
    retired: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.retired) < len(self.vehicle_id):  # built from columns without it
            self.retired += [False] * (len(self.vehicle_id) - len(self.retired))

    def __len__(self) -> int:
        return len(self.vehicle_id)

    def row(self, i: int) -> IndexRow:
        return IndexRow(
            self.vehicle_id[i],
            self.model,
            self.region[i],
            self.year[i],
            self.make[i],
            self.hardware_id[i],
            self.installed_version[i],
            self.groups[i],
            self.stamp[i],
            self.retired[i],
        )

    def rows(self) -> Iterator[IndexRow]:
        return (self.row(i) for i in range(len(self)))

    def column(self, attribute: str) -> Sequence[object]:
        """A filter attribute's values (`vin` is the vehicle id); `model` is
        the same for every row and is not a column."""
        if attribute == "vin":
            return self.vehicle_id
        values: Sequence[object] = getattr(self, attribute)
        return values

    def extend(self, other: Columns) -> None:
        self.vehicle_id += other.vehicle_id
        self.stamp += other.stamp
        self.region += other.region
        self.year += other.year
        self.make += other.make
        self.hardware_id += other.hardware_id
        self.installed_version += other.installed_version
        self.groups += other.groups
        self.retired += other.retired

    def _set(self, i: int, row: IndexRow) -> None:
        self.stamp[i] = row.stamp
        self.region[i] = row.region
        self.year[i] = row.year
        self.make[i] = row.make
        self.hardware_id[i] = row.hardware_id
        self.installed_version[i] = row.installed_version
        self.groups[i] = row.groups
        self.retired[i] = row.retired

    def _append(self, row: IndexRow) -> None:
        self.vehicle_id.append(row.vehicle_id)
        self.stamp.append(row.stamp)
        self.region.append(row.region)
        self.year.append(row.year)
        self.make.append(row.make)
        self.hardware_id.append(row.hardware_id)
        self.installed_version.append(row.installed_version)
        self.groups.append(row.groups)
        self.retired.append(row.retired)

    def apply(self, changes: Iterable[Change]) -> int:
        """Fold changes in (rows of this model only), oldest first: a row
        replaces an older one or is added; a patch moves an older row's
        installed version (a patch for a vehicle the index does not hold is
        dropped: without its row nothing could target it). Returns how many
        changes took effect."""
        position = {vid: i for i, vid in enumerate(self.vehicle_id)}
        applied = 0
        for change in sorted(changes, key=lambda c: c.stamp):
            at = position.get(change.vehicle_id)
            if isinstance(change, IndexRow):
                if at is None:
                    position[change.vehicle_id] = len(self.vehicle_id)
                    self._append(change)
                elif change.stamp >= self.stamp[at]:
                    self._set(at, change)
                else:
                    continue
            elif at is not None and change.stamp >= self.stamp[at]:
                self.installed_version[at] = change.installed_version
                self.stamp[at] = change.stamp
            else:
                continue
            applied += 1
        return applied

    def keep(self, wanted: Iterable[int]) -> Columns:
        """The rows at these positions, as a new `Columns`."""
        kept = Columns(self.model)
        for i in wanted:
            kept._append(self.row(i))
        return kept


def _coded(values: Sequence[Hashable]) -> list[Any]:
    table: dict[Hashable, int] = {}
    codes = [table.setdefault(v, len(table)) for v in values]
    return [list(table), codes]


def _uncoded(column: Any, n: int, name: str) -> list[Any]:
    try:
        values, codes = column
        decoded = [values[c] for c in codes]
    except (TypeError, ValueError, IndexError) as exc:
        raise IndexUnreadable(f"fleet index column {name} is malformed: {exc}") from exc
    if len(decoded) != n:
        raise IndexUnreadable(f"fleet index column {name} has {len(decoded)} rows, not {n}")
    return decoded


def encode_shard(columns: Columns, shard: int) -> bytes:
    """A shard's object body: rows sorted by vehicle id (stable bytes for
    the same rows), zstd-compressed."""
    order = sorted(range(len(columns)), key=columns.vehicle_id.__getitem__)
    stamps = [columns.stamp[i] for i in order]
    base = min(stamps, default=0)
    doc = {
        "format": FORMAT,
        "model": columns.model,
        "shard": shard,
        "rows": len(order),
        "vehicle_id": [columns.vehicle_id[i] for i in order],
        "stamp_base": base,
        "stamp": [s - base for s in stamps],
        "year": [columns.year[i] for i in order],
        "region": _coded([columns.region[i] for i in order]),
        "make": _coded([columns.make[i] for i in order]),
        "hardware_id": _coded([columns.hardware_id[i] for i in order]),
        "installed_version": _coded([columns.installed_version[i] for i in order]),
        "groups": _coded([columns.groups[i] for i in order]),
    }
    retired = [n for n, i in enumerate(order) if columns.retired[i]]
    if retired:
        doc["retired"] = retired
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return zstandard.ZstdCompressor(level=_LEVEL).compress(raw)


def decode_shard(body: bytes, model: str) -> Columns:
    """A shard's rows; `IndexUnreadable` if the body is not one of ours."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_SHARD_BYTES)
        doc = json.loads(raw)
    except (zstandard.ZstdError, ValueError) as exc:
        raise IndexUnreadable(f"a fleet index shard of {model!r} is unreadable: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("model") != model:
        raise IndexUnreadable(f"a fleet index shard of {model!r} has another format or model")
    try:
        ids = [str(v) for v in doc["vehicle_id"]]
        n = len(ids)
        base = int(doc["stamp_base"])
        stamps = [base + int(s) for s in doc["stamp"]]
        years = [int(y) for y in doc["year"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexUnreadable(f"a fleet index shard of {model!r} is malformed: {exc}") from exc
    if len(stamps) != n or len(years) != n:
        raise IndexUnreadable(f"a fleet index shard of {model!r} has columns of other lengths")
    groups = _uncoded(doc.get("groups"), n, "groups")
    flags = [False] * n
    try:
        for position in doc.get("retired", []):
            flags[int(position)] = True
    except (TypeError, ValueError, IndexError) as exc:
        raise IndexUnreadable(f"a fleet index shard of {model!r} has bad retired rows") from exc
    return Columns(
        model,
        ids,
        stamps,
        _uncoded(doc.get("region"), n, "region"),
        years,
        _uncoded(doc.get("make"), n, "make"),
        _uncoded(doc.get("hardware_id"), n, "hardware_id"),
        _uncoded(doc.get("installed_version"), n, "installed_version"),
        [tuple(g) for g in groups],
        flags,
    )


# -- deltas ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeltaName:
    """What a delta object's key says: when, and either the patch itself or
    that the changes are in the body."""

    stamp: int
    patch: Patch | None  # None: read the body


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def patch_key(patch: Patch) -> str | None:
    """The key (below the model's delta prefix) that *is* this patch, or
    None when the version is too long for a key (write a body instead).
    `.` separates: it is in neither a VIN nor URL-safe base64."""
    if len(patch.installed_version) > MAX_KEY_VERSION:
        return None
    return f"{patch.stamp:013d}.p.{patch.vehicle_id}.{_b64(patch.installed_version)}"


def body_key(stamp: int, unique: str) -> str:
    return f"{stamp:013d}.b.{unique}"


def parse_delta_key(name: str) -> DeltaName:
    """The delta a key names; `IndexUnreadable` for a key this code did not write."""
    parts = name.split(".")
    try:
        stamp = int(parts[0])
        if parts[1] == "b" and len(parts) == 3:
            return DeltaName(stamp, None)
        if parts[1] == "p" and len(parts) == 4:
            return DeltaName(stamp, Patch(parts[2], _unb64(parts[3]), stamp))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise IndexUnreadable(f"not a fleet index delta: {name!r}")


def _row_json(row: IndexRow) -> list[Any]:
    return [
        row.vehicle_id,
        row.region,
        row.year,
        row.make,
        row.hardware_id,
        row.installed_version,
        list(row.groups),
        row.stamp,
        *([1] if row.retired else []),
    ]


def encode_delta(rows: Sequence[IndexRow], patches: Sequence[Patch] = ()) -> bytes:
    """A delta body: full rows (registrations) and patches (versions)."""
    doc = {
        "format": FORMAT,
        "rows": [_row_json(r) for r in rows],
        "patches": [[p.vehicle_id, p.installed_version, p.stamp] for p in patches],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _row_of(values: Sequence[Any], model: str) -> IndexRow:
    """A delta body's row; a ninth value marks a retired (decommissioned) one."""
    v, r, y, m, h, i, g, s, *rest = values
    if len(rest) > 1:
        raise ValueError("a row with too many values")
    retired = bool(rest[0]) if rest else False
    return IndexRow(
        str(v), model, str(r), int(y), str(m), str(h), str(i), tuple(g), int(s), retired
    )


def decode_delta(body: bytes, model: str) -> list[Change]:
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("another format")
        changes: list[Change] = [_row_of(row, model) for row in doc["rows"]]
        changes += [Patch(str(v), str(i), int(s)) for v, i, s in doc["patches"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexUnreadable(f"a fleet index delta of {model!r} is unreadable: {exc}") from exc
    return changes


def fold_rebuild(
    current: Columns,
    scanned: Sequence[IndexRow],
    started_ms: int,
    table_stamps: Mapping[str, int],
) -> Columns:
    """A shard rebuilt from a table scan that started at `started_ms`.

    `scanned` are the scan's rows of this shard, `table_stamps` the stamp of
    every vehicle the scan found (in any model). The shard becomes the
    scanned rows, plus the rows it held that are newer than what the scan
    found of the same vehicle (changed while the scan ran), or that the scan
    did not find at all and changed after it started (registered meanwhile).
    The rest is dropped: the table no longer has those vehicles there (one
    that moved to another model, say)."""
    rebuilt = Columns(current.model)
    rebuilt.apply(scanned)
    kept = []
    for i, vehicle_id in enumerate(current.vehicle_id):
        found = table_stamps.get(vehicle_id)
        stamp = current.stamp[i]
        if (found is not None and stamp > found) or (found is None and stamp >= started_ms):
            kept.append(i)
    rebuilt.apply(current.row(i) for i in kept)
    return rebuilt
