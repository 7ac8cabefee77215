"""The fleet-manager API served on loopback through the HTTP adapter, for integration tests.

Use with `pytest_plugins = ["api_fixtures"]`. `api_server` serves
`build_app(api_services, ...)`; a test module changes what is behind the API
by overriding the `api_services` fixture, e.g. services over the moto stack:

    @pytest.fixture
    def api_services(aws_stack: AwsStack) -> ApiServices:
        return build_services_over(aws_stack)   # firmware, campaigns, health checks

`api_streaming_routes` (default: none) plugs streaming routes into the
adapter, authenticated and authorized like the API (`OtaApi.authorize`);
`api_extra_routes` (default: none) registers test-only routes next to the
discovered route modules; `api_limits` (default: `HttpLimits()`) sets the
server's bounds on slow or oversized requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
from api_support import API_KEYS, TOKENS

from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.infra.local.http_adapter import ApiHttpServer, HttpLimits, StreamingRoute


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


@pytest.fixture
def api_server(
    api_services: ApiServices,
    api_auth: ApiAuth,
    api_streaming_routes: Mapping[tuple[str, str], StreamingRoute],
    api_extra_routes: Callable[[OtaApi], None] | None,
    api_limits: HttpLimits,
) -> Iterator[ApiHttpServer]:
    app = build_app(api_services, api_auth, extra=api_extra_routes)
    server = ApiHttpServer(
        app.resolve,
        streaming_routes=api_streaming_routes,
        streaming_auth=app.authorize,
        limits=api_limits,
    )
    with server:
        yield server
