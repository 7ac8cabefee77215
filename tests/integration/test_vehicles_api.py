"""The vehicle inventory over HTTP: the adapter, the resolver and the production services on moto.

Certificates come from a CA of the test's own (`moto_vehicles`), the same
local issuer the stack's API uses, without a broker (admission is
`test_vehicle_onboarding_stack`'s). `device.deleted` is consumed by the OTA
side in process, as in the local stack (`vehicle_events`).
"""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from api_support import API_KEY, AUTH_HEADERS, PRINCIPAL, VIEWER_HEADERS
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from ota_support import vin
from typer.testing import CliRunner

from v2c.contract.certificate_renewal import build_csr
from v2c.handlers.api import ApiServices
from v2c.handlers.ota.config import OtaServices
from v2c.infra.cli.main import app as cli
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.infra.local.vehicle_service import InProcessEvents
from v2c.infra.pki.authority import common_name, load_ca

BASE = "/api/v1/vehicles"
OTA = "/api/v1/ota"


@pytest.fixture
def api_services(moto_api_services: ApiServices) -> ApiServices:
    return moto_api_services


def call(
    server: ApiHttpServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    return requests.request(
        method,
        path if path.startswith("http") else f"{server.base_url}{path}",
        json=body,
        headers=AUTH_HEADERS if headers is None else headers,
        timeout=60,
        **kwargs,
    )


def vehicle(number: int, **fields: Any) -> dict[str, Any]:
    body = {"vehicle_id": vin(number), "model": "Accord", "region": "eu-west-1", "year": 2024}
    body.update(fields)
    return body


def test_register_with_a_csr_issues_the_certificate_once_per_key(
    api_server: ApiHttpServer, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = vehicle(1, csr=build_csr(key, vin(1)), attributes={"color": "red"})
    created = call(api_server, "POST", BASE, body)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"{BASE}/{vin(1)}"
    answer = created.json()
    assert (answer["outcome"], answer["status"], answer["registered_by"]) == (
        "created", "active", PRINCIPAL
    )  # fmt: skip
    assert answer["installed_version"] == "1.0.0"
    certificate = x509.load_pem_x509_certificate(answer["certificate"]["pem"].encode())
    certificate.verify_directly_issued_by(load_ca(tmp_path / "vehicle-pki").certificate)
    assert certificate.public_key() == key.public_key()
    assert common_name(certificate) == vin(1)

    # the same key again: the same certificate, nothing written
    again = call(api_server, "POST", BASE, body)
    assert again.status_code == 200
    assert again.json()["outcome"] == "unchanged"
    assert again.json()["certificate"] == answer["certificate"]
    # another key is refused, unless it says it replaces the vehicle's identity
    other = ec.generate_private_key(ec.SECP256R1())
    taken = call(api_server, "POST", BASE, vehicle(1, csr=build_csr(other, vin(1))))
    assert (taken.status_code, taken.json()["reason"]) == (409, "conflict")
    replaced = call(
        api_server, "POST", BASE, vehicle(1, csr=build_csr(other, vin(1)), replace=True)
    )
    assert replaced.status_code == 201
    assert replaced.json()["outcome"] == "replaced"
    new_id = replaced.json()["certificate"]["certificate_id"]
    assert new_id != answer["certificate"]["certificate_id"]
    shown = call(api_server, "GET", f"{BASE}/{vin(1)}").json()
    assert shown["certificate"]["certificate_id"] == new_id
    assert shown["certificate"]["pem"] is None  # certificates travel in registration answers
    assert shown["attributes"] == {"color": "red"}
    # a CSR for another vehicle is refused before anything is issued
    wrong = call(api_server, "POST", BASE, vehicle(2, csr=build_csr(other, vin(1))))
    assert wrong.status_code == 400
    assert "common name" in wrong.json()["detail"]
    assert call(api_server, "GET", f"{BASE}/{vin(2)}").status_code == 404


def test_list_and_search_page_with_cursors_and_link_headers(api_server: ApiHttpServer) -> None:
    rows = [
        vehicle(
            i,
            model="Accord" if i % 2 else "Civic",
            attributes={"color": "red" if i < 4 else "blue"},
        )
        for i in range(9)
    ]
    rows[0]["region"] = "us-east-1"
    bulk = call(api_server, "POST", f"{BASE}/bulk", rows)
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["created"] == 9

    def follow(path: str) -> tuple[list[str], int]:
        seen: list[str] = []
        pages = 0
        url: str | None = f"{api_server.base_url}{path}"
        while url is not None:
            answer = call(api_server, "GET", url)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            pages += 1
            seen += [v["vehicle_id"] for v in page["items"]]
            link = answer.headers.get("Link")
            assert (link is None) == (page["next_cursor"] is None)
            url = urljoin(url, answer.links["next"]["url"]) if link else None
        return seen, pages

    everyone, pages = follow(f"{BASE}?limit=4")
    assert sorted(everyone) == sorted(r["vehicle_id"] for r in rows)  # each exactly once
    assert pages == 3
    accords, _ = follow(f"{BASE}?model=Accord&limit=2")
    assert sorted(accords) == [vin(i) for i in (1, 3, 5, 7)]
    red_accords, _ = follow(f"{BASE}?model=Accord&attribute=color%3Dred&limit=1")
    assert sorted(red_accords) == [vin(1), vin(3)]
    assert follow(f"{BASE}?region=us-east-1")[0] == [vin(0)]
    assert follow(f"{BASE}?vin_prefix={vin(8)[4:]}")[0] == [vin(8)]
    assert len(follow(f"{BASE}?last_seen_before=2100-01-01T00:00:00Z")[0]) == 9  # never seen
    assert follow(f"{BASE}?last_seen_after=2000-01-01")[0] == []
    assert follow(f"{BASE}?status=decommissioned")[0] == []

    # a cursor is bound to its query and refused when edited
    first = call(api_server, "GET", f"{BASE}?model=Accord&limit=1").json()
    cursor = first["next_cursor"]
    other = call(api_server, "GET", f"{BASE}?model=Civic&limit=1&cursor={cursor}")
    assert (other.status_code, other.json()["reason"]) == (400, "invalid_cursor")
    edited = call(api_server, "GET", f"{BASE}?model=Accord&limit=1&cursor={cursor[:-3]}x!y")
    assert edited.status_code == 400


def test_bulk_csv_answers_every_row_and_never_all_or_nothing(api_server: ApiHttpServer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    escaped = build_csr(key, vin(20)).strip().replace("\n", "\\n")
    text = (
        "vin,model,region,year,csr,fleet\n"
        f"{vin(20)},Accord,eu-west-1,2024,{escaped},north\n"
        f"{vin(21)},Civic,us-east-1,2023,,south\n"
        f"{vin(22)},Civic,mars-1,2023,,\n"
        f"{vin(21)},Civic,us-east-1,2023,,again\n"
    )
    answer = requests.post(
        f"{api_server.base_url}{BASE}/bulk",
        data=text.encode(),
        headers={**AUTH_HEADERS, "Content-Type": "text/csv"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == [201, 201, 400, 409]
    assert (body["created"], body["failed"]) == (2, 2)
    assert body["results"][0]["certificate"]["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert body["results"][1]["certificate"] is None  # inventory only
    assert "region" in body["results"][2]["detail"]
    assert call(api_server, "GET", f"{BASE}/{vin(21)}").json()["attributes"] == {"fleet": "south"}
    assert call(api_server, "GET", f"{BASE}/{vin(22)}").status_code == 404
    not_csv = requests.post(
        f"{api_server.base_url}{BASE}/bulk",
        data=b"<xml/>",
        headers={**AUTH_HEADERS, "Content-Type": "application/xml"},
        timeout=30,
    )
    assert not_csv.status_code == 400


def test_patch_merges_attributes(api_server: ApiHttpServer) -> None:
    assert call(api_server, "POST", BASE, vehicle(30, attributes={"a": "1", "b": "2"})).ok
    patched = call(
        api_server,
        "PATCH",
        f"{BASE}/{vin(30)}",
        {"attributes": {"a": None, "c": "3"}, "make": "Honda"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["attributes"] == {"b": "2", "c": "3"}
    assert patched.json()["make"] == "Honda"
    assert call(api_server, "PATCH", f"{BASE}/{vin(31)}", {"attributes": {}}).status_code == 404


def test_no_credential_is_401_and_a_viewer_reads_but_cannot_write(
    api_server: ApiHttpServer,
) -> None:
    assert call(api_server, "POST", BASE, vehicle(40)).status_code == 201
    assert call(api_server, "GET", BASE, headers={}).status_code == 401
    assert call(api_server, "GET", f"{BASE}/{vin(40)}", headers={}).status_code == 401
    assert call(api_server, "GET", BASE, headers=VIEWER_HEADERS).status_code == 200
    for method, path, body in (
        ("POST", BASE, vehicle(41)),
        ("POST", f"{BASE}/bulk", [vehicle(41)]),
        ("PATCH", f"{BASE}/{vin(40)}", {"attributes": {"x": "y"}}),
        ("DELETE", f"{BASE}/{vin(40)}", None),
    ):
        refused = call(api_server, method, path, body, headers=VIEWER_HEADERS)
        assert (refused.status_code, refused.json()["reason"]) == (403, "forbidden"), path
    assert call(api_server, "GET", f"{BASE}/{vin(41)}").status_code == 404
    assert call(api_server, "GET", f"{BASE}/{vin(40)}").json()["status"] == "active"


def test_decommission_cancels_updates_and_the_vehicle_is_never_targeted_again(
    api_server: ApiHttpServer,
    deployable_firmware: str,
    moto_ota: OtaServices,
    vehicle_events: InProcessEvents,
) -> None:
    # Given twelve Accords on 1.0.0 (`deployable_firmware`) and an update on its way to one
    gone, kept = vin(0), vin(1)
    update = call(
        api_server, "POST", f"{OTA}/devices/{gone}/update", {"firmware_id": deployable_firmware}
    )
    assert update.status_code == 201, update.text
    update_id = update.json()["update_id"]
    assert (
        call(api_server, "GET", f"{BASE}/{gone}").json()["active_update"]["update_id"] == update_id
    )

    # When it is decommissioned
    done = call(api_server, "DELETE", f"{BASE}/{gone}?reason=scrapped")
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["status"], body["already_decommissioned"]) == ("decommissioned", False)
    assert (body["decommissioned_by"], body["decommission_reason"]) == (PRINCIPAL, "scrapped")
    assert body["cancelled_updates"] == [update_id]

    # Then its update is cancelled, and device.deleted reached the OTA side, which
    # found nothing left to cancel (idempotent)
    assert call(api_server, "GET", f"{OTA}/updates/{update_id}").json()["state"] == "cancelled"
    assert vehicle_events.delivered == [
        {"handled": True, "vehicle_id": gone, "cancelled": [], "not_cancellable": []}
    ]
    # and no campaign, device update or filter reaches it any more
    spec = {"name": "listed", "firmware_id": deployable_firmware, "target_devices": [gone, kept]}
    listed = call(api_server, "POST", f"{OTA}/campaigns", spec)
    assert listed.status_code == 201, listed.text
    assert listed.json()["target_count"] == 1
    by_filter = call(
        api_server,
        "POST",
        f"{OTA}/campaigns",
        {"name": "all", "firmware_id": deployable_firmware, "target_filter": "model = 'Accord'"},
    )
    assert by_filter.json()["target_count"] == 11
    refused = call(
        api_server, "POST", f"{OTA}/devices/{gone}/update", {"firmware_id": deployable_firmware}
    )
    assert refused.status_code == 409
    assert moto_ota.deps.fleet.get(gone) is not None  # kept for the record
    assert (
        call(api_server, "PATCH", f"{BASE}/{gone}", {"attributes": {"x": "y"}}).status_code == 409
    )
    listed_gone = call(api_server, "GET", f"{BASE}?status=decommissioned").json()["items"]
    assert [v["vehicle_id"] for v in listed_gone] == [gone]

    # Decommissioning again answers the same, idempotently
    again = call(api_server, "DELETE", f"{BASE}/{gone}")
    assert (again.status_code, again.json()["already_decommissioned"]) == (200, True)
    # and registering the VIN again brings it back, with a new identity
    key = ec.generate_private_key(ec.SECP256R1())
    back = call(api_server, "POST", BASE, vehicle(0, csr=build_csr(key, gone)))
    assert (back.status_code, back.json()["outcome"]) == (201, "reactivated")
    assert json.loads(json.dumps(back.json()["attributes"])) == {}


def test_the_cli_registers_imports_lists_updates_and_decommissions(
    api_server: ApiHttpServer, tmp_path: Path
) -> None:
    runner = CliRunner()
    target = ["--api-url", api_server.base_url, "--api-key", API_KEY]

    def v2c(*args: str) -> Any:
        return runner.invoke(cli, [*args, *target])

    key, cert = tmp_path / "v" / "vehicle.key", tmp_path / "v" / "vehicle.pem"
    register = [
        *("vehicle", "register", vin(50), "--model", "Accord", "--region", "eu-west-1"),
        *("--year", "2024", "--key-out", str(key), "--cert-out", str(cert), "--json"),
    ]
    first = v2c(*register)
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pem = json.loads(first.stdout)["certificate"]["pem"]
    assert cert.read_text() == pem
    assert "PRIVATE KEY" not in first.output
    # the key file is reused: registering again is the same certificate
    again = v2c(*register)
    assert json.loads(again.stdout)["outcome"] == "unchanged"
    assert json.loads(again.stdout)["certificate"]["pem"] == pem

    csv_file = tmp_path / "fleet.csv"
    csv_file.write_text(
        "vin,model,region,year,depot\n"
        f"{vin(51)},Civic,us-east-1,2023,north\n"
        f"{vin(52)},Civic,nowhere-1,2023,south\n"
    )
    imported = v2c("vehicle", "import", str(csv_file))
    assert imported.exit_code == 3, imported.output  # one row failed, the other is registered
    assert "created 1" in imported.output
    assert vin(52) in imported.output

    updated = v2c("vehicle", "update", vin(51), "--attr", "depot=east", "--json")
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["attributes"] == {"depot": "east"}
    listed = v2c("vehicle", "list", "--limit", "1", "--all", "--json")
    assert sorted(v["vehicle_id"] for v in json.loads(listed.stdout)["items"]) == [vin(50), vin(51)]
    civics = v2c("vehicle", "list", "--model", "Civic")
    assert vin(51) in civics.stdout
    assert vin(50) not in civics.stdout
    # only vin(50) holds a certificate; it is due within ten years, not within a day
    due = v2c("vehicle", "list", "--expiring-within", "3650", "--json")
    assert [v["vehicle_id"] for v in json.loads(due.stdout)["items"]] == [vin(50)]
    none_due = v2c("vehicle", "list", "--expiring-within", "1", "--json")
    assert json.loads(none_due.stdout)["items"] == []

    gone = v2c("vehicle", "decommission", vin(51), "--yes", "--reason", "sold")
    assert gone.exit_code == 0, gone.output
    assert "decommissioned" in gone.output
    missing = v2c("vehicle", "show", vin(53))
    assert missing.exit_code == 3


def test_vehicles_whose_certificates_expire_soon_are_listed_for_renewal(
    api_server: ApiHttpServer,
) -> None:
    # Given two certified vehicles, one in the inventory only, and one decommissioned
    for number in (1, 2, 4):
        key = ec.generate_private_key(ec.SECP256R1())
        assert call(api_server, "POST", BASE, vehicle(number, csr=build_csr(key, vin(number)))).ok
    assert call(api_server, "POST", BASE, vehicle(3)).ok
    assert call(api_server, "DELETE", f"{BASE}/{vin(4)}").ok
    expires_at = call(api_server, "GET", f"{BASE}/{vin(1)}").json()["certificate"]["expires_at"]
    moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))

    def due(before: str) -> set[str]:
        page = call(api_server, "GET", BASE, params={"certificate_expires_before": before})
        assert page.status_code == 200, page.text
        return {v["vehicle_id"] for v in page.json()["items"]}

    # When the fleet manager asks for certificates expiring before a time
    # Then only live certificates of active vehicles count
    assert due("2000-01-01T00:00:00Z") == set()
    assert due("2999-01-01T00:00:00Z") == {vin(1), vin(2)}
    # the boundary: a certificate expiring at the time itself is not "before" it
    just_after = (moment + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert vin(1) in due(just_after)
    assert vin(1) not in due((moment - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    bad = call(api_server, "GET", BASE, params={"certificate_expires_before": "next week"})
    assert bad.status_code == 400
