"""The PRD's contract points over real HTTP, the production services over a real moto server:
the multipart upload (E1-US1), statistics (E5-US1, BR-OTA-043..045), a firmware's
success rate (E1-US2), a vehicle's history (E5-US3) and beta opt-in (BR-OTA-009)."""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from api_support import AUTH_HEADERS
from api_support import PRINCIPAL as API_PRINCIPAL
from ota_support import VehicleReporter, fleet

from v2c.handlers.api import ApiAuth, ApiServices, build_app
from v2c.handlers.api.firmware_models import INLINE_MAX_BYTES
from v2c.handlers.ota.config import OtaServices
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.v1.ota_pb2 import OTAStatus

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

MIB = 1024 * 1024
OTA = "/api/v1/ota"
FIRMWARE = f"{OTA}/firmware"
S = OTAStatus.State
TO_COMPLETION = (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING, S.REBOOTING, S.VERIFYING)
META = {
    "name": "Smart Frame Firmware",
    "version": "2.1.0",
    "device_model": "Accord",
    "manufacturer": "Acme",
    "description": "Bug fixes and performance improvements",
    "is_security_update": False,
}


@pytest.fixture
def api_server(moto_api_server: ApiHttpServer) -> ApiHttpServer:
    return moto_api_server


@pytest.fixture
def lambda_api(moto_api_services: ApiServices, api_auth: ApiAuth) -> Iterator[ApiHttpServer]:
    """The API as API Gateway + Lambda serve it: no streaming route."""
    with ApiHttpServer(build_app(moto_api_services, api_auth).resolve) as server:
        yield server


def api(server: ApiHttpServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, f"{server.base_url}{path}", headers=AUTH_HEADERS, timeout=60, **kwargs
    )


def write_file(path: Path, size: int, seed: int = 7) -> str:
    """`size` pseudo-random bytes, 1 MiB at a time; their SHA-256."""
    rng, sha = random.Random(seed), hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = rng.randbytes(min(MIB, left))
            out.write(chunk)
            sha.update(chunk)
            left -= len(chunk)
    return sha.hexdigest()


def post_form(
    server: ApiHttpServer, metadata: dict[str, Any], path: Path, name: str = "firmware_v2.1.0.bin"
) -> requests.Response:
    """What `curl -F metadata=... -F file=@...` sends (requests streams the file part)."""
    with path.open("rb") as file:
        return requests.post(
            f"{server.base_url}{FIRMWARE}",
            headers=AUTH_HEADERS,
            files=[
                ("metadata", (None, json.dumps(metadata), "application/json")),
                ("file", (name, file, "application/octet-stream")),
            ],
            timeout=120,
        )


def firmware_keys(stack: AwsStack) -> list[str]:
    listed = stack.aws.client("s3").list_objects_v2(
        Bucket=stack.names.firmware_bucket, Prefix="firmware/"
    )
    return [o["Key"] for o in listed.get("Contents", [])]


def test_the_prds_form_upload_streams_registers_and_refuses_like_the_raw_one(
    api_server: ApiHttpServer, lambda_api: ApiHttpServer, aws_stack: AwsStack, tmp_path: Path
) -> None:
    # Given a 12 MiB package: over the adapter's 10 MiB buffered body, two S3 parts
    package = tmp_path / "fw.bin"
    sha = write_file(package, 12 * MIB)
    # When it is posted as the PRD's curl does, with a checksum to verify
    answer = post_form(api_server, {**META, "checksum_sha256": sha}, package)
    # Then it is registered with the PRD's fields, streamed (not buffered) into S3
    assert answer.status_code == 201, answer.text
    record = answer.json()
    assert (record["file_size"], record["checksum_sha256"]) == (12 * MIB, sha)
    assert (record["filename"], record["created"]) == ("firmware_v2.1.0.bin", True)
    assert record["created_by"] == API_PRINCIPAL
    assert len(firmware_keys(aws_stack)) == 1
    # and the same form again is the existing record, 200
    again = post_form(api_server, META, package)
    assert (again.status_code, again.json()["created"]) == (200, False)

    # A checksum mismatch is the raw path's 422, and nothing new is stored
    other = tmp_path / "other.bin"
    write_file(other, 2 * MIB, seed=8)
    mismatch = post_form(api_server, {**META, "version": "2.2.0", "checksum_sha256": sha}, other)
    assert (mismatch.status_code, mismatch.json()["reason"]) == (422, "checksum_mismatch")
    assert len(firmware_keys(aws_stack)) == 1

    # Behind API Gateway + Lambda: the same form within 4 MiB of package, 413 beyond
    small = post_form(lambda_api, {**META, "version": "2.3.0"}, other)
    assert small.status_code == 201, small.text
    big = tmp_path / "big.bin"
    write_file(big, INLINE_MAX_BYTES + 1, seed=9)
    refused = post_form(lambda_api, {**META, "version": "2.4.0"}, big)
    assert (refused.status_code, refused.json()["reason"]) == (413, "payload_too_large")

    # A malformed form is a 400 with a JSON detail, on both
    for server in (api_server, lambda_api):
        bad = requests.post(
            f"{server.base_url}{FIRMWARE}",
            headers=AUTH_HEADERS,
            files=[
                ("file", ("a.bin", io.BytesIO(b"\x00" * 10), "application/octet-stream")),
                ("metadata", (None, json.dumps(META), "application/json")),
            ],
            timeout=30,
        )
        assert bad.status_code == 400
        assert "before the 'file' part" in bad.json()["detail"]
    assert len(firmware_keys(aws_stack)) == 2


def upload(ota: OtaServices, version: str, *, is_beta: bool = False, size: int = 5000) -> str:
    metadata = {
        "name": "fw",
        "version": version,
        "device_model": "Accord",
        "manufacturer": "Acme",
        "is_beta": is_beta,
    }
    data = (b"image" * size)[:size]
    return ota.firmware.upload(io.BytesIO(data), metadata, filename="fw.bin").record.firmware_id


def walk(
    ota: OtaServices, reporter: VehicleReporter, vehicle: str, release: str, *states: int
) -> None:
    for state in states:
        ota.status.apply(reporter.status(vehicle, release, state))


def test_stats_firmware_success_rate_and_history_over_http(
    api_server: ApiHttpServer, moto_ota: OtaServices
) -> None:
    # Given three vehicles updated outside any campaign: one completes, one fails, one runs
    vehicles = [v.vehicle_id for v in fleet(3)]
    moto_ota.deps.fleet.put(fleet(3))
    firmware_id = upload(moto_ota, "2.0.0", size=5000)
    reporter = VehicleReporter()
    releases = []
    for vehicle in vehicles:
        answer = api(
            api_server, "POST", f"{OTA}/devices/{vehicle}/update", json={"firmware_id": firmware_id}
        )
        assert answer.status_code == 201, answer.text
        releases.append(answer.json()["release_id"])
    walk(moto_ota, reporter, vehicles[0], releases[0], *TO_COMPLETION)
    moto_ota.status.apply(
        reporter.status(vehicles[0], releases[0], S.COMPLETED, installed_version="2.0.0")
    )
    walk(moto_ota, reporter, vehicles[1], releases[1], S.ACCEPTED, S.DOWNLOADING, S.FAILED)
    walk(moto_ota, reporter, vehicles[2], releases[2], S.ACCEPTED, S.DOWNLOADING)

    # Then /stats counts them (no campaign at all), the last 24 h by the records' times
    stats = api(api_server, "GET", f"{OTA}/stats").json()
    assert (stats["completed_updates"], stats["failed_updates"]) == (1, 1)
    assert (stats["in_progress_updates"], stats["total_updates"]) == (1, 3)
    assert (stats["last_24h_updates"], stats["last_24h_failures"]) == (3, 1)
    assert stats["success_rate"] == 50.0
    assert stats["total_data_transferred"] == 5000  # the completed update's package only
    assert stats["last_24h_data_transferred"] == 5000
    assert stats["avg_update_time"] is not None
    assert stats["updates_by_firmware_version"]["2.0.0"]["success_rate"] == 50.0
    assert stats["records_complete"] is True
    # and the package's success rate is on its record (E1-US2 AC2)
    detail = api(api_server, "GET", f"{FIRMWARE}/{firmware_id}").json()
    assert (detail["success_rate"], detail["download_count"]) == (50.0, 0)

    # Given a second update of the first vehicle, later
    newer = upload(moto_ota, "3.0.0", size=100)
    second = api(
        api_server, "POST", f"{OTA}/devices/{vehicles[0]}/update", json={"firmware_id": newer}
    )
    assert second.status_code == 201, second.text
    # Then its history is newest first, one a page, with its success rate
    first_page = api(api_server, "GET", f"{OTA}/devices/{vehicles[0]}/updates", params={"limit": 1})
    body = first_page.json()
    assert [u["to_version"] for u in body["items"]] == ["3.0.0"]
    assert (body["total"], body["completed"], body["success_rate"]) == (2, 1, 100.0)
    assert 'rel="next"' in first_page.headers["Link"]
    rest = api(
        api_server,
        "GET",
        f"{OTA}/devices/{vehicles[0]}/updates",
        params={"limit": 1, "cursor": body["next_cursor"]},
    ).json()
    assert [u["to_version"] for u in rest["items"]] == ["2.0.0"]
    assert rest["next_cursor"] is None
    # a cursor of one vehicle is no cursor of another
    other = api(
        api_server,
        "GET",
        f"{OTA}/devices/{vehicles[1]}/updates",
        params={"cursor": body["next_cursor"]},
    )
    assert (other.status_code, other.json()["reason"]) == (400, "invalid_cursor")


def test_beta_firmware_reaches_opted_in_vehicles_only_over_http(
    api_server: ApiHttpServer, moto_ota: OtaServices
) -> None:
    # Given four registered vehicles, two of which opt in through the vehicles API
    vehicles = [v.vehicle_id for v in fleet(4)]
    moto_ota.deps.fleet.put(fleet(4))
    for vehicle in vehicles[:2]:
        patched = api(
            api_server,
            "PATCH",
            f"/api/v1/vehicles/{vehicle}",
            json={"attributes": {"beta_opt_in": "true"}},
        )
        assert patched.status_code == 200, patched.text
    opted_in = api(api_server, "GET", "/api/v1/vehicles", params={"attribute": "beta_opt_in=true"})
    assert sorted(v["vehicle_id"] for v in opted_in.json()["items"]) == vehicles[:2]
    beta = upload(moto_ota, "2.1.0-beta.1", is_beta=True)

    # When a campaign deploys the beta package to all four
    body = {"name": "beta", "firmware_id": beta, "target_devices": vehicles}
    created = api(api_server, "POST", f"{OTA}/campaigns", json=body)
    # Then only the opted-in two are targets; the others are counted with their reason
    assert created.status_code == 201, created.text
    answer = created.json()
    assert answer["target_count"] == 2
    assert answer["excluded"]["beta_not_opted_in"] == 2

    # A beta campaign of non-opted-in vehicles only is a 400 naming the rule
    refused = api(
        api_server, "POST", f"{OTA}/campaigns", json={**body, "target_devices": vehicles[2:]}
    )
    assert refused.status_code == 400
    assert "beta" in refused.json()["detail"]
    assert "BR-OTA-009" in refused.json()["detail"]

    # and a device update of beta firmware to a vehicle that did not opt in too
    device = api(
        api_server, "POST", f"{OTA}/devices/{vehicles[3]}/update", json={"firmware_id": beta}
    )
    assert device.status_code == 400
    assert "opted in to beta" in device.json()["detail"]
