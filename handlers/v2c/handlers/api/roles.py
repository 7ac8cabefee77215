"""Who may do what: the roles a credential carries and the role each route needs.

A credential (see `v2c.handlers.api.auth`) names a principal and one or more
roles. A route is allowed to a caller holding any one of its roles:

| route | roles |
|---|---|
| every `GET` but the DLQ's (firmware, campaigns, devices, ...) | any role |
| `POST`/`DELETE` firmware: upload, deprecate, recall, delete | fleet_manager |
| `POST` campaigns: create, start, pause, resume, cancel, rollback | fleet_manager |
| `POST` devices and updates: update, bulk, rollback, cancel, retry | fleet_manager |
| `POST`/`PATCH`/`DELETE` vehicles: register, bulk, edit, decommission | fleet_manager |
| `POST /api/v1/ota/campaigns/{id}/approve` | approver, not the creator |
| `POST /api/v1/ota/campaigns/{id}/reject` | approver |
| `GET /api/v1/dlq/{queue}`, `GET /api/v1/dlq/{queue}/records/{record_id}` (payload) | operator |
| `POST /api/v1/dlq/{queue}/replay` | operator |
| `/health`, `/api/v1/openapi.json`, `/dashboard` and its assets | public, no credential |

("any role": viewer, fleet_manager, approver or operator.)

`GET /api/v1/me` tells a caller its own roles and, per command, whether
they allow it (`PERMISSIONS`, `permissions`): computed from `allowed_roles`
on the very route templates the server authorizes, so a page that hides
the buttons it may not press can never disagree with the 403s. The
approver-not-creator rule depends on the campaign and stays the server's.

Rules, so that a route added later is safe by default: a route the table
below does not name needs any role for a safe method (GET, HEAD, OPTIONS)
and `fleet_manager` for any other. Separation of duties is the approver
rule: the approver is the authenticated principal, and the principal that
created a campaign cannot approve it, whatever roles it holds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    VIEWER = "viewer"  # reads everything but dead letters
    FLEET_MANAGER = "fleet_manager"  # firmware, campaigns, device updates
    APPROVER = "approver"  # approves campaigns that require approval
    OPERATOR = "operator"  # dead-letter queues: list and replay


ANY_ROLE: Final = frozenset(Role)
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
DLQ_PREFIX: Final = "/api/v1/dlq"

ROUTE_ROLES: Final[dict[tuple[str, str], frozenset[Role]]] = {
    ("POST", "/api/v1/ota/campaigns/<campaign_id>/approve"): frozenset({Role.APPROVER}),
    ("POST", "/api/v1/ota/campaigns/<campaign_id>/reject"): frozenset({Role.APPROVER}),
    ("GET", f"{DLQ_PREFIX}/<queue>"): frozenset({Role.OPERATOR}),
    ("GET", f"{DLQ_PREFIX}/<queue>/records/<record_id>"): frozenset({Role.OPERATOR}),
    ("POST", f"{DLQ_PREFIX}/<queue>/replay"): frozenset({Role.OPERATOR}),
}
"""Routes (method, Powertools path template) whose roles differ from the default."""


def allowed_roles(method: str, template: str) -> frozenset[Role]:
    """The roles that may call `method` on the route registered as `template`."""
    method = method.upper()
    explicit = ROUTE_ROLES.get((method, template))
    if explicit is not None:
        return explicit
    return ANY_ROLE if method in SAFE_METHODS else frozenset({Role.FLEET_MANAGER})


CAMPAIGN_ROUTE: Final = "/api/v1/ota/campaigns/<campaign_id>"
PERMISSIONS: Final[dict[str, tuple[str, str]]] = {
    "campaign.start": ("POST", f"{CAMPAIGN_ROUTE}/start"),
    "campaign.pause": ("POST", f"{CAMPAIGN_ROUTE}/pause"),
    "campaign.resume": ("POST", f"{CAMPAIGN_ROUTE}/resume"),
    "campaign.cancel": ("POST", f"{CAMPAIGN_ROUTE}/cancel"),
    "campaign.approve": ("POST", f"{CAMPAIGN_ROUTE}/approve"),
    "campaign.reject": ("POST", f"{CAMPAIGN_ROUTE}/reject"),
    "campaign.rollback": ("POST", f"{CAMPAIGN_ROUTE}/rollback"),
    "dlq.read": ("GET", f"{DLQ_PREFIX}/<queue>"),
    "dlq.replay": ("POST", f"{DLQ_PREFIX}/<queue>/replay"),
}
"""Each permission `GET /api/v1/me` reports, as the (method, route template)
it stands for (a unit test checks every template is a registered route)."""


def permissions(roles: frozenset[Role]) -> dict[str, bool]:
    """Per permission, whether `roles` may call its route (`allowed_roles`)."""
    return {
        name: bool(roles & allowed_roles(method, template))
        for name, (method, template) in PERMISSIONS.items()
    }


_SEPARATORS: Final = str.maketrans(",+[]", "    ")


def parse_roles(values: object) -> frozenset[Role]:
    """Known roles from a list or a string of words separated by spaces, commas
    or `+` (Cognito's `[a b]` too); unknown words are dropped (an authorizer's
    groups may hold other things)."""
    if isinstance(values, str):
        words = values.translate(_SEPARATORS).split()
    elif isinstance(values, list | tuple | set | frozenset):
        words = [str(v) for v in values]
    else:
        return frozenset()
    known = {role.value for role in Role}
    return frozenset(Role(w.strip()) for w in words if w.strip() in known)
