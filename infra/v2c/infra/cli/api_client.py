"""The fleet-manager API as the CLI calls it: HTTP, the stack's URL and key.

The CLI never reaches into DynamoDB behind the API's back: `v2c campaign`
and `v2c firmware` send exactly the requests a fleet manager's script would,
so the CLI exercises (and documents) the API. Errors come back as the API's
`{"detail", "reason"}` and are raised as `ApiError` with the HTTP status.

Where the URL and key come from, first found wins: `--api-url`/`--api-key`,
`V2C_API_URL`/`V2C_API_KEY`, the stack (`stack.json`'s `api.url`, and the
key file of the chosen role next to it). The role is `--as ROLE`, else
`V2C_API_ROLE`, else the command's own default: `fleet_manager` for every
command but `v2c campaign approve`/`reject` (`approver`). The local stack has one
credential per role (`v2c.infra.local.api_credentials`), so `--as viewer` reads
with the viewer's key and `--as operator` is the DLQ operator.

A deployment on AWS authenticates with Cognito (`docs/deploy.md`): set
`V2C_API_URL` to the stack's `ApiUrl` output and `V2C_API_TOKEN` to a user's
ID token; it is sent as the `Authorization` header, as API Gateway's Cognito
authorizer reads it, and the roles are the user's Cognito groups. No key
file is then needed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import requests

from v2c.contract.errors import ConfigurationError
from v2c.infra.errors import ApiError as ApiError

DEFAULT_TIMEOUT_S: Final = 30.0
ENV_API_ROLE: Final = "V2C_API_ROLE"
ENV_API_TOKEN: Final = "V2C_API_TOKEN"  # noqa: S105 - a variable name, not a secret
DEFAULT_ROLE: Final = "fleet_manager"
ROLES: Final = ("viewer", "fleet_manager", "approver", "operator")
UPLOAD_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True)
class ApiTarget:
    url: str
    key: str | None
    token: str | None = None  # `V2C_API_TOKEN`: the Authorization header (a Cognito ID token)


def resolve_target(
    url: str | None = None,
    key: str | None = None,
    stack_dir: Path | None = None,
    role: str | None = None,
    *,
    default_role: str = DEFAULT_ROLE,
) -> ApiTarget:
    """The API and the credential to call it with (see the module docstring)."""
    url = url or os.environ.get("V2C_API_URL")
    key = key or os.environ.get("V2C_API_KEY")
    token = os.environ.get(ENV_API_TOKEN) or None
    if url is not None and token is not None and key is None:
        return ApiTarget(url.rstrip("/"), None, token)
    role = role or os.environ.get(ENV_API_ROLE) or default_role
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if url is None or key is None:
        from v2c.infra.settings import StackNotFound, load_settings

        try:
            settings = load_settings(stack_dir=stack_dir)
        except StackNotFound as exc:
            # The settings' own hint is about AWS; a command that calls the
            # API names its own flags and the API's variables.
            where = f" in {stack_dir}" if stack_dir is not None else ""
            raise StackNotFound(
                f"no stack description{where}: pass --stack DIR or set V2C_STACK_DIR "
                "(`v2c stack up --dir DIR` writes one), or set V2C_API_URL and V2C_API_KEY"
            ) from exc
        if settings.api is None:
            raise ConfigurationError("the stack has no API (is `v2c stack up` running?)")
        url = url or settings.api.url
        key_file = settings.api.key_files.get(role)
        if key_file is None and role == DEFAULT_ROLE:
            key_file = settings.api.key_file
        if key is None and key_file is not None and key_file.exists():
            key = key_file.read_text().strip()
        elif key is None and settings.api.key_files:
            raise ConfigurationError(f"the stack has no {role} credential")
    return ApiTarget(url.rstrip("/"), key)


def _chunks(stream: IO[bytes], on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    while chunk := stream.read(UPLOAD_CHUNK):
        if on_bytes is not None:
            on_bytes(len(chunk))
        yield chunk


class SizedBody:
    """A stream sent in chunks with a `Content-Length`: the local adapter
    (like S3's presigned PUT) refuses chunked transfer encoding, and a
    length lets the server refuse an oversized file before reading it."""

    def __init__(
        self, stream: IO[bytes], size: int, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        self._stream = stream
        self._size = size
        self._on_bytes = on_bytes

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        return _chunks(self._stream, self._on_bytes)


def remaining_size(stream: IO[bytes]) -> int | None:
    """Bytes left in a regular file from its position; None for a pipe."""
    try:
        info = os.fstat(stream.fileno())
        position = stream.tell()
    except (OSError, ValueError, AttributeError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return max(0, info.st_size - position)


class ApiClient:
    def __init__(self, target: ApiTarget, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._target = target
        self._timeout = timeout_s
        self._session = requests.Session()
        if target.key:
            self._session.headers["X-API-Key"] = target.key
        if target.token:
            self._session.headers["Authorization"] = target.token

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> Any:
        url = f"{self._target.url}{path}"
        try:
            answer = self._session.request(
                method,
                url,
                json=json,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=headers,
                data=data,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise ApiError(0, f"cannot reach the API at {self._target.url}: {exc}") from exc
        if answer.status_code >= 400:
            try:
                body = answer.json()
                detail, reason = str(body.get("detail")), str(body.get("reason", "api_error"))
            except ValueError:
                detail, reason = answer.text[:500] or answer.reason, "api_error"
            raise ApiError(answer.status_code, detail, reason)
        return answer.json() if answer.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def pages(self, path: str, **params: Any) -> Iterator[Any]:
        """Every page of a cursor-paged list (`{items, next_cursor}`), in order."""
        cursor: str | None = None
        while True:
            page = self.get(path, **params, cursor=cursor)
            yield page
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)

    def post_text(
        self, path: str, text: str, content_type: str, params: dict[str, Any] | None = None
    ) -> Any:
        """A text body of another type than JSON (a CSV file)."""
        return self.request(
            "POST",
            path,
            params=params,
            data=text.encode("utf-8"),
            headers={"Content-Type": f"{content_type}; charset=utf-8"},
        )

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {}, headers=headers)

    def upload(
        self,
        path: str,
        stream: IO[bytes],
        *,
        params: dict[str, Any],
        on_bytes: Callable[[int], None] | None = None,
    ) -> Any:
        """Stream a file as the request body, never all in memory: with a
        `Content-Length` when its size is known (a regular file), else chunked."""
        size = remaining_size(stream)
        body: Any = _chunks(stream, on_bytes) if size is None else SizedBody(stream, size, on_bytes)
        if size == 0:
            body = b""  # requests would send an empty sized body chunked
        return self.request(
            "POST",
            path,
            params=params,
            data=body,
            headers={"Content-Type": "application/octet-stream"},
        )
