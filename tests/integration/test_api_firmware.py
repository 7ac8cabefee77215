"""The firmware endpoints over real HTTP, the production services over a real moto server.

The API runs as locally deployed: the HTTP adapter in front of the Lambda
resolver, with the streaming upload route (`v2c.infra.local.firmware_streaming`)
on `POST /api/v1/ota/firmware`. A second adapter without streaming routes
plays API Gateway + Lambda, where the same request is capped at 4 MiB and
the two-step presigned path takes bigger packages. Files are generated
into `tmp_path` and streamed from disk; the test never holds one whole.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from api_support import API_KEY, AUTH_HEADERS
from api_support import PRINCIPAL as API_PRINCIPAL
from ota_support import fleet
from typer.testing import CliRunner, Result

from v2c.handlers.api import ApiAuth, ApiServices, build_app
from v2c.handlers.api.firmware_models import INLINE_MAX_BYTES
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.firmware import FirmwareService, firmware_id
from v2c.infra.cli.main import app as cli_app
from v2c.infra.local.firmware_streaming import firmware_streaming_routes
from v2c.infra.local.http_adapter import ApiHttpServer

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


MIB = 1024 * 1024
FIRMWARE = "/api/v1/ota/firmware"
UPLOADS = "/api/v1/ota/firmware-uploads"
PRINCIPAL = API_PRINCIPAL
MODEL = "Accord"  # the model `ota_support.fleet` registers


@pytest.fixture
def api_server(moto_api_server: ApiHttpServer) -> ApiHttpServer:
    return moto_api_server


@pytest.fixture
def lambda_api(moto_api_services: ApiServices, api_auth: ApiAuth) -> Iterator[ApiHttpServer]:
    """The API as API Gateway + Lambda serve it: no streaming route."""
    with ApiHttpServer(build_app(moto_api_services, api_auth).resolve) as server:
        yield server


def make_file(path: Path, size: int, *, seed: int = 1, head: bytes = b"") -> tuple[str, str]:
    """Write `size` pseudo-random bytes (1 MiB at a time); their MD5 and SHA-256."""
    rng = random.Random(seed)
    md5, sha = hashlib.md5(), hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = (head + rng.randbytes(min(MIB, left)))[: min(MIB, left)]
            head = b""
            out.write(chunk)
            md5.update(chunk)
            sha.update(chunk)
            left -= len(chunk)
    return md5.hexdigest(), sha.hexdigest()


def meta(version: str = "2.1.0", model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {
        "name": "Telematics Unit",
        "version": version,
        "device_model": model,
        "manufacturer": "Acme",
        "filename": "tcu.bin",
        **extra,
    }


def post_file(
    server: ApiHttpServer,
    path: Path,
    params: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """A raw upload: the file streamed from disk with its Content-Length."""
    with path.open("rb") as body:
        return requests.post(
            f"{server.base_url}{FIRMWARE}",
            params=params,
            data=body,
            headers={
                "Content-Type": "application/octet-stream",
                **(AUTH_HEADERS if headers is None else headers),
            },
            timeout=60,
        )


def api(server: ApiHttpServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, f"{server.base_url}{path}", headers=AUTH_HEADERS, timeout=30, **kwargs
    )


def firmware_keys(stack: AwsStack) -> list[str]:
    s3 = stack.aws.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.names.firmware_bucket, Prefix="firmware/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_streamed_upload_registers_the_package_with_the_prd_fields(
    api_server: ApiHttpServer, aws_stack: AwsStack, tmp_path: Path
) -> None:
    # Given a 20 MB package (three multipart parts) and its checksums
    package = tmp_path / "tcu.bin"
    md5, sha = make_file(package, 20 * MIB)
    params = {
        **meta(hardware_id="hw-a", is_security_update="true"),
        "tags": ["lte", "modem"],
        "metadata": json.dumps({"build": 42}),
        "checksum_md5": md5,
        "checksum_sha256": sha.upper(),
    }
    # When it is uploaded as the body of POST /firmware
    answer = post_file(api_server, package, params)
    # Then it is registered under its deterministic id, with what it hashed to
    assert answer.status_code == 201, answer.text
    record = answer.json()
    fid = firmware_id("Telematics Unit", "2.1.0", MODEL)
    assert record["firmware_id"] == fid
    assert record["created"] is True
    assert record["file_size"] == 20 * MIB
    assert (record["checksum_md5"], record["checksum_sha256"]) == (md5, sha)
    assert record["file_url"] == f"{FIRMWARE}/{fid}/download"
    assert record["file_format"] == "bin"
    assert record["tags"] == ["lte", "modem"]
    assert record["metadata"] == {"build": 42}
    assert record["is_security_update"] is True
    assert record["is_beta"] is False
    assert record["status"] == "available"
    assert record["created_by"] == PRINCIPAL
    assert record["created_at"].endswith("Z")
    # and the Lambda route reads back the same record, field for field
    shown = api(api_server, "GET", f"{FIRMWARE}/{fid}")
    assert shown.status_code == 200
    # (and its success rate, BR-OTA-010: none finished yet)
    assert shown.json() == {
        **{k: v for k, v in record.items() if k != "created"},
        "success_rate": None,
    }
    assert len(firmware_keys(aws_stack)) == 1


def test_re_uploading_the_same_package_answers_200_and_stores_nothing_new(
    api_server: ApiHttpServer, aws_stack: AwsStack, tmp_path: Path
) -> None:
    package = tmp_path / "tcu.bin"
    make_file(package, 3 * MIB)
    first = post_file(api_server, package, meta())
    assert first.status_code == 201
    again = post_file(api_server, package, meta())
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert again.json()["firmware_id"] == first.json()["firmware_id"]
    assert again.json()["created_at"] == first.json()["created_at"]
    assert len(firmware_keys(aws_stack)) == 1
    # Other bytes under the same name, version and model are a conflict.
    other = tmp_path / "other.bin"
    make_file(other, 3 * MIB, seed=2)
    conflict = post_file(api_server, other, meta())
    assert conflict.status_code == 409
    assert "already registered with other content" in conflict.json()["detail"]
    assert conflict.json()["reason"] == "conflict"


def test_a_checksum_mismatch_is_422_and_leaves_nothing_behind(
    api_server: ApiHttpServer, aws_stack: AwsStack, tmp_path: Path
) -> None:
    package = tmp_path / "tcu.bin"
    md5, sha = make_file(package, 9 * MIB)
    wrong = hashlib.sha256(b"something else").hexdigest()
    answer = post_file(api_server, package, {**meta(), "checksum_sha256": wrong})
    assert answer.status_code == 422
    body = answer.json()
    assert body["reason"] == "checksum_mismatch"
    assert f"hashes to {sha}" in body["detail"]
    assert wrong in body["detail"]
    md5_wrong = post_file(api_server, package, {**meta(), "checksum_md5": "0" * 32})
    assert md5_wrong.status_code == 422
    assert md5 in md5_wrong.json()["detail"]
    assert firmware_keys(aws_stack) == []
    assert api(api_server, "GET", FIRMWARE).json()["total"] == 0


def test_a_bad_format_name_content_or_metadata_is_400_naming_the_field(
    api_server: ApiHttpServer, tmp_path: Path
) -> None:
    package = tmp_path / "fw.bin"
    make_file(package, 64 * 1024)
    exe = post_file(api_server, package, meta(filename="tcu.exe"))
    assert exe.status_code == 400
    assert exe.json()["reason"] == "validation_failed"
    assert exe.json()["errors"][0]["loc"] == ["query", "filename"]
    # A .zip name on bytes that are no ZIP archive: refused by content.
    not_zip = post_file(api_server, package, meta(filename="tcu.zip"))
    assert not_zip.status_code == 400
    assert "not a ZIP archive" in not_zip.json()["detail"]
    missing = post_file(api_server, package, {k: v for k, v in meta().items() if k != "version"})
    assert missing.status_code == 400
    assert missing.json()["detail"] == "query.version: Field required"
    bad_version = post_file(api_server, package, meta(version="2.1"))
    assert bad_version.status_code == 400
    assert bad_version.json()["errors"][0]["loc"] == ["query", "version"]
    bad_json = post_file(api_server, package, {**meta(), "metadata": "[1, 2]"})
    assert bad_json.status_code == 400
    assert bad_json.json()["detail"] == "metadata: must be a JSON object"
    empty = requests.post(
        f"{api_server.base_url}{FIRMWARE}",
        params=meta(),
        data=b"",
        headers={**AUTH_HEADERS, "Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert empty.status_code == 400
    assert empty.json()["detail"] == "file: the file is empty"
    as_json = requests.post(
        f"{api_server.base_url}{FIRMWARE}",
        params=meta(),
        json={"not": "a package"},
        headers=AUTH_HEADERS,
        timeout=10,
    )
    assert as_json.status_code == 415
    assert as_json.json()["reason"] == "unsupported_media_type"


def test_uploads_and_reads_need_credentials(api_server: ApiHttpServer, tmp_path: Path) -> None:
    package = tmp_path / "fw.bin"
    make_file(package, MIB)
    refused = post_file(api_server, package, meta(), headers={})
    assert refused.status_code == 401
    assert refused.json()["reason"] == "missing_credentials"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = post_file(api_server, package, meta(), headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401
    for path in (FIRMWARE, f"{FIRMWARE}/{'0' * 32}", f"{FIRMWARE}/{'0' * 32}/download"):
        assert requests.get(f"{api_server.base_url}{path}", timeout=5).status_code == 401
    assert api(api_server, "GET", FIRMWARE).json()["total"] == 0


def test_an_oversized_stream_is_refused_before_it_is_read(
    moto_ota: OtaServices, api_auth: ApiAuth, aws_stack: AwsStack, tmp_path: Path
) -> None:
    # A registry capped at 1 MiB (the real one: 500 MB) behind the streaming route.
    small = FirmwareService.from_clients(
        aws_stack.aws.client("dynamodb"),
        aws_stack.aws.client("s3"),
        table=aws_stack.names.firmware_table,
        bucket=aws_stack.names.firmware_bucket,
        usage=moto_ota.deps.campaigns,
        events=moto_ota.deps.events,
        max_size=MIB,
    )
    app = build_app(ApiServices(firmware=small), api_auth)
    server = ApiHttpServer(
        app.resolve,
        streaming_routes=firmware_streaming_routes(small),
        streaming_auth=app.authorize,
    )
    package = tmp_path / "big.bin"
    make_file(package, 2 * MIB)
    with server:
        answer = post_file(server, package, meta())
    assert answer.status_code == 400
    assert "exceeds the maximum limit of 1 MB" in answer.json()["detail"]
    assert firmware_keys(aws_stack) == []


def test_list_get_and_a_download_url_that_serves_the_bytes(
    api_server: ApiHttpServer, tmp_path: Path
) -> None:
    ids = []
    for n, (version, model) in enumerate([("1.0.0", MODEL), ("1.1.0", MODEL), ("1.0.0", "Civic")]):
        package = tmp_path / f"p{n}.bin"
        make_file(package, MIB + n, seed=n)
        answer = post_file(api_server, package, meta(version, model, is_beta=str(n == 1).lower()))
        assert answer.status_code == 201
        ids.append(answer.json()["firmware_id"])
    page = api(api_server, "GET", FIRMWARE, params={"device_model": MODEL}).json()
    assert [f["firmware_id"] for f in page["items"]] == [ids[1], ids[0]]  # newest first
    assert (page["total"], page["limit"], page["next_cursor"]) == (2, 50, None)
    first = api(api_server, "GET", FIRMWARE, params={"limit": 1})
    assert [f["firmware_id"] for f in first.json()["items"]] == [ids[2]]
    cursor = first.json()["next_cursor"]
    assert first.headers["Link"] == f'<?limit=1&cursor={cursor}>; rel="next"'
    second = api(api_server, "GET", FIRMWARE, params={"limit": 1, "cursor": cursor}).json()
    assert [f["firmware_id"] for f in second["items"]] == [ids[1]]
    assert second["total"] == 3
    elsewhere = api(api_server, "GET", FIRMWARE, params={"cursor": cursor, "device_model": MODEL})
    assert (elsewhere.status_code, elsewhere.json()["reason"]) == (400, "invalid_cursor")
    beta = api(api_server, "GET", FIRMWARE, params={"is_beta": "true"}).json()
    assert [f["firmware_id"] for f in beta["items"]] == [ids[1]]
    too_many = api(api_server, "GET", FIRMWARE, params={"limit": 201})
    assert too_many.status_code == 400
    assert api(api_server, "GET", f"{FIRMWARE}/{'a' * 32}").status_code == 404
    assert api(api_server, "GET", f"{FIRMWARE}/not-an-id").status_code == 400

    # The download URL serves the very bytes uploaded, and is counted.
    answer = api(api_server, "GET", f"{FIRMWARE}/{ids[2]}/download", params={"expires_in": 600})
    assert answer.status_code == 200
    download = answer.json()
    fetched = requests.get(download["download_url"], timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == (tmp_path / "p2.bin").read_bytes()
    assert hashlib.sha256(fetched.content).hexdigest() == download["checksum_sha256"]
    assert download["file_size"] == MIB + 2
    assert download["filename"] == "tcu.bin"
    assert api(api_server, "GET", f"{FIRMWARE}/{ids[2]}").json()["download_count"] == 1


def test_the_lifecycle_is_refused_while_a_campaign_uses_the_package_unless_forced(
    api_server: ApiHttpServer, moto_ota: OtaServices, tmp_path: Path
) -> None:
    # Given a package and a campaign (status created: active) deploying it
    package = tmp_path / "fw.bin"
    make_file(package, MIB)
    fid = post_file(api_server, package, meta()).json()["firmware_id"]
    moto_ota.deps.fleet.put(fleet(3, version="1.0.0"))
    campaign = moto_ota.campaigns.create(
        {"name": "tcu 2.1", "firmware_id": fid, "target_filter": f"model = '{MODEL}'"}
    ).campaign.campaign_id
    # When it is deleted, deprecated or recalled, each is refused with 409
    refusals = [
        api(api_server, "DELETE", f"{FIRMWARE}/{fid}"),
        api(api_server, "POST", f"{FIRMWARE}/{fid}/deprecate", json={"reason": "old"}),
        api(api_server, "POST", f"{FIRMWARE}/{fid}/recall", json={}),
    ]
    for refused in refusals:
        assert refused.status_code == 409, refused.text
        assert campaign in refused.json()["detail"]
        assert "force" in refused.json()["detail"]
    assert api(api_server, "GET", f"{FIRMWARE}/{fid}").json()["status"] == "available"
    # unless forced
    forced = api(
        api_server, "POST", f"{FIRMWARE}/{fid}/deprecate", json={"reason": "2.2 out", "force": True}
    )
    assert forced.status_code == 200
    assert (forced.json()["status"], forced.json()["status_reason"]) == ("deprecated", "2.2 out")
    assert api(api_server, "GET", f"{FIRMWARE}/{fid}/download").status_code == 200
    # Once the campaign is over, recall and delete need no force.
    moto_ota.campaigns.cancel(campaign)
    recalled = api(api_server, "POST", f"{FIRMWARE}/{fid}/recall", json={"reason": "bricks"})
    assert recalled.json()["status"] == "recalled"
    no_url = api(api_server, "GET", f"{FIRMWARE}/{fid}/download")
    assert no_url.status_code == 409
    assert "recalled (bricks)" in no_url.json()["detail"]
    deprecate_again = api(api_server, "POST", f"{FIRMWARE}/{fid}/deprecate")
    assert deprecate_again.status_code == 409  # recalled is final but for deletion
    deleted = api(api_server, "DELETE", f"{FIRMWARE}/{fid}", params={"reason": "cleanup"})
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "deleted"
    assert api(api_server, "DELETE", f"{FIRMWARE}/{fid}").status_code == 200  # idempotent
    # Soft delete: reads answer 404, the list shows it only when asked.
    assert api(api_server, "GET", f"{FIRMWARE}/{fid}").status_code == 404
    assert api(api_server, "GET", FIRMWARE).json()["total"] == 0
    kept = api(api_server, "GET", FIRMWARE, params={"include_deleted": "true"}).json()
    assert [(f["firmware_id"], f["status"]) for f in kept["items"]] == [(fid, "deleted")]
    # and its id is never reused
    assert post_file(api_server, package, meta()).status_code == 409


def test_the_two_step_presigned_upload(
    api_server: ApiHttpServer, aws_stack: AwsStack, tmp_path: Path
) -> None:
    package = tmp_path / "rootfs.tar.gz"
    md5, sha = make_file(package, 6 * MIB, head=b"\x1f\x8b")
    body = {**meta(filename="rootfs.tar.gz"), "tags": ["rootfs"], "metadata": {"k": "v"}}
    begun = api(api_server, "POST", UPLOADS, json=body)
    assert begun.status_code == 201, begun.text
    ticket = begun.json()
    assert ticket["method"] == "PUT"
    assert ticket["firmware_id"] == firmware_id("Telematics Unit", "2.1.0", MODEL)
    assert ticket["complete_url"] == f"{UPLOADS}/{ticket['upload_token']}/complete"
    with package.open("rb") as data:
        put = requests.put(ticket["upload_url"], data=data, timeout=30)  # no API key
    assert put.status_code == 200
    done = api(api_server, "POST", ticket["complete_url"], json={"checksum_sha256": sha})
    assert done.status_code == 201, done.text
    record = done.json()
    assert (record["created"], record["file_format"], record["file_size"]) == (
        True,
        "tar.gz",
        6 * MIB,
    )
    assert (record["checksum_md5"], record["tags"], record["metadata"]) == (
        md5,
        ["rootfs"],
        {"k": "v"},
    )
    assert record["created_by"] == PRINCIPAL
    # Completing again (a retry after a lost answer) answers the record.
    again = api(api_server, "POST", ticket["complete_url"])
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert api(api_server, "POST", f"{UPLOADS}/{'f' * 32}/complete").status_code == 404
    # A second ticket whose PUT never happened: 400, nothing uploaded.
    other = api(api_server, "POST", UPLOADS, json=meta("2.2.0")).json()
    nothing = api(api_server, "POST", other["complete_url"], json={})
    assert nothing.status_code == 400
    assert "nothing was uploaded" in nothing.json()["detail"]
    bad = api(api_server, "POST", UPLOADS, json={**meta(), "filename": "x.exe"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["loc"] == ["body", "filename"]
    assert len(firmware_keys(aws_stack)) == 1


def test_behind_lambda_the_raw_upload_takes_small_packages_only(
    lambda_api: ApiHttpServer, tmp_path: Path
) -> None:
    small = tmp_path / "small.hex"
    small.write_bytes(b":10010000214601360121470136007EFE09D2190140\n" * 1000)
    sha = hashlib.sha256(small.read_bytes()).hexdigest()
    answer = post_file(lambda_api, small, {**meta(filename="small.hex"), "checksum_sha256": sha})
    assert answer.status_code == 201, answer.text
    assert answer.json()["file_format"] == "hex"
    assert post_file(lambda_api, small, meta(filename="small.hex")).status_code == 200
    big = tmp_path / "big.bin"
    make_file(big, INLINE_MAX_BYTES + 1)
    refused = post_file(lambda_api, big, meta("3.0.0"))
    assert refused.status_code == 413
    assert f"POST {UPLOADS}" in refused.json()["detail"]


def test_the_cli_uploads_lists_and_retires_firmware(
    api_server: ApiHttpServer, tmp_path: Path
) -> None:
    runner = CliRunner()

    def v2c_firmware(*args: str) -> Result:
        target = ["--api-url", api_server.base_url, "--api-key", API_KEY]
        return runner.invoke(cli_app, ["firmware", *args, *target])

    package = tmp_path / "tcu-2.1.0.bin"
    _, sha = make_file(package, 12 * MIB)
    common = ["--name", "Telematics Unit", "--model", MODEL, "--manufacturer", "Acme"]

    uploaded = v2c_firmware(
        "upload", str(package), "--version", "2.1.0", *common, "--tag", "lte", "--json"
    )
    assert uploaded.exit_code == 0, uploaded.output
    record = json.loads(uploaded.stdout)
    assert (record["created"], record["checksum_sha256"]) == (True, sha)
    assert record["filename"] == "tcu-2.1.0.bin"
    assert record["tags"] == ["lte"]

    presigned = v2c_firmware(
        "upload", str(package), "--version", "2.2.0", *common, "--presigned", "--beta"
    )
    assert presigned.exit_code == 0, presigned.output
    assert "registered" in presigned.stderr

    listed = v2c_firmware("list", "--model", MODEL, "--json")
    assert listed.exit_code == 0, listed.output
    page = json.loads(listed.stdout)
    assert [(f["version"], f["is_beta"]) for f in page["items"]] == [
        ("2.2.0", True),
        ("2.1.0", False),
    ]
    table = v2c_firmware("list")
    assert table.exit_code == 0
    assert record["firmware_id"] in table.stdout

    url = v2c_firmware("download-url", record["firmware_id"])
    assert url.exit_code == 0
    assert requests.get(url.stdout.strip(), timeout=30).content == package.read_bytes()
    assert sha in url.stderr

    deleted = v2c_firmware("delete", record["firmware_id"], "--reason", "test")
    assert deleted.exit_code == 0, deleted.output
    gone = v2c_firmware("show", record["firmware_id"])
    assert gone.exit_code == 3  # 404: refused (`v2c.infra.cli.errors`)
    assert "not found" in gone.stderr

    # Bytes that differ from the checksum given: the registry refuses (422: exit 3).
    mismatch = v2c_firmware(
        "upload", str(package), "--version", "3.0.0", *common, "--sha256", "0" * 64
    )
    assert mismatch.exit_code == 3
    assert "SHA256 checksum mismatch" in mismatch.stderr
