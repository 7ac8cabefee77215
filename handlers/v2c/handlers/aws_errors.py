"""botocore's errors as the hierarchy's (`v2c.contract.errors`), in one place.

Every AWS adapter of the handlers (DynamoDB repositories and the telemetry
store, the S3 and SQS dead-letter stores, the firmware storage) catches
`BotoCoreError`/`ClientError` at its boundary and raises what this module
makes of it, so a service, a DLQ record or an API answer sees only `reason`s
it knows: `throttled` (429, retry later), `dependency_unavailable` (503, retry
then dead-letter for replay) or, where the adapter says the code means the
data itself was refused, `invalid_input` (400, the same bytes fail again).
Three adapters used to keep three code tables that had drifted apart (one
knew `TransactionInProgressException`, one `ValidationException`).

Which codes are worth a retry is decided here too (`retryable`), for the one
store that retries on its own (`telemetry.store.RetryPolicy`); everywhere
else botocore's standard retries (`aws_clients`) have already run.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import InvalidInput, Throttled, TransientError, V2CError

# The service is over its rate: the same request succeeds a little later.
THROTTLING_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "SlowDown",
        "TooManyRequestsException",
        "TransactionInProgressException",
    }
)
# The service failed on its side: worth another attempt.
SERVER_CODES: Final = frozenset(
    {"InternalServerError", "InternalFailure", "ServiceUnavailable", "InternalError"}
)
# A DynamoDB write whose condition did not hold: a lost race, not a failure.
CONDITION_FAILED: Final = "ConditionalCheckFailedException"
# DynamoDB refused the request itself (an item over 400 KB, a bad expression).
VALIDATION: Final = "ValidationException"
# An S3 object (or version) that is not there: GET answers NoSuchKey, HEAD a bare 404.
S3_MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion"})


def error_code(exc: BaseException) -> str:
    """The service's error code (`ThrottlingException`, `NoSuchKey`, ...);
    "" for a connection or client-side error, which has none."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_condition_failure(exc: ClientError) -> bool:
    """A conditional write lost (alone or inside a cancelled transaction)."""
    code = error_code(exc)
    if code == CONDITION_FAILED:
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons", [])
        codes = {str(r.get("Code", "")) for r in reasons}
        if codes:
            return "ConditionalCheckFailed" in codes
        return "ConditionalCheckFailed" in str(exc)
    return False


def retryable(exc: BaseException) -> bool:
    """Worth another attempt: throttled, a server-side failure, or no answer at all."""
    if isinstance(exc, ClientError):
        return error_code(exc) in THROTTLING_CODES | SERVER_CODES
    return isinstance(exc, BotoCoreError)


def translate(action: str, exc: BaseException, *, refused: Collection[str] = ()) -> V2CError:
    """The error to raise when AWS could not do `action` ("reading a campaign",
    "DynamoDB PutItem"). `refused` names the codes that mean, for this
    adapter, that the request's data was wrong rather than the service."""
    code = error_code(exc)
    if code in THROTTLING_CODES:
        return Throttled(f"{action} throttled ({code})")
    if code and code in refused:
        return InvalidInput(f"{action} refused: {exc}")
    return TransientError(f"{action} failed: {exc}")
