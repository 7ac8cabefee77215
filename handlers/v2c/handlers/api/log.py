"""The API's one structured (JSON) logger, shared by its modules (PRD NFR-6)."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from v2c.handlers.api.services import SERVICE_NAME

logger = Logger(service=SERVICE_NAME)
