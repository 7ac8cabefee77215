"""Every failure answers JSON with a `detail`; statuses as the PRD lists; internals never leak."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import pytest
from api_events import AUTH, call, make_app
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import BadRequestError
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, Field

from v2c.contract.errors import (
    ConfigurationError,
    Conflict,
    FilterSyntaxError,
    InvalidField,
    NotFound,
    SigningUnavailable,
    Throttled,
    V2CError,
)
from v2c.handlers.api import OtaApi, require


class ChecksumMismatchAtUpload(V2CError):
    reason = "checksum_mismatch"
    http_status = 422


class Campaign(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    percent: int = Field(ge=0, le=100)


class Strict(BaseModel):
    count: int


RAISED: dict[str, Exception] = {
    "not-found": NotFound("campaign c-1 not found"),
    "conflict": Conflict("campaign already started"),
    "invalid-field": InvalidField("version", "not a semantic version"),
    "filter": FilterSyntaxError("unexpected token", position=7, expected="AND or OR"),
    "checksum": ChecksumMismatchAtUpload("sha256 of the upload differs from the declared one"),
    "signing": SigningUnavailable("HSM slot 3 at arn:aws:kms:eu-1:123:key/abc timed out"),
    "throttled": Throttled("DynamoDB throttled table v2c-campaigns"),
    "config": ConfigurationError("table v2c-campaigns has the wrong key schema"),
    "bug": RuntimeError("secret internals: password=hunter2"),
    "powertools": BadRequestError("bad thing"),
}


def _routes(app: OtaApi) -> None:
    @app.get("/api/v1/test/raise/<name>")
    def raise_it(name: str) -> dict[str, Any]:
        raise RAISED[name]

    @app.post("/api/v1/test/campaigns", status_code=201)
    def create(campaign: Campaign) -> dict[str, Any]:
        return campaign.model_dump()

    @app.get("/api/v1/test/items")
    def items(limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        return {"limit": limit}

    @app.get("/api/v1/test/unwired")
    def unwired() -> dict[str, Any]:
        return require(None, "firmware")

    @app.get("/api/v1/test/broken-answer")
    def broken_answer() -> Strict:
        return {"count": "not a number"}  # type: ignore[return-value]

    @app.get("/api/v1/test/text")
    def text() -> Response[str]:
        return Response(200, content_types.TEXT_PLAIN, "ok")


@pytest.fixture
def app() -> OtaApi:
    return make_app(extra=_routes)


class TestDomainErrors:
    CASES: ClassVar = [
        ("not-found", 404, "not_found", "campaign c-1 not found"),
        ("conflict", 409, "conflict", "campaign already started"),
        ("invalid-field", 400, "validation_failed", "version: not a semantic version"),
        ("filter", 400, "invalid_target_filter", "unexpected token"),
        (
            "checksum",
            422,
            "checksum_mismatch",
            "sha256 of the upload differs from the declared one",
        ),
        ("powertools", 400, "bad_request", "bad thing"),
    ]

    @pytest.mark.parametrize(("name", "status", "reason", "detail"), CASES)
    def test_a_v2c_error_answers_its_status_reason_and_message(
        self, app: OtaApi, name: str, status: int, reason: str, detail: str
    ) -> None:
        got_status, headers, body = call(app, "GET", f"/api/v1/test/raise/{name}", headers=AUTH)
        assert (got_status, body["reason"], body["detail"]) == (status, reason, detail)
        assert headers["content-type"] == "application/json"

    def test_field_and_filter_position_travel_with_the_error(self, app: OtaApi) -> None:
        _, _, body = call(app, "GET", "/api/v1/test/raise/invalid-field", headers=AUTH)
        assert body["field"] == "version"
        _, _, body = call(app, "GET", "/api/v1/test/raise/filter", headers=AUTH)
        assert (body["position"], body["expected"]) == (7, "AND or OR")


class TestServerSideErrorsLeakNothing:
    @pytest.mark.parametrize(
        ("name", "status", "reason", "detail"),
        [
            ("signing", 503, "signing_unavailable", "signing unavailable; retry later"),
            ("throttled", 429, "throttled", "throttled; retry later"),
            ("config", 500, "configuration_error", "internal server error"),
            ("bug", 500, "internal_error", "internal server error"),
        ],
    )
    def test_the_answer_is_generic_and_the_cause_is_logged(
        self,
        app: OtaApi,
        caplog: pytest.LogCaptureFixture,
        name: str,
        status: int,
        reason: str,
        detail: str,
    ) -> None:
        got_status, _, body = call(app, "GET", f"/api/v1/test/raise/{name}", headers=AUTH)
        assert (got_status, body) == (status, {"detail": detail, "reason": reason})
        # the structured log keeps what the answer hides
        assert any(str(RAISED[name]) in str(vars(r)) for r in caplog.records)

    def test_an_unexpected_exception_is_logged_with_its_traceback(
        self, app: OtaApi, caplog: pytest.LogCaptureFixture
    ) -> None:
        call(app, "GET", "/api/v1/test/raise/bug", headers=AUTH)
        (record,) = [r for r in caplog.records if r.getMessage() == "unhandled error"]
        assert record.exc_info is not None
        assert record.exc_info[0] is RuntimeError

    def test_an_unwired_service_is_503(self, app: OtaApi) -> None:
        status, _, body = call(app, "GET", "/api/v1/test/unwired", headers=AUTH)
        assert (status, body["reason"]) == (503, "service_not_configured")

    def test_an_answer_outside_its_model_is_our_500_not_the_callers_422(self, app: OtaApi) -> None:
        status, _, body = call(app, "GET", "/api/v1/test/broken-answer", headers=AUTH)
        assert (status, body) == (
            500,
            {"detail": "internal server error", "reason": "internal_error"},
        )


class TestRequestValidation:
    def test_a_missing_body_field_is_400_naming_the_field(self, app: OtaApi) -> None:
        status, _, body = call(
            app, "POST", "/api/v1/test/campaigns", body={"percent": 5}, headers=AUTH
        )
        assert status == 400
        assert body["detail"] == "name: Field required"
        assert body["reason"] == "validation_failed"
        assert body["errors"] == [
            {"loc": ["body", "name"], "type": "missing", "msg": "Field required"}
        ]

    def test_every_failing_field_is_named_and_inputs_are_not_echoed(self, app: OtaApi) -> None:
        campaign = {"name": "x" * 21 + "SECRET", "percent": 101}
        status, _, body = call(app, "POST", "/api/v1/test/campaigns", body=campaign, headers=AUTH)
        assert status == 400
        assert [e["loc"] for e in body["errors"]] == [["body", "name"], ["body", "percent"]]
        assert body["detail"].startswith("name: String should have at most 20 characters; percent:")
        assert "SECRET" not in str(body)

    def test_a_query_parameter_is_named_with_its_location(self, app: OtaApi) -> None:
        status, _, body = call(
            app, "GET", "/api/v1/test/items", query={"limit": "many"}, headers=AUTH
        )
        assert status == 400
        assert body["detail"].startswith("query.limit: ")
        assert call(app, "GET", "/api/v1/test/items", query={"limit": "7"}, headers=AUTH)[2] == {
            "limit": 7
        }

    def test_invalid_json_is_400(self, app: OtaApi) -> None:
        headers = {**AUTH, "Content-Type": "application/json"}
        status, _, body = call(app, "POST", "/api/v1/test/campaigns", body="{nope", headers=headers)
        assert status == 400
        assert body["detail"].startswith("body")
        assert "invalid JSON" in body["detail"]

    def test_a_body_that_is_not_utf8_is_400(self, app: OtaApi) -> None:
        headers = {**AUTH, "Content-Type": "application/json"}
        status, _, body = call(
            app, "POST", "/api/v1/test/campaigns", body=b"\xff\xfe{", headers=headers
        )
        assert (status, body["reason"]) == (400, "invalid_input")

    def test_multipart_without_a_boundary_is_400_not_a_crash(self, app: OtaApi) -> None:
        headers = {**AUTH, "Content-Type": "multipart/form-data"}
        status, _, body = call(app, "POST", "/api/v1/test/campaigns", body="{}", headers=headers)
        assert (status, body["reason"]) == (400, "invalid_input")

    def test_an_unsupported_content_type_is_415(self, app: OtaApi) -> None:
        headers = {**AUTH, "Content-Type": "text/csv"}
        status, _, body = call(app, "POST", "/api/v1/test/campaigns", body="a,b", headers=headers)
        assert (status, body["reason"]) == (415, "unsupported_media_type")


class TestRouting:
    def test_an_unknown_path_is_a_json_404(self, app: OtaApi) -> None:
        status, headers, body = call(app, "GET", "/api/v1/test/nothing", headers=AUTH)
        assert (status, body) == (404, {"detail": "not found", "reason": "not_found"})
        assert headers["content-type"] == "application/json"

    def test_a_known_path_under_another_method_is_405_with_allow(self, app: OtaApi) -> None:
        status, headers, body = call(app, "DELETE", "/api/v1/test/campaigns", headers=AUTH)
        assert status == 405
        assert headers["allow"] == "POST"
        assert body["reason"] == "method_not_allowed"
        status, headers, _ = call(app, "PUT", "/health")
        assert (status, headers["allow"]) == (405, "GET")

    def test_a_non_json_answer_passes_through(self, app: OtaApi) -> None:
        result = app.resolve(
            {"httpMethod": "GET", "path": "/api/v1/test/text", "headers": AUTH, "body": None},
            None,
        )
        assert (result["statusCode"], result["body"]) == (200, "ok")
