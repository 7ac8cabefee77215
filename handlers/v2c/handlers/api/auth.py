"""Who is calling, and with which roles: an API key (`X-API-Key`) or a bearer token.

The PRD's API takes `X-API-Key: <key>` or `Authorization: Bearer <token>`.
Both are opaque secrets, configured per deployment (`from_env`), each with
the principal it stands for and the roles it carries (`v2c.handlers.api.roles`):

| variable | meaning |
|---|---|
| V2C_API_KEYS | API key credentials (format below) |
| V2C_API_TOKENS | bearer token credentials (same format) |
| V2C_API_TRUST_AUTHORIZER | `1`: accept a request API Gateway's authorizer already accepted |

Format, either of:

* compact: comma-separated `principal:role[+role...]:secret`, e.g.
  `alice:fleet_manager:sha256:9f86d0...,bob:approver+viewer:s3cret`;
* JSON (the value starts with `[`): `[{"principal": "alice", "roles":
  ["fleet_manager"], "key": "sha256:9f86d0..."}]`.

A principal is 1-100 of `A-Z a-z 0-9 . _ @ -`; roles are `viewer`,
`fleet_manager`, `approver`, `operator` (an unknown role is a configuration
error, so a typo cannot silently drop a permission); the secret is the key
itself or `sha256:<64 hex digits>`, its SHA-256, so a deployed function's
environment need not hold the secret (and a secret may not contain `,` in
the compact form). An entry without a principal and roles is refused: a
credential that names nobody cannot be audited. Only digests are kept in
memory; a presented credential is hashed and compared with every digest by
`hmac.compare_digest`, without an early exit, so neither the comparison nor
the loop tells an attacker how close a guess was.

Decisions:

* No credential configured means nobody gets in (fail closed), not open
  access: a deployment that forgot its keys answers 401, loudly logged.
  A malformed configuration raises `ConfigurationError` (the Lambda answers
  500 `configuration_error` to every request until it is fixed).
* JWTs are validated by API Gateway (PRD NFR-5), not here: with
  `V2C_API_TRUST_AUTHORIZER=1` a request whose `requestContext.authorizer`
  names a principal is accepted, with the roles of its `roles` context value
  or its `cognito:groups` / `roles` claim (list, or words separated by
  spaces or commas; unknown words ignored). Only API Gateway writes
  `requestContext`; the local HTTP adapter never copies it from the client.
* The PRD's `X-Internal-Call: true` bypass is not implemented: any client
  can send a header. Services call with an API key of their own.
* Every credential a request presents must be valid: an API key and a
  bearer token may both be sent, but one bad one refuses the request.
* `/health`, the OpenAPI document and the dashboard's files (`/dashboard`,
  `/dashboard/assets/<known name>`: they hold no data, the page sends the
  user's key with each call) are public; `/health/detailed` names
  the deployment's components and their failures, so it needs a credential.
* A missing or bad credential is 401 (`missing_credentials`,
  `invalid_credentials`); a valid one without the route's role is 403
  (`forbidden`), both in the API's `{detail, reason}` shape.

The principal (the configured name, or `authorizer:<sub>`) goes into the
resolver's context as `principal`, for audit fields such as `created_by` and
`approved_by`; it never reveals the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from v2c.contract.errors import ConfigurationError, Forbidden, NotAuthorized
from v2c.handlers.api.log import logger
from v2c.handlers.api.roles import Role, allowed_roles, parse_roles

API_KEY_HEADER: Final = "X-API-Key"
ENV_API_KEYS: Final = "V2C_API_KEYS"
ENV_API_TOKENS: Final = "V2C_API_TOKENS"
ENV_TRUST_AUTHORIZER: Final = "V2C_API_TRUST_AUTHORIZER"
HASH_PREFIX: Final = "sha256:"
REALM: Final = "v2c"
PRINCIPAL_PATTERN: Final = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")


class MissingCredentials(NotAuthorized):
    reason = "missing_credentials"


class InvalidCredentials(NotAuthorized):
    reason = "invalid_credentials"


class MissingRole(Forbidden):
    """Authenticated, but without a role the route needs (403)."""


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    method: Literal["api_key", "bearer", "authorizer"]
    roles: frozenset[Role] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Credential:
    """One configured secret: who it stands for and what it may do.
    `secret` is the secret itself or `sha256:<hex>`."""

    principal: str
    roles: frozenset[Role]
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not PRINCIPAL_PATTERN.match(self.principal):
            raise ConfigurationError(
                "a credential's principal must be 1-100 of A-Z a-z 0-9 . _ @ -"
            )
        if not self.roles:
            raise ConfigurationError(f"credential of {self.principal} carries no role")

    def entry(self) -> str:
        """The compact form (`principal:role+role:secret`)."""
        return f"{self.principal}:{'+'.join(sorted(self.roles))}:{self.secret}"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _stored_digest(secret: str) -> bytes:
    if secret.startswith(HASH_PREFIX):
        text = secret.removeprefix(HASH_PREFIX)
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise ConfigurationError(f"{HASH_PREFIX} secret is not 64 hex digits")
        return raw
    if not secret:
        raise ConfigurationError("a credential's secret is empty")
    return _digest(secret)


def _roles(words: object, where: str) -> frozenset[Role]:
    if isinstance(words, str):
        names = [w for w in words.split("+") if w]
    elif isinstance(words, list):
        names = [str(w) for w in words]
    else:
        raise ConfigurationError(f"{where}: roles must be a list")
    unknown = sorted({n for n in names if n not in {r.value for r in Role}})
    if unknown:
        known = ", ".join(r.value for r in Role)
        raise ConfigurationError(f"{where}: unknown role {unknown[0]!r} (known: {known})")
    return parse_roles(names)


def parse_credentials(value: str | None, variable: str = ENV_API_KEYS) -> list[Credential]:
    """The credentials of one variable's value (see the module docstring).
    Errors name the entry by position, never its secret."""
    text = (value or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigurationError(f"{variable} is not valid JSON") from None
        if not isinstance(data, list):
            raise ConfigurationError(f"{variable} must be a JSON list")
        result: list[Credential] = []
        for number, item in enumerate(data, 1):
            where = f"{variable} entry {number}"
            if not isinstance(item, dict) or not isinstance(item.get("principal"), str):
                raise ConfigurationError(f"{where} needs principal, roles and key")
            secret = item.get("key", item.get("token"))
            if not isinstance(secret, str):
                raise ConfigurationError(f"{where} needs principal, roles and key")
            roles = _roles(item.get("roles"), where)
            result.append(Credential(item["principal"], roles, secret))
        return result
    credentials: list[Credential] = []
    for number, entry in enumerate((e.strip() for e in text.split(",")), 1):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3:
            raise ConfigurationError(
                f"{variable} entry {number} is not principal:role[+role]:secret"
            )
        principal, words, secret = parts
        credentials.append(
            Credential(principal, _roles(words, f"{variable} entry {number}"), secret)
        )
    return credentials


def _as_credentials(items: Iterable[str | Credential], variable: str) -> list[Credential]:
    out: list[Credential] = []
    for item in items:
        if isinstance(item, Credential):
            out.append(item)
        elif item:
            out.extend(parse_credentials(item, variable))
    return out


@dataclass(frozen=True, slots=True)
class _Stored:
    digest: bytes
    principal: str
    roles: frozenset[Role]


def _store(credentials: list[Credential]) -> tuple[_Stored, ...]:
    stored = tuple(_Stored(_stored_digest(c.secret), c.principal, c.roles) for c in credentials)
    if len({s.digest for s in stored}) != len(stored):
        raise ConfigurationError("two credentials share one secret")
    return stored


def _match(presented: str, stored: tuple[_Stored, ...]) -> _Stored | None:
    """The credential whose digest equals the presented secret's, checked against all."""
    candidate = _digest(presented)
    found: _Stored | None = None
    for entry in stored:
        if hmac.compare_digest(candidate, entry.digest):
            found = entry
    return found


def header(event: Mapping[str, Any], name: str) -> str | None:
    """A request header from an API Gateway (REST) event, case-insensitively:
    `headers` holds the last value of each, `multiValueHeaders` all of them."""
    lowered = name.lower()
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == lowered and isinstance(value, str):
            return value
    for key, values in (event.get("multiValueHeaders") or {}).items():
        if key.lower() == lowered and values:
            return str(values[-1])
    return None


class ApiAuth:
    """Authenticates API Gateway REST events; see the module docstring.

    `api_keys` and `bearer_tokens` take `Credential`s or compact entries
    (`"alice:approver:s3cret"`)."""

    def __init__(
        self,
        api_keys: Iterable[str | Credential] = (),
        bearer_tokens: Iterable[str | Credential] = (),
        *,
        trust_gateway_authorizer: bool = False,
    ) -> None:
        self._keys = _store(_as_credentials(api_keys, ENV_API_KEYS))
        self._tokens = _store(_as_credentials(bearer_tokens, ENV_API_TOKENS))
        self.trust_gateway_authorizer = trust_gateway_authorizer
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiAuth:
        env = os.environ if environ is None else environ
        return cls(
            parse_credentials(env.get(ENV_API_KEYS), ENV_API_KEYS),
            parse_credentials(env.get(ENV_API_TOKENS), ENV_API_TOKENS),
            trust_gateway_authorizer=env.get(ENV_TRUST_AUTHORIZER, "").lower() in {"1", "true"},
        )

    def authenticate(self, event: Mapping[str, Any]) -> Principal:
        """The caller, or `MissingCredentials` / `InvalidCredentials` (both 401)."""
        if not (self._keys or self._tokens or self.trust_gateway_authorizer or self._warned):
            self._warned = True
            logger.warning("no API keys or bearer tokens configured: every request gets 401")
        if self.trust_gateway_authorizer:
            principal = _authorizer_principal(event)
            if principal is not None:
                return principal
        key = header(event, API_KEY_HEADER)
        scheme, _, token = (header(event, "Authorization") or "").strip().partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else ""
        if not key and not bearer:
            raise MissingCredentials(
                f"authentication required: send {API_KEY_HEADER} or Authorization: Bearer"
            )
        # Every credential presented must be valid: a good key does not
        # excuse a bad token sent along with it (a proxy's, an attacker's).
        by_key = _match(key, self._keys) if key else None
        by_token = _match(bearer, self._tokens) if bearer else None
        if (key and by_key is None) or (bearer and by_token is None):
            raise InvalidCredentials("invalid credentials")
        if by_key is not None:
            return Principal(by_key.principal, "api_key", by_key.roles)
        assert by_token is not None
        return Principal(by_token.principal, "bearer", by_token.roles)


def authorize(principal: Principal, method: str, template: str) -> None:
    """`MissingRole` (403) unless `principal` holds a role the route allows."""
    allowed = allowed_roles(method, template)
    if principal.roles & allowed:
        return
    held = ", ".join(sorted(principal.roles)) or "none"
    needed = " or ".join(sorted(allowed))
    raise MissingRole(f"{method.upper()} here needs the {needed} role; your credential has: {held}")


def _authorizer_principal(event: Mapping[str, Any]) -> Principal | None:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or (authorizer.get("jwt") or {}).get("claims") or {}
    subject = claims.get("sub") or authorizer.get("principalId")
    if not isinstance(subject, str) or not subject:
        return None
    roles = parse_roles(authorizer.get("roles") or "")
    for claim in ("cognito:groups", "roles"):
        roles |= parse_roles(claims.get(claim) or "")
    return Principal(f"authorizer:{subject}", "authorizer", roles)


def challenge(error: NotAuthorized) -> str:
    """The `WWW-Authenticate` value of a 401 (RFC 6750 section 3)."""
    if isinstance(error, InvalidCredentials):
        return f'Bearer realm="{REALM}", error="invalid_token"'
    return f'Bearer realm="{REALM}"'
