"""Firmware endpoints (PRD E1, issue #6): upload, list, get, download URL, lifecycle.

Uploads come in three ways (see `v2c.handlers.api.firmware_models`):

* `POST /firmware` as the PRD documents it (E1-US1): `multipart/form-data`
  with a `metadata` JSON part and a `file` part (`firmware_form`), read as
  a stream, with the raw upload's limits, checks and answers.
* `POST /firmware`: the package as the raw body, metadata in the query.
  Behind API Gateway up to 4 MiB (the route below). Locally the HTTP
  adapter hands this method and path to a streaming route instead
  (`v2c.infra.local.firmware_streaming`), which takes the same request up to
  500 MB and answers the same way. API Gateway must list
  `application/octet-stream` among its binary media types, or it passes
  the body on as text and the bytes are lost.
* `POST /firmware-uploads` (metadata as JSON) answers a presigned PUT URL;
  after the PUT, `POST /firmware-uploads/{token}/complete` verifies and
  registers the package. No size limit but the registry's (500 MB).

All answer 201 with the record, or 200 with `created: false` when the
identical package was registered before (the id is deterministic,
BR-OTA-004). The lifecycle commands (`deprecate`, `recall`, `DELETE`)
answer the record as it is afterwards; each refuses with 409 while an
active campaign deploys the package, unless `force`.
"""

from __future__ import annotations

import base64
import io
from typing import Annotated, Any, Final

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import Field, ValidationError

from v2c.contract.errors import PayloadTooLarge
from v2c.handlers.api.app import OtaApi
from v2c.handlers.api.auth import header
from v2c.handlers.api.firmware_form import (
    FILE_PART,
    FORM_CONTENT_TYPE,
    FORM_OVERHEAD,
    is_form,
    upload_form,
)
from v2c.handlers.api.firmware_models import (
    FIRMWARE_PATH,
    INLINE_MAX_BYTES,
    RAW_CONTENT_TYPE,
    UPLOADS_PATH,
    Description,
    DeviceModel,
    DownloadOut,
    Filename,
    FirmwareList,
    FirmwareOut,
    FirmwareUploaded,
    HardwareId,
    Manufacturer,
    Md5,
    MinVersion,
    Name,
    Reason,
    Sha256,
    StatusChange,
    Tag,
    UploadComplete,
    UploadQuery,
    UploadRequest,
    UploadTicketOut,
    Version,
    accepts_raw,
    download_out,
    firmware_out,
    ticket_out,
    upload_raw,
    uploaded_out,
    uploaded_status,
)
from v2c.handlers.api.pagination import (
    CursorField,
    QueryValue,
    decode_cursor,
    encode_cursor,
    page_headers,
    query_digest,
)
from v2c.handlers.api.services import ApiServices, require
from v2c.handlers.ota.firmware.model import MAX_METADATA_JSON, MAX_TAGS, FirmwareStatus
from v2c.handlers.ota.firmware.service import MAX_LIST_LIMIT, MAX_URL_TTL_S, FirmwareService
from v2c.handlers.ota.firmware.uploads import URL_TTL_S

# A firmware list's position: how many newest-first matches came before.
CURSOR_FIELDS: Final = {"o": CursorField(int, high=1_000_000)}

FirmwareId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="firmware id")]
UploadToken = Annotated[
    str, Path(pattern="^[0-9a-fA-F]{32}$", description="the upload_token of POST /firmware-uploads")
]
TAGS: Final = ["firmware"]
UPLOADED_RESPONSES: Final[dict[int, OpenAPIResponse]] = {
    201: {"description": "Registered"},
    200: {"description": "Already registered with identical content (`created: false`)"},
}
RAW_BODY: Final = {
    "description": (
        f"The package itself ({RAW_CONTENT_TYPE}; the metadata in the query, where name, "
        "version, device_model, manufacturer and filename are then required), or the PRD's "
        f"form ({FORM_CONTENT_TYPE}: a `metadata` part, the JSON of POST /firmware-uploads "
        "whose filename defaults to the file part's and which may carry checksum_md5 and "
        f"checksum_sha256, then the `{FILE_PART}` part, last). Behind API Gateway at most "
        f"{INLINE_MAX_BYTES} bytes of package (use POST /firmware-uploads beyond); the local "
        "adapter streams either form up to the registry's 500 MB."
    ),
    "required": True,
    "content": {
        RAW_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
        FORM_CONTENT_TYPE: {
            "schema": {
                "type": "object",
                "required": ["metadata", FILE_PART],
                "properties": {
                    "metadata": {"type": "string", "description": "a JSON object"},
                    "checksum_md5": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                    "checksum_sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                    FILE_PART: {"type": "string", "format": "binary"},
                },
            },
            "encoding": {"metadata": {"contentType": "application/json"}},
        },
    },
}
_RAW_ONLY: Final = " (raw upload only; required there)"


class FirmwareDetail(FirmwareOut):
    """A package with its quality figure (E1-US2 AC2, BR-OTA-010)."""

    success_rate: float | None = Field(
        description=(
            "completed / (completed + failed) in percent over the package's updates, in and "
            "outside campaigns (BR-OTA-041); null while none finished"
        )
    )


def raw_query(**given: Any) -> UploadQuery:
    """The raw upload's query as `UploadQuery`: its parameters are optional
    in the route (a form upload has none), required here, with the API's
    400 naming each missing one under `query`."""
    try:
        return UploadQuery.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as error:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in error.errors(include_input=False)]
        raise RequestValidationError(errors) from None


def register(app: OtaApi, services: ApiServices) -> None:
    def principal() -> str:
        who = app.context.get("principal")
        return str(getattr(who, "id", "")) if who is not None else ""

    def firmware() -> FirmwareService:
        return require(services.firmware, "firmware")

    @app.post(
        FIRMWARE_PATH,
        status_code=201,
        tags=TAGS,
        summary="Upload a package (multipart form, or raw body with the metadata in the query)",
        responses=UPLOADED_RESPONSES,
        openapi_extensions={"requestBody": RAW_BODY},
    )
    def upload_firmware(
        name: Annotated[Name | None, Query(description="BR-OTA-006" + _RAW_ONLY)] = None,
        version: Annotated[Version | None, Query(description="semver" + _RAW_ONLY)] = None,
        device_model: Annotated[DeviceModel | None, Query(description="no ':'" + _RAW_ONLY)] = None,
        manufacturer: Annotated[Manufacturer | None, Query(description=_RAW_ONLY[2:-1])] = None,
        filename: Annotated[
            Filename | None, Query(description="the extension is the format" + _RAW_ONLY)
        ] = None,
        description: Annotated[Description, Query()] = "",
        is_beta: Annotated[bool, Query()] = False,
        is_security_update: Annotated[bool, Query()] = False,
        tags: Annotated[list[Tag] | None, Query(max_length=MAX_TAGS)] = None,
        metadata: Annotated[
            str,
            Query(max_length=MAX_METADATA_JSON, description="free-form metadata: a JSON object"),
        ] = "",
        hardware_id: Annotated[HardwareId, Query()] = "",
        min_installed_version: Annotated[MinVersion, Query()] = "",
        checksum_md5: Annotated[Md5 | None, Query()] = None,
        checksum_sha256: Annotated[Sha256 | None, Query()] = None,
    ) -> Response[FirmwareUploaded]:
        service = firmware()
        event = app.current_event
        content_type = header(event.raw_event, "Content-Type")
        form = is_form(content_type)
        if not form and not accepts_raw(content_type):
            raise RequestUnsupportedContentType(
                f"send the package as {RAW_CONTENT_TYPE} or as the form {FORM_CONTENT_TYPE}",
                errors=[{"type": "unsupported_content_type", "loc": ("body",)}],
            )
        text = event.body or ""
        data = base64.b64decode(text) if event.is_base64_encoded else text.encode("utf-8")
        if len(data) > INLINE_MAX_BYTES + (FORM_OVERHEAD if form else 0):
            raise PayloadTooLarge(
                f"a package over {INLINE_MAX_BYTES} bytes cannot pass through the API's "
                f"request: POST {UPLOADS_PATH} for a presigned upload URL instead"
            )
        if form:
            result = upload_form(
                service,
                io.BytesIO(data),
                content_type or "",
                principal(),
                file_cap=INLINE_MAX_BYTES,
            )
        else:
            query = raw_query(
                name=name,
                version=version,
                device_model=device_model,
                manufacturer=manufacturer,
                filename=filename,
                description=description,
                is_beta=is_beta,
                is_security_update=is_security_update,
                tags=tags or [],
                metadata=metadata,
                hardware_id=hardware_id,
                min_installed_version=min_installed_version,
                checksum_md5=checksum_md5,
                checksum_sha256=checksum_sha256,
            )
            result = upload_raw(service, io.BytesIO(data), query, principal())
        return Response(
            uploaded_status(result), content_types.APPLICATION_JSON, uploaded_out(result)
        )

    @app.post(
        UPLOADS_PATH,
        status_code=201,
        tags=TAGS,
        summary="Begin a two-step upload: a presigned PUT URL for the package",
    )
    def begin_upload(body: UploadRequest) -> UploadTicketOut:
        ticket = firmware().begin_upload(
            body.firmware_metadata(), filename=body.filename, uploaded_by=principal()
        )
        return ticket_out(ticket)

    @app.post(
        f"{UPLOADS_PATH}/<upload_token>/complete",
        status_code=201,
        tags=TAGS,
        summary="Complete a two-step upload: verify the PUT package and register it",
        responses=UPLOADED_RESPONSES,
    )
    def complete_upload(
        upload_token: UploadToken, body: UploadComplete | None = None
    ) -> Response[FirmwareUploaded]:
        checks = body or UploadComplete()
        result = firmware().complete_upload(
            upload_token,
            provided_md5=checks.checksum_md5,
            provided_sha256=checks.checksum_sha256,
        )
        return Response(
            uploaded_status(result), content_types.APPLICATION_JSON, uploaded_out(result)
        )

    @app.get(
        FIRMWARE_PATH,
        tags=TAGS,
        summary="List firmware, newest first (cursor pagination, Link header)",
        description=(
            'Follow `next_cursor` (or the `Link` header\'s `rel="next"`) until it is null; '
            "a cursor is valid with the filters it was made for only (400 otherwise)."
        ),
    )
    def list_firmware(
        device_model: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        manufacturer: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        is_beta: Annotated[bool | None, Query()] = None,
        is_security_update: Annotated[bool | None, Query()] = None,
        status: Annotated[FirmwareStatus | None, Query()] = None,
        include_deleted: Annotated[bool, Query()] = False,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
        cursor: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> Response[FirmwareList]:
        params: dict[str, QueryValue] = {
            "device_model": device_model,
            "manufacturer": manufacturer,
            "is_beta": is_beta,
            "is_security_update": is_security_update,
            "status": status.value if status is not None else None,
            "include_deleted": include_deleted or None,
        }
        digest = query_digest(params)
        start = 0
        if cursor is not None:
            position = decode_cursor(cursor, CURSOR_FIELDS, query=digest, required=("o",))
            start = int(position["o"])
        page = firmware().list(
            device_model,
            manufacturer=manufacturer,
            is_beta=is_beta,
            is_security_update=is_security_update,
            status=status,
            include_deleted=include_deleted,
            limit=limit,
            offset=start,
        )
        after = start + len(page.items)
        next_cursor = encode_cursor({"o": after}, digest) if after < page.total else None
        body = FirmwareList(
            items=[firmware_out(r) for r in page.items],
            total=page.total,
            limit=page.limit,
            next_cursor=next_cursor,
        )
        headers = page_headers({**params, "limit": limit}, next_cursor)
        return Response(200, content_types.APPLICATION_JSON, body, headers=headers)

    @app.get(
        f"{FIRMWARE_PATH}/<firmware_id>",
        tags=TAGS,
        summary="Get a firmware package, with its download count and success rate",
    )
    def get_firmware(firmware_id: FirmwareId) -> FirmwareDetail:
        record = firmware().get(firmware_id)
        stats = services.stats
        rate = stats.firmware_success_rate(firmware_id) if stats is not None else None
        return FirmwareDetail(**firmware_out(record).model_dump(), success_rate=rate)

    @app.get(
        f"{FIRMWARE_PATH}/<firmware_id>/download",
        tags=TAGS,
        summary="A time-limited download URL and the checksums to verify",
        openapi_extensions={"x-v2c-errors": [409]},  # recalled
    )
    def download_firmware(
        firmware_id: FirmwareId,
        expires_in: Annotated[
            int, Query(ge=1, le=MAX_URL_TTL_S, description="seconds the URL stays valid")
        ] = URL_TTL_S,
    ) -> DownloadOut:
        return download_out(firmware().download(firmware_id, expires_s=expires_in))

    @app.delete(
        f"{FIRMWARE_PATH}/<firmware_id>",
        tags=TAGS,
        summary="Delete a package (soft: kept for audit, reads answer 404)",
    )
    def delete_firmware(
        firmware_id: FirmwareId,
        force: Annotated[bool, Query(description="also while an active campaign uses it")] = False,
        reason: Annotated[Reason, Query()] = "",
    ) -> FirmwareOut:
        record = firmware().delete(firmware_id, reason=reason, force=force, actor=principal())
        return firmware_out(record)

    @app.post(
        f"{FIRMWARE_PATH}/<firmware_id>/deprecate",
        tags=TAGS,
        summary="Deprecate a package (not for new deployments; still downloadable)",
    )
    def deprecate_firmware(
        firmware_id: FirmwareId, body: StatusChange | None = None
    ) -> FirmwareOut:
        change = body or StatusChange()
        record = firmware().deprecate(
            firmware_id, reason=change.reason, force=change.force, actor=principal()
        )
        return firmware_out(record)

    @app.post(
        f"{FIRMWARE_PATH}/<firmware_id>/recall",
        tags=TAGS,
        summary="Recall a package (neither deployable nor downloadable)",
    )
    def recall_firmware(firmware_id: FirmwareId, body: StatusChange | None = None) -> FirmwareOut:
        change = body or StatusChange()
        record = firmware().recall(
            firmware_id, reason=change.reason, force=change.force, actor=principal()
        )
        return firmware_out(record)
