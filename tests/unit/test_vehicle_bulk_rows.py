"""Bulk registration rows from CSV or JSON: per-row results, bounded, never all-or-nothing."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.certificate_renewal import build_csr
from v2c.contract.errors import InvalidInput
from v2c.contract.topics import KNOWN_REGIONS
from v2c.handlers.vehicles.requests import MAX_BULK_ROWS, Region, TooManyRows, parse_rows

VIN = "VIN-5V2CFLT0000000001"
VIN2 = "VIN-5V2CFLT0000000002"


def test_the_documented_regions_are_the_fleets() -> None:
    assert Region.__args__ == KNOWN_REGIONS  # type: ignore[attr-defined]


def test_csv_rows_take_known_columns_and_every_other_column_as_an_attribute() -> None:
    pem = build_csr(ec.generate_private_key(ec.SECP256R1()), VIN)
    escaped = pem.strip().replace("\n", "\\n")
    text = (
        "vin,model,region,year,hardware_id,csr,color,fleet\n"
        f'{VIN},Accord,eu-west-1,2024,HW-1,"{escaped}",red,\n'
        f"{VIN2},Civic,us-east-1,2023,,,,north\n"
    )
    first, second = parse_rows(text, "text/csv; charset=utf-8")
    assert first.number == 1
    assert first.registration is not None
    assert first.registration.attributes == {"color": "red"}  # the empty cell is left out
    assert first.registration.hardware_id == "HW-1"
    assert first.registration.csr is not None
    assert first.registration.csr.common_name == VIN
    assert second.registration is not None
    assert second.registration.csr is None  # inventory only
    assert second.registration.hardware_id is None  # empty: not given, keeps what is stored
    assert second.registration.attributes == {"fleet": "north"}


def test_a_bad_row_fails_alone_with_its_reason() -> None:
    text = (
        "vin,model,region,year\n"
        f"{VIN},Accord,eu-west-1,2024\n"
        "VIN-123,Accord,eu-west-1,2024\n"
        f"{VIN2},Accord,mars-1,twenty\n"
        f"{VIN2},Accord,eu-west-1,2024,extra\n"
    )
    rows = parse_rows(text, "text/csv")
    assert [r.error is None for r in rows] == [True, False, False, False]
    assert "vehicle_id" in rows[1].error.detail  # type: ignore[union-attr]
    assert "not a whole number" in rows[2].error.detail  # type: ignore[union-attr]
    assert "more cells" in rows[3].error.detail  # type: ignore[union-attr]
    assert [r.number for r in rows] == [1, 2, 3, 4]


def test_json_rows_are_the_single_registrations_body() -> None:
    body = [
        {
            "vehicle_id": VIN,
            "model": "Accord",
            "region": "eu-west-1",
            "year": 2024,
            "replace": True,
        },
        {"vehicle_id": VIN2, "model": "Accord", "region": "eu-west-1", "year": 2024, "x": 1},
        "not an object",
    ]
    rows = parse_rows(json.dumps(body), "application/json")
    assert rows[0].registration is not None
    assert rows[0].registration.replace
    assert rows[1].error is not None  # an unknown field: refused, not dropped
    assert rows[2].error is not None
    replaced = parse_rows(json.dumps(body[:1]), "application/json", replace=True)
    assert replaced[0].registration is not None
    assert replaced[0].registration.replace


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        ("", "text/csv", InvalidInput),
        ("model,region\nA,eu-west-1\n", "text/csv", InvalidInput),
        ("vin,vin\n", "text/csv", InvalidInput),
        ("vin,model,region,year\n", "text/csv", InvalidInput),  # no rows
        ("{}", "application/json", InvalidInput),
        ("[]", "application/json", InvalidInput),
        ("not json", "application/json", InvalidInput),
        ("a,b", "application/xml", InvalidInput),
    ],
)
def test_a_body_that_holds_no_rows_is_refused_whole(
    body: str, content_type: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        parse_rows(body, content_type)


def test_more_rows_than_the_bound_are_refused() -> None:
    line = f"{VIN},Accord,eu-west-1,2024\n"
    with pytest.raises(TooManyRows):
        parse_rows("vin,model,region,year\n" + line * (MAX_BULK_ROWS + 1), "text/csv")
    with pytest.raises(TooManyRows):
        parse_rows(json.dumps([{}] * (MAX_BULK_ROWS + 1)), "application/json")
