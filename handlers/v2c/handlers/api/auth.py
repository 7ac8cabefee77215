"""Who is calling: an API key (`X-API-Key`) or a bearer token, checked before routing.

The PRD's API takes `X-API-Key: <key>` or `Authorization: Bearer <token>`.
Both are opaque secrets here, configured per deployment (`from_env`):

| variable | meaning |
|---|---|
| V2C_API_KEYS | comma-separated API keys |
| V2C_API_TOKENS | comma-separated bearer tokens |
| V2C_API_TRUST_AUTHORIZER | `1`: accept a request API Gateway's authorizer already accepted |

An entry is the secret itself or `sha256:<64 hex digits>`, its SHA-256, so
a deployed function's environment need not hold the secret. Only digests
are kept in memory; a presented credential is hashed and compared with every
digest by `hmac.compare_digest`, without an early exit, so neither the
comparison nor the loop tells an attacker how close a guess was.

Decisions:

* No credential configured means nobody gets in (fail closed), not open
  access: a deployment that forgot its keys answers 401, loudly logged.
* JWTs are validated by API Gateway (PRD NFR-5), not here: with
  `V2C_API_TRUST_AUTHORIZER=1` a request whose `requestContext.authorizer`
  names a principal is accepted. Only API Gateway writes `requestContext`;
  the local HTTP adapter never copies it from the client.
* The PRD's `X-Internal-Call: true` bypass is not implemented: any client
  can send a header. Services call with an API key of their own.
* Every credential a request presents must be valid: an API key and a
  bearer token may both be sent, but one bad one refuses the request.
* `/health` and the OpenAPI document are public; `/health/detailed` names
  the deployment's components and their failures, so it needs a credential.

The principal (`api-key:<digest prefix>`, `bearer:<digest prefix>` or
`authorizer:<sub>`) goes into the resolver's context as `principal`, for
audit fields such as `created_by`; it identifies the credential, never
reveals it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from v2c.contract.errors import ConfigurationError, NotAuthorized
from v2c.handlers.api.log import logger

API_KEY_HEADER: Final = "X-API-Key"
ENV_API_KEYS: Final = "V2C_API_KEYS"
ENV_API_TOKENS: Final = "V2C_API_TOKENS"
ENV_TRUST_AUTHORIZER: Final = "V2C_API_TRUST_AUTHORIZER"
HASH_PREFIX: Final = "sha256:"
REALM: Final = "v2c"


class MissingCredentials(NotAuthorized):
    reason = "missing_credentials"


class InvalidCredentials(NotAuthorized):
    reason = "invalid_credentials"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    method: Literal["api_key", "bearer", "authorizer"]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _stored_digest(entry: str) -> bytes:
    if entry.startswith(HASH_PREFIX):
        text = entry.removeprefix(HASH_PREFIX)
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise ConfigurationError(f"{HASH_PREFIX} entry is not 64 hex digits")
        return raw
    return _digest(entry)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _match(presented: str, digests: tuple[bytes, ...]) -> bytes | None:
    """The stored digest equal to the presented secret's, checked against all."""
    candidate = _digest(presented)
    found: bytes | None = None
    for stored in digests:
        if hmac.compare_digest(candidate, stored):
            found = stored
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
    """Authenticates API Gateway REST events; see the module docstring."""

    def __init__(
        self,
        api_keys: Iterable[str] = (),
        bearer_tokens: Iterable[str] = (),
        *,
        trust_gateway_authorizer: bool = False,
    ) -> None:
        self._keys = tuple(_stored_digest(k) for k in api_keys if k)
        self._tokens = tuple(_stored_digest(t) for t in bearer_tokens if t)
        self.trust_gateway_authorizer = trust_gateway_authorizer
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiAuth:
        env = os.environ if environ is None else environ
        return cls(
            _split(env.get(ENV_API_KEYS)),
            _split(env.get(ENV_API_TOKENS)),
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
        key_digest = _match(key, self._keys) if key else None
        token_digest = _match(bearer, self._tokens) if bearer else None
        if (key and key_digest is None) or (bearer and token_digest is None):
            raise InvalidCredentials("invalid credentials")
        if key_digest is not None:
            return Principal(f"api-key:{key_digest.hex()[:12]}", "api_key")
        assert token_digest is not None
        return Principal(f"bearer:{token_digest.hex()[:12]}", "bearer")


def _authorizer_principal(event: Mapping[str, Any]) -> Principal | None:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or (authorizer.get("jwt") or {}).get("claims") or {}
    subject = claims.get("sub") or authorizer.get("principalId")
    if isinstance(subject, str) and subject:
        return Principal(f"authorizer:{subject}", "authorizer")
    return None


def challenge(error: NotAuthorized) -> str:
    """The `WWW-Authenticate` value of a 401 (RFC 6750 section 3)."""
    if isinstance(error, InvalidCredentials):
        return f'Bearer realm="{REALM}", error="invalid_token"'
    return f'Bearer realm="{REALM}"'
