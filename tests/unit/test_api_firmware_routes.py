"""The firmware routes' request rules, without I/O: what the document promises the
registry accepts, and the Lambda route and the local streaming route read one
upload request the same way (fields, refusals, answers)."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from api_events import AUTH, KEY_ENTRY, call
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from v2c.contract.errors import InvalidInput, V2CError
from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.handlers.api.errors import v2c_error_response
from v2c.handlers.api.firmware_models import (
    FIRMWARE_PATH,
    INLINE_MAX_BYTES,
    UploadQuery,
    UploadRequest,
)
from v2c.handlers.api.openapi import default_app
from v2c.handlers.api.routes import firmware as firmware_routes
from v2c.handlers.ota.firmware import FirmwareRecord, FirmwareService, firmware_id
from v2c.handlers.ota.firmware.formats import format_from_filename
from v2c.handlers.ota.firmware.ingest import Readable
from v2c.handlers.ota.firmware.model import parse_metadata
from v2c.handlers.ota.firmware.uploads import UploadResult
from v2c.infra.local.firmware_streaming import firmware_streaming_routes, parse_upload_query
from v2c.infra.local.http_adapter import PRINCIPAL_HEADER, QUERY_HEADER

PRINCIPAL = "tester"
T0 = datetime(2025, 12, 18, 10, 0, 0, 123456, tzinfo=UTC)
QUERY = {
    "name": "Smart Frame Firmware",
    "version": "2.1.0",
    "device_model": "SF-100",
    "manufacturer": "Acme",
    "filename": "fw.bin",
}


class FakeFirmware:
    """Records what an upload was given; registers anything, once."""

    max_size = 500 * 1024 * 1024

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def upload(self, stream: Readable, metadata: Any, **kwargs: Any) -> UploadResult:
        data = stream.read()
        self.calls.append({"metadata": metadata, "data": data, **kwargs})
        record = FirmwareRecord(
            **metadata,
            firmware_id=firmware_id(
                metadata["name"], metadata["version"], metadata["device_model"]
            ),
            filename=kwargs["filename"],
            file_format=format_from_filename(kwargs["filename"]),
            file_size=len(data),
            checksum_md5=hashlib.md5(data).hexdigest(),
            checksum_sha256=hashlib.sha256(data).hexdigest(),
            s3_key="firmware/x/y",
            created_at=T0,
            updated_at=T0,
            created_by=kwargs["uploaded_by"],
        )
        return UploadResult(record, created=len(self.calls) == 1)


def lambda_app(fake: FakeFirmware) -> OtaApi:
    services = ApiServices(firmware=cast(FirmwareService, fake))
    return build_app(services, ApiAuth([KEY_ENTRY]), modules=[firmware_routes])


def lambda_upload(
    app: OtaApi, query: dict[str, Any], body: bytes, content_type: str = "application/octet-stream"
) -> tuple[int, Any]:
    status, _, answer = call(
        app,
        "POST",
        FIRMWARE_PATH,
        headers={**AUTH, "Content-Type": content_type},
        body=body,
        query=query,
    )
    return status, answer


def streamed_upload(
    fake: FakeFirmware,
    query: dict[str, Any],
    body: bytes,
    content_type: str = "application/octet-stream",
) -> tuple[int, Any]:
    route = firmware_streaming_routes(cast(FirmwareService, fake))[("POST", FIRMWARE_PATH)]
    headers = {
        "Content-Type": content_type,
        QUERY_HEADER: urlencode(query, doseq=True),
        PRINCIPAL_HEADER: PRINCIPAL,
    }
    try:
        return route(io.BytesIO(body), len(body), headers)
    except V2CError as error:  # what the adapter does with a route's V2CError
        response = v2c_error_response(error)
        return response.status_code, json.loads(str(response.body))


def test_the_upload_query_model_and_the_documented_parameters_agree() -> None:
    document = json.loads(default_app().openapi_text())
    parameters = document["paths"][FIRMWARE_PATH]["post"]["parameters"]
    documented = {p["name"]: p for p in parameters}
    model = UploadQuery.model_json_schema()
    assert set(documented) == set(UploadQuery.model_fields)
    # Optional in the document (a form upload has no query), required for a raw body:
    assert not any(p["required"] for p in documented.values())
    assert all("required there" in documented[n]["description"] for n in model["required"])
    for name, parameter in documented.items():
        schema = json.dumps(parameter["schema"], sort_keys=True)
        expected = model["properties"][name]
        for key in ("pattern", "maxLength", "minLength", "maxItems"):
            if key in expected:
                assert f'"{key}": {json.dumps(expected[key])}' in schema, (name, key)


def matching(field: str) -> st.SearchStrategy[str]:
    """Strings matching the documented pattern of an `UploadRequest` field."""
    schema = UploadRequest.model_json_schema()["properties"][field]
    if "items" in schema:
        schema = schema["items"]
    pattern = schema["pattern"]
    return st.from_regex(r"\A" + pattern.removeprefix("^").removesuffix("$") + r"\Z")


@settings(max_examples=300, deadline=None)
@given(
    name=matching("name"),
    version=matching("version"),
    device_model=matching("device_model"),
    manufacturer=matching("manufacturer"),
    filename=matching("filename"),
    tags=st.lists(matching("tags"), max_size=5),
    hardware_id=matching("hardware_id"),
    min_installed_version=matching("min_installed_version"),
)
def test_what_the_upload_request_accepts_the_registry_accepts(**fields: Any) -> None:
    """The patterns in the document are never wider than the registry's rules:
    a client that follows the document is not refused with a 400. (Values
    over the documented lengths are outside the document: nothing promised.)"""
    try:
        request = UploadRequest.model_validate({**QUERY, **fields})
    except ValidationError as error:
        refused = {e["type"] for e in error.errors()}
    else:
        refused = set()
    assert refused <= {"string_too_long", "string_too_short"}
    if refused:
        return
    parse_metadata(request.firmware_metadata())
    format_from_filename(request.filename)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "2.1"),
        ("version", "v2.1.0"),
        ("version", "02.1.0"),
        ("device_model", "SF:100"),
        ("name", "   "),
        ("name", "bad\x07name"),
        ("filename", "fw.exe"),
        ("filename", "dir/fw.bin"),
        ("filename", ".bin"),
        ("min_installed_version", "1.0"),
    ],
)
def test_the_upload_request_refuses_what_the_registry_would(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UploadRequest.model_validate({**QUERY, field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_both_forms_of_the_raw_upload_answer_alike() -> None:
    lambda_fake, streamed_fake = FakeFirmware(), FakeFirmware()
    app = lambda_app(lambda_fake)
    query = {**QUERY, "tags": ["a", "b"], "metadata": '{"build": 7}', "is_beta": "true"}
    body = b"\x00\x01firmware\xff" * 100
    first = lambda_upload(app, query, body)
    assert first == streamed_upload(streamed_fake, query, body)
    status, answer = first
    assert status == 201
    assert answer["created_at"] == "2025-12-18T10:00:00.123Z"  # as stored: milliseconds
    assert lambda_fake.calls[0]["metadata"]["tags"] == ["a", "b"]
    assert lambda_fake.calls[0]["metadata"]["metadata"] == {"build": 7}
    assert lambda_fake.calls[0]["data"] == body
    assert lambda_upload(app, query, body)[0] == 200  # the second time: created false
    assert streamed_upload(streamed_fake, query, body)[0] == 200


@pytest.mark.parametrize(
    "query",
    [
        {k: v for k, v in QUERY.items() if k != "name"},
        {**QUERY, "version": "2.1"},
        {**QUERY, "filename": "x.exe", "checksum_md5": "nothex"},
        {**QUERY, "tags": ["ok", ""]},
    ],
)
def test_both_forms_refuse_a_bad_query_with_the_same_400(query: dict[str, Any]) -> None:
    fake = FakeFirmware()
    refused = lambda_upload(lambda_app(fake), query, b"data")
    assert refused[0] == 400
    assert refused == streamed_upload(fake, query, b"data")
    assert fake.calls == []


def test_metadata_that_is_not_a_json_object_is_400_in_both_forms() -> None:
    fake = FakeFirmware()
    query = {**QUERY, "metadata": "[1]"}
    refused = lambda_upload(lambda_app(fake), query, b"data")
    assert refused == (
        400,
        {
            "detail": "metadata: must be a JSON object",
            "reason": "validation_failed",
            "field": "metadata",
        },
    )
    assert refused == streamed_upload(fake, query, b"data")


def test_a_body_that_is_not_a_package_is_415_in_both_forms() -> None:
    fake = FakeFirmware()
    status, answer = lambda_upload(lambda_app(fake), QUERY, b"{}", "application/json")
    assert (status, answer["reason"]) == (415, "unsupported_media_type")
    status, answer = streamed_upload(fake, QUERY, b"{}", "application/json")
    assert (status, answer["reason"]) == (415, "unsupported_media_type")
    assert fake.calls == []


def test_behind_lambda_a_package_over_4_mib_is_413_pointing_at_the_two_step_path() -> None:
    fake = FakeFirmware()
    status, answer = lambda_upload(lambda_app(fake), QUERY, b"x" * (INLINE_MAX_BYTES + 1))
    assert status == 413
    assert "firmware-uploads" in answer["detail"]
    assert fake.calls == []
    assert lambda_upload(lambda_app(fake), QUERY, b"x" * INLINE_MAX_BYTES)[0] == 201


def test_the_streamed_query_takes_lists_whole_and_the_last_of_other_values() -> None:
    query = parse_upload_query(
        urlencode({**QUERY, "tags": ["a", "b"], "unknown": "x"}, doseq=True) + "&name=Second"
    )
    assert query.tags == ["a", "b"]
    assert query.name == "Second"
    with pytest.raises(InvalidInput):
        parse_upload_query("&".join(f"p{n}=1" for n in range(201)))


def test_an_oversized_stream_is_refused_before_it_is_read() -> None:
    class Unreadable:
        def read(self, size: int = -1, /) -> bytes:
            raise AssertionError("read")

    fake = FakeFirmware()
    route = firmware_streaming_routes(cast(FirmwareService, fake))[("POST", FIRMWARE_PATH)]
    headers = {QUERY_HEADER: urlencode(QUERY)}
    with pytest.raises(InvalidInput, match="exceeds the maximum limit of 500 MB"):
        route(Unreadable(), fake.max_size + 1, headers)
