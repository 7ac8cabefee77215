"""Credentials the API integration tests serve and send (see `api_fixtures`)."""

from __future__ import annotations

API_KEY = "integration-key-5f1c"
TOKEN = "integration-token-9a7e"
AUTH_HEADERS = {"X-API-Key": API_KEY}
