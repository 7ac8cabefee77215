"""Lambda function `dlq_admin`: the dead-letter operations of `v2c dlq`, for AWS.

Thin on purpose: the requests (list, show, replay, purge, depths) and their
answers are `v2c.handlers.dlq.admin`; the service over the deployed queues,
with the AWS replay paths (`dlq.redrive`), is built once per container from
the environment (`dlq.config`). It is invoked directly (console, CLI), not
by an event source, so there is no Lambda context to log from.
"""

from __future__ import annotations

from typing import Any

from v2c.handlers.dlq.admin import handle
from v2c.handlers.dlq.config import default_service


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, default_service())
