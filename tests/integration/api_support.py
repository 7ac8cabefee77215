"""Credentials the API integration tests serve and send (see `api_fixtures`).

`API_KEY` (and `TOKEN`) may do everything but approve; approving is the
separate approver's, as in a deployment (`v2c.handlers.api.roles`)."""

from __future__ import annotations

API_KEY = "integration-key-5f1c"
TOKEN = "integration-token-9a7e"
AUTH_HEADERS = {"X-API-Key": API_KEY}
PRINCIPAL = "integration"
APPROVER_KEY = "integration-approver-3b8d"
APPROVER_HEADERS = {"X-API-Key": APPROVER_KEY}
APPROVER = "integration-approver"
VIEWER_KEY = "integration-viewer-71ac"
VIEWER_HEADERS = {"X-API-Key": VIEWER_KEY}
BOTH_KEY = "integration-both-c44e"  # fleet manager and approver in one principal
BOTH = "integration-both"
ALL_BUT_APPROVE = "viewer+fleet_manager+operator"
API_KEYS = [
    f"{PRINCIPAL}:{ALL_BUT_APPROVE}:{API_KEY}",
    f"{APPROVER}:approver:{APPROVER_KEY}",
    f"integration-viewer:viewer:{VIEWER_KEY}",
    f"{BOTH}:fleet_manager+approver:{BOTH_KEY}",
]
TOKENS = [f"{PRINCIPAL}-bearer:{ALL_BUT_APPROVE}:{TOKEN}"]
