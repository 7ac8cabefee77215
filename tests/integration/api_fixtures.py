"""The fleet-manager API served on loopback through the HTTP adapter, for integration tests.

Registered once in `tests/conftest.py`. `api_server` serves
`build_app(api_services, ...)`; a test module changes what is behind the API
by overriding the `api_services` fixture, e.g. with the production services
over moto from `api_moto`:

    @pytest.fixture
    def api_services(moto_api_services: ApiServices) -> ApiServices:
        return moto_api_services

`api_streaming_routes` (default: none) plugs streaming routes into the
adapter, authenticated and authorized like the API (`OtaApi.authorize`);
`api_extra_routes` (default: none) registers test-only routes next to the
discovered route modules; `api_limits` (default: `HttpLimits()`) sets the
server's bounds on slow or oversized requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import pytest
from api_support import API_KEYS, TOKENS

from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.infra.local.http_adapter import ApiHttpServer, StreamingRoute
from v2c.infra.local.http_body import HttpLimits


@pytest.fixture
def api_auth() -> ApiAuth:
    return ApiAuth(API_KEYS, TOKENS)


@pytest.fixture
def api_services() -> ApiServices:
    """In-memory services: every health check passes, no domain service wired."""
    return ApiServices(health_checks={"memory": lambda: None})


@pytest.fixture
def api_streaming_routes() -> Mapping[tuple[str, str], StreamingRoute]:
    return {}


@pytest.fixture
def api_extra_routes() -> Callable[[OtaApi], None] | None:
    return None


@pytest.fixture
def api_limits() -> HttpLimits:
    return HttpLimits()


@contextmanager
def serving(
    services: ApiServices,
    auth: ApiAuth,
    streaming_routes: Mapping[tuple[str, str], StreamingRoute],
    extra_routes: Callable[[OtaApi], None] | None,
    limits: HttpLimits,
) -> Iterator[ApiHttpServer]:
    """The one way a test serves the API, so every server fixture is the same server."""
    app = build_app(services, auth, extra=extra_routes)
    with ApiHttpServer(
        app.resolve,
        streaming_routes=streaming_routes,
        streaming_auth=app.authorize,
        limits=limits,
    ) as server:
        yield server


@pytest.fixture
def api_server(
    api_services: ApiServices,
    api_auth: ApiAuth,
    api_streaming_routes: Mapping[tuple[str, str], StreamingRoute],
    api_extra_routes: Callable[[OtaApi], None] | None,
    api_limits: HttpLimits,
) -> Iterator[ApiHttpServer]:
    with serving(api_services, api_auth, api_streaming_routes, api_extra_routes, api_limits) as s:
        yield s
