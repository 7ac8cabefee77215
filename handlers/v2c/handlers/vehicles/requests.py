"""The inventory's request bodies, as the API documents them, and bulk rows from CSV or JSON.

The models state every rule a schema can (patterns, lengths, the known
regions), so the OpenAPI document says what the API accepts; the rules a
schema cannot state (the CSR's signature and key, the attributes' total
size) are `rules` and `csr`, applied to every row the same way whether it
came alone, in a JSON array or in a CSV file.

CSV (`text/csv`, UTF-8, a header row; at most `MAX_BULK_ROWS` rows):

    vin,model,region,year,hardware_id,make,installed_version,csr,color,fleet
    VIN-5V2CFLT0000000001,Accord,eu-west-1,2024,HW-1,Honda,1.0.0,"-----BEGIN ...",red,north

`vin` (or `vehicle_id`), `model`, `region`, `year` are required; `csr`,
`make`, `hardware_id`, `installed_version` are optional (empty: not given);
a CSR may keep its line breaks inside a quoted field or write them `\\n`.
Every other column is an attribute named by its header (empty cells are
left out).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from v2c.contract.errors import InvalidInput, V2CError
from v2c.handlers.api.json_limits import loads
from v2c.handlers.api.models import JsonInt, RequestModel
from v2c.handlers.ota.domain.validation import validate
from v2c.handlers.vehicles import rules
from v2c.handlers.vehicles.csr import MAX_CSR_CHARS, check_csr

MAX_BULK_ROWS: Final = 10_000
VIN_REGEX: Final = r"^VIN-[A-HJ-NPR-Z0-9]{17}$"
TEXT_REGEX: Final = r"^[^\x00-\x1f\x7f]*$"
NAME_REGEX: Final = r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"  # not blank
VERSION_REGEX: Final = r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$"
Region = Literal["us-east-1", "eu-west-1", "ap-southeast-2"]  # KNOWN_REGIONS (a test checks)
AttributeKey = Annotated[str, Field(pattern=rules.ATTRIBUTE_KEY.pattern)]
AttributeValue = Annotated[str, Field(max_length=rules.MAX_ATTRIBUTE_VALUE, pattern=TEXT_REGEX)]
Text = Annotated[str, Field(max_length=100, pattern=TEXT_REGEX)]
_CLOSED: Final = {"additionalProperties": False}  # every key must match the name pattern
Attributes = Annotated[
    dict[AttributeKey, AttributeValue],
    Field(max_length=rules.MAX_ATTRIBUTES, json_schema_extra=_CLOSED),
]
AttributeChanges = Annotated[
    dict[AttributeKey, AttributeValue | None],
    Field(max_length=rules.MAX_ATTRIBUTES, json_schema_extra=_CLOSED),
]
CSV_COLUMNS: Final = ("model", "region", "year", "make", "hardware_id", "installed_version", "csr")


class TooManyRows(InvalidInput):
    """More rows than one request may hold (the document's `maxItems`): split the file."""

    reason = "too_many_rows"


class VehicleIn(RequestModel):
    """One vehicle to register."""

    vehicle_id: str = Field(pattern=VIN_REGEX, description="VIN- and the 17-character VIN")
    model: str = Field(min_length=1, max_length=100, pattern=NAME_REGEX)
    region: Region = Field(description="a region the fleet operates in")
    year: JsonInt = Field(ge=rules.MIN_YEAR, le=rules.MAX_YEAR)
    make: Text | None = None
    hardware_id: Text | None = None
    installed_version: str | None = Field(
        default=None, pattern=VERSION_REGEX, description="default for a new vehicle: 1.0.0"
    )
    attributes: Attributes | None = Field(
        default=None, description=f"free-form; at most {rules.MAX_ATTRIBUTES_BYTES} bytes in all"
    )
    csr: str | None = Field(
        default=None,
        max_length=MAX_CSR_CHARS,
        description="PEM certificate signing request, CN = vehicle_id, EC P-256 or RSA 2048-4096; "
        "without one the vehicle is registered in the inventory only",
    )
    replace: bool = Field(
        default=False,
        description="a CSR with another key for an active vehicle revokes its certificate "
        "(otherwise 409)",
    )

    def registration(self, replace: bool | None = None) -> rules.Registration:
        """The checked registration (`InvalidField` for a rule a schema cannot state)."""
        csr = None if self.csr is None else check_csr(self.csr, self.vehicle_id)
        return rules.registration(
            self.vehicle_id,
            self.model,
            self.region,
            self.year,
            make=self.make,
            hardware_id=self.hardware_id,
            installed_version=self.installed_version,
            attributes=self.attributes,
            csr=csr,
            replace=self.replace if replace is None else replace,
        )


class VehiclePatch(RequestModel):
    """Attributes merged (a null value removes one); hardware id and make replaced."""

    attributes: AttributeChanges | None = None
    hardware_id: Text | None = None
    make: Text | None = None


class Decommission(RequestModel):
    reason: str = Field(default="", max_length=500, pattern=TEXT_REGEX)


@dataclass(frozen=True, slots=True)
class Row:
    """One bulk row: its 1-based number, and the registration or why not."""

    number: int
    vehicle_id: str
    registration: rules.Registration | None = None
    error: V2CError | None = None


def _row(number: int, data: Any, replace: bool) -> Row:
    vehicle_id = str(data.get("vehicle_id", "")) if isinstance(data, dict) else ""
    try:
        model = validate(VehicleIn, data, subject=f"row {number}")
        return Row(number, model.vehicle_id, model.registration(replace or None))
    except V2CError as exc:
        return Row(number, vehicle_id[:40], error=exc)


def json_rows(text: str, replace: bool) -> list[Row]:
    """Rows of a JSON array of `VehicleIn` objects."""
    try:
        data = loads(text, what="the request body")
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise InvalidInput("the body must be a JSON array of vehicles (or text/csv)")
    _bounded(len(data))
    return [_row(n, item, replace) for n, item in enumerate(data, start=1)]


def _bounded(count: int) -> None:
    if count == 0:
        raise InvalidInput("no vehicles in the body")
    if count > MAX_BULK_ROWS:
        raise TooManyRows(f"at most {MAX_BULK_ROWS} vehicles per request, not {count}")


def _csv_records(text: str) -> Iterator[tuple[int, Mapping[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\x00extra")
    if reader.fieldnames is None:
        raise InvalidInput("the CSV body has no header row")
    names = [n.strip() for n in reader.fieldnames]
    if len(set(names)) != len(names):
        raise InvalidInput("the CSV header names a column twice")
    if "vin" not in names and "vehicle_id" not in names:
        raise InvalidInput("the CSV header has no vin (or vehicle_id) column")
    reader.fieldnames = names
    try:
        for number, record in enumerate(reader, start=1):
            if number > MAX_BULK_ROWS:
                raise TooManyRows(f"at most {MAX_BULK_ROWS} vehicles per request")
            yield number, record
    except csv.Error as exc:
        raise InvalidInput(f"the CSV body is malformed: {exc}") from exc


def _csv_object(record: Mapping[str, Any]) -> dict[str, Any]:
    """A CSV record as a `VehicleIn` body: known columns, the rest attributes."""
    if record.get("\x00extra"):
        raise InvalidInput("more cells than the header has columns")
    cells = {k: (v or "").strip() for k, v in record.items() if k != "\x00extra" and v is not None}
    body: dict[str, Any] = {"vehicle_id": cells.pop("vin", "") or cells.pop("vehicle_id", "")}
    cells.pop("vehicle_id", None)
    for name in CSV_COLUMNS:
        value = cells.pop(name, "")
        if value:
            body[name] = value
    if "year" in body:
        try:
            body["year"] = int(body["year"])
        except ValueError:
            raise InvalidInput(f"year {body['year'][:10]!r} is not a whole number") from None
    if "csr" in body:
        body["csr"] = body["csr"].replace("\\n", "\n")
    attributes = {k: v for k, v in cells.items() if v}
    if attributes:
        body["attributes"] = attributes
    return body


def csv_rows(text: str, replace: bool) -> list[Row]:
    """Rows of a CSV body (see the module docstring)."""
    rows: list[Row] = []
    for number, record in _csv_records(text):
        try:
            body = _csv_object(record)
        except V2CError as exc:
            rows.append(Row(number, str(record.get("vin") or "")[:40], error=exc))
            continue
        rows.append(_row(number, body, replace))
    _bounded(len(rows))
    return rows


def parse_rows(body: str, content_type: str, replace: bool = False) -> list[Row]:
    """The rows of a bulk request body, by its content type."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ("text/csv", "application/csv"):
        return csv_rows(body, replace)
    if kind in ("application/json", ""):
        return json_rows(body, replace)
    raise InvalidInput(f"send application/json or text/csv, not {kind[:60]}")
