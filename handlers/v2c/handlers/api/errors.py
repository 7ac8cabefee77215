"""Every failure the API answers, as one JSON shape: `{"detail", "reason", ...}`.

The PRD wants a JSON `detail` on every error; `reason` adds the stable,
machine-readable word of `v2c.contract.errors` (the same word DLQ records
and metrics use). The mapping, in one place:

| raised | status | detail |
|---|---|---|
| `V2CError` with a status below 500 | its `http_status` | its message |
| `TransientError`, `ServiceNotConfigured` | its status (503; 429) | fixed text (1) |
| any other `V2CError` (`ConfigurationError`...) | 500 | fixed text (2) |
| request validation (`RequestValidationError`) | 400 | `path: message` (3) |
| a JSON body that is not UTF-8 | 400 | fixed text |
| unsupported request `Content-Type` | 415 | the type received |
| no route for the path | 404 | "not found" |
| a route for the path, not for the method | 405 | with an `Allow` header |
| a route's answer outside its declared model | 500 | fixed text (2) |
| anything else | 500 | fixed text (2) |

`V2CError` statuses: `InvalidInput` 400, `NotAuthorized` 401, `NotFound`
404, `Conflict` 409, `PayloadTooLarge` 413, `SigningUnavailable` and other
`TransientError`s 503, `Throttled` 429, any subclass's own `http_status`
(a 422 class for "checksum mismatch").

(1) From the reason, e.g. "signing unavailable; retry later": the message
may name internals (an ARN, a host), so it is logged, not sent.
(2) "internal server error"; the exception is logged with its traceback.
(3) Each failing field as `path: message` (`name: Field required`,
`query.limit: Input should be a valid integer`), joined by `; `, plus
`errors`: `[{loc, type, msg}]`. Input values are never echoed.

Why 400 and not Powertools' default 422 for request validation: the PRD
reserves 422 for a well-formed request whose content fails a deeper check
("checksum mismatch"), and lists 400 for "invalid format". A route raises a
`V2CError` whose `http_status` is 422 for that case.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)
from pydantic import BaseModel, ConfigDict, Field

from v2c.contract.errors import TransientError, V2CError
from v2c.handlers.api.log import logger
from v2c.handlers.api.services import ServiceNotConfigured

if TYPE_CHECKING:
    from v2c.handlers.api.app import OtaApi

INTERNAL_ERROR: Final = "internal server error"
_EXTRA_ATTRIBUTES: Final = ("field", "position", "expected")
_MAX_DETAIL: Final = 2000


class FieldError(BaseModel):
    """One failing request field (400 answers to validation errors)."""

    loc: list[str | int] = Field(description="where: body/query/path/header, then the field path")
    type: str = Field(description="pydantic's error type, e.g. missing, string_too_long")
    msg: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(title="Error")

    detail: str = Field(description="what went wrong, for a person")
    reason: str = Field(description="a stable machine-readable word, e.g. not_found, conflict")
    errors: list[FieldError] | None = Field(default=None, description="400: each failing field")
    field: str | None = Field(default=None, description="the field at fault, when one is")
    position: int | None = Field(default=None, description="1-based position in a filter text")
    expected: str | None = Field(default=None, description="what the filter grammar expected")


def error_response(
    status: int,
    detail: str,
    reason: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response[str]:
    """An error answer in the one error shape."""
    body = ErrorBody(detail=detail[:_MAX_DETAIL], reason=reason, **extra)
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(exclude_none=True),
        headers=dict(headers or {}),
    )


def _reason_from_status(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def v2c_error_response(error: V2CError) -> Response[str]:
    """A `V2CError` answered with its own status; see the module table."""
    status = error.http_status
    if isinstance(error, (TransientError, ServiceNotConfigured)):
        logger.warning(
            "dependency unavailable", extra={"reason": error.reason, "error": error.detail}
        )
        return error_response(
            status, f"{error.reason.replace('_', ' ')}; retry later", error.reason
        )
    if status >= 500:
        logger.exception("internal error", extra={"reason": error.reason})
        return error_response(status, INTERNAL_ERROR, error.reason)
    extra = {name: getattr(error, name) for name in _EXTRA_ATTRIBUTES if hasattr(error, name)}
    return error_response(status, error.detail, error.reason, **extra)


def _field_path(loc: Sequence[str | int]) -> str:
    where, *rest = loc or ("body",)
    if where == "body":
        return ".".join(map(str, rest)) or "body"
    return ".".join(map(str, (where, *rest)))


def _message(error: Mapping[str, Any]) -> str:
    if error.get("type") == "json_invalid":  # loc: ("body", character offset)
        cause = (error.get("ctx") or {}).get("error") or "not JSON"
        offset = [p for p in error.get("loc", ()) if isinstance(p, int)]
        return (
            f"invalid JSON at character {offset[0]}: {cause}"
            if offset
            else f"invalid JSON: {cause}"
        )
    return str(error.get("msg") or error.get("type") or "invalid")


def validation_response(error: RequestValidationError) -> Response[str]:
    """400, naming each failing field; the input values are never echoed."""
    fields = [
        FieldError(
            loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            type=str(e.get("type", "invalid")),
            msg=_message(e),
        )
        for e in error.errors()
    ]
    detail = "; ".join(
        f"{'body' if f.type == 'json_invalid' else _field_path(f.loc)}: {f.msg}" for f in fields
    )
    return error_response(400, detail or "invalid request", "validation_failed", errors=fields)


def undecodable_body(error: UnicodeDecodeError) -> Response[str]:
    """A JSON route sent bytes that are not UTF-8: Powertools fails decoding
    the body before validation can name a field."""
    return error_response(400, "the request body is not UTF-8 text", "invalid_input")


def install_error_handlers(app: OtaApi) -> None:
    """Register the module table's handlers on `app`."""

    def unsupported_type(error: RequestUnsupportedContentType) -> Response[str]:
        received = app.current_event.headers.get("content-type", "")
        return error_response(
            415, f"unsupported content type {received[:100]!r}", "unsupported_media_type"
        )

    def invalid_response(error: ResponseValidationError) -> Response[str]:
        logger.error(
            "route answered outside its declared model",
            extra={"path": app.current_event.path, "errors": str(error.errors())[:2000]},
        )
        return error_response(500, INTERNAL_ERROR, "internal_error")

    def service_error(error: ServiceError) -> Response[str]:
        if error.status_code >= 500:
            logger.error("service error", extra={"status": error.status_code, "error": error.msg})
            return error_response(error.status_code, INTERNAL_ERROR, "internal_error")
        reason = _reason_from_status(error.status_code)
        return error_response(error.status_code, str(error.msg), reason)

    def unexpected(error: Exception) -> Response[str]:
        logger.exception("unhandled error", extra={"error_type": type(error).__name__})
        return error_response(500, INTERNAL_ERROR, "internal_error")

    handlers: dict[type[Exception], Callable[[Any], Response[str]]] = {
        V2CError: v2c_error_response,
        RequestValidationError: validation_response,
        RequestUnsupportedContentType: unsupported_type,
        ResponseValidationError: invalid_response,
        NotFoundError: app.no_route_response,
        ServiceError: service_error,
        UnicodeDecodeError: undecodable_body,
        Exception: unexpected,
    }
    register: Any = app.exception_handler  # Powertools' decorator is untyped
    for exception, handler in handlers.items():
        register(exception)(handler)
