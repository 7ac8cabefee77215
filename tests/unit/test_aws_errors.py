"""The one botocore translator: every class of AWS error becomes the hierarchy's."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from v2c.contract.errors import InvalidInput, Throttled, TransientError
from v2c.handlers.aws_errors import (
    SERVER_CODES,
    THROTTLING_CODES,
    error_code,
    is_condition_failure,
    retryable,
    translate,
)


def client_error(code: str, **response: object) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, **response}, "Op")  # type: ignore[arg-type]


CONNECTION_ERRORS: list[BotoCoreError] = [
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
]


@pytest.mark.parametrize("code", sorted(THROTTLING_CODES))
def test_throttling_is_throttled_and_retried(code: str) -> None:
    exc = client_error(code)
    error = translate("DynamoDB PutItem", exc)
    assert type(error) is Throttled
    assert (error.reason, error.http_status, error.retryable) == ("throttled", 429, True)
    assert code in str(error)
    assert retryable(exc)


@pytest.mark.parametrize("code", sorted(SERVER_CODES))
def test_a_server_failure_is_transient_and_retried(code: str) -> None:
    exc = client_error(code)
    error = translate("reading a campaign", exc)
    assert type(error) is TransientError
    assert (error.reason, error.http_status) == ("dependency_unavailable", 503)
    assert retryable(exc)


@pytest.mark.parametrize("exc", CONNECTION_ERRORS, ids=lambda e: type(e).__name__)
def test_no_answer_at_all_is_transient_and_retried(exc: BotoCoreError) -> None:
    error = translate("dead-letter store put", exc)
    assert type(error) is TransientError
    assert error_code(exc) == ""
    assert retryable(exc)


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "ResourceNotFoundException", "NoSuchBucket"]
)
def test_any_other_code_is_transient_but_not_retried_here(code: str) -> None:
    exc = client_error(code)
    assert type(translate("x", exc)) is TransientError
    assert not retryable(exc)


def test_a_refused_request_is_invalid_input_only_where_the_adapter_says_so() -> None:
    exc = client_error("ValidationException")
    assert type(translate("DynamoDB PutItem", exc, refused={"ValidationException"})) is InvalidInput
    assert type(translate("reading a campaign", exc)) is TransientError
    assert not retryable(exc)


def test_a_lost_condition_is_recognised_alone_and_in_a_transaction() -> None:
    assert is_condition_failure(client_error("ConditionalCheckFailedException"))
    cancelled = client_error(
        "TransactionCanceledException",
        CancellationReasons=[{"Code": "None"}, {"Code": "ConditionalCheckFailed"}],
    )
    assert is_condition_failure(cancelled)
    conflict = client_error(
        "TransactionCanceledException", CancellationReasons=[{"Code": "TransactionConflict"}]
    )
    assert not is_condition_failure(conflict)
    assert not is_condition_failure(client_error("ThrottlingException"))


def test_the_code_of_a_client_error() -> None:
    assert error_code(client_error("NoSuchKey")) == "NoSuchKey"
    assert error_code(ValueError("not botocore")) == ""
