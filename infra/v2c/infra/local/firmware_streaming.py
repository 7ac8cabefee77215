"""`POST /api/v1/ota/firmware` on the local HTTP adapter: any size, streamed into the registry.

Behind API Gateway the raw upload takes 4 MiB (a Lambda event's limit); the
local adapter gives this route the socket's body stream instead
(`ApiHttpServer(streaming_routes=...)`), so `v2c firmware upload` sends a
500 MB package in one request and the registry hashes it and writes it to S3
part by part as it arrives: memory stays at one part, whatever the size.

The request and the answers are the Lambda route's (see
`v2c.handlers.api.firmware_models`): the body is the package
(`application/octet-stream` or no `Content-Type`), the metadata and the
checksums to verify are query parameters, validated by the same model
(`UploadQuery`), and a refusal has the API's `{"detail", "reason"}` shape
(a 400 names each failing field, as the API's validation does). 201: the
record; 200 with `created: false`: the same package was already registered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, get_origin
from urllib.parse import parse_qs

from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from pydantic import ValidationError

from v2c.contract.errors import InvalidInput
from v2c.handlers.api.errors import error_response, validation_response
from v2c.handlers.api.firmware_form import FORM_OVERHEAD, is_form, upload_form
from v2c.handlers.api.firmware_models import (
    FIRMWARE_PATH,
    RAW_CONTENT_TYPE,
    UploadQuery,
    accepts_raw,
    upload_raw,
    uploaded_out,
    uploaded_status,
)
from v2c.handlers.ota.firmware.ingest import too_large
from v2c.handlers.ota.firmware.service import FirmwareService
from v2c.infra.local.http_adapter import PRINCIPAL_HEADER, QUERY_HEADER, StreamingRoute
from v2c.infra.local.http_body import ByteStream

_LIST_FIELDS: Final = frozenset(
    name for name, field in UploadQuery.model_fields.items() if get_origin(field.annotation) is list
)
_MAX_QUERY_FIELDS: Final = 200


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def parse_upload_query(query: str) -> UploadQuery:
    """The upload's query string as `UploadQuery`, read as API Gateway reads
    it for the Lambda route: the last value of a repeated parameter, all of
    them for a list (`tags=a&tags=b`); unknown parameters are ignored.
    Raises pydantic's `ValidationError`, or `InvalidInput` for a query of
    more than 200 parameters."""
    try:
        multi = parse_qs(query, keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS)
    except ValueError:
        raise InvalidInput(f"more than {_MAX_QUERY_FIELDS} query parameters") from None
    data = {
        key: values if key in _LIST_FIELDS else values[-1]
        for key, values in multi.items()
        if key in UploadQuery.model_fields
    }
    return UploadQuery.model_validate(data)


def _answer(response: Any) -> tuple[int, Any]:
    return int(response.status_code), json.loads(str(response.body))


def _invalid(error: ValidationError) -> tuple[int, Any]:
    """The API's 400 for request validation, locations under `query`."""
    errors = [{**e, "loc": ("query", *e["loc"])} for e in error.errors(include_input=False)]
    return _answer(validation_response(RequestValidationError(errors)))


def firmware_streaming_routes(firmware: FirmwareService) -> dict[tuple[str, str], StreamingRoute]:
    """The streaming routes to give `ApiHttpServer` for `firmware`."""

    def upload(stream: ByteStream, length: int, headers: Mapping[str, str]) -> tuple[int, Any]:
        received = _header(headers, "Content-Type")
        principal = _header(headers, PRINCIPAL_HEADER) or ""
        if is_form(received):  # the PRD's multipart form, streamed the same way
            if length > firmware.max_size + FORM_OVERHEAD:
                raise too_large(firmware.max_size)  # before reading a byte of it
            try:
                result = upload_form(firmware, stream, received or "", principal)
            except RequestValidationError as error:
                return _answer(validation_response(error))
            return uploaded_status(result), uploaded_out(result).model_dump(mode="json")
        if not accepts_raw(received):
            return _answer(
                error_response(
                    415,
                    f"unsupported content type {(received or '')[:100]!r}: "
                    f"send the package as {RAW_CONTENT_TYPE}",
                    "unsupported_media_type",
                )
            )
        try:
            query = parse_upload_query(_header(headers, QUERY_HEADER) or "")
        except ValidationError as error:
            return _invalid(error)
        if length > firmware.max_size:
            raise too_large(firmware.max_size)  # before reading a byte of it
        result = upload_raw(firmware, stream, query, _header(headers, PRINCIPAL_HEADER) or "")
        return uploaded_status(result), uploaded_out(result).model_dump(mode="json")

    return {("POST", FIRMWARE_PATH): upload}
