"""The fleet-manager API: one Powertools resolver, its routes registered from `routes/`.

`build_app(services, auth)` returns an `OtaApi` (an `APIGatewayRestResolver`
with validation on) that the Lambda entry point (`v2c.handlers.ota_api`) and
the local HTTP adapter (`v2c.infra.local.http_adapter`) both call with API Gateway
REST events. Every module of `v2c.handlers.api.routes` whose name does not
start with `_` is imported and its `register(app, services)` called, in name
order: adding a route module adds its operations, to the API and to the
OpenAPI document, without editing this file.

What the subclass adds to Powertools, and why there:

* authentication runs in `resolve`, before routing and validation: an
  unauthenticated request gets 401 whatever its path or body (Powertools runs
  its validation before any middleware, which would answer 400 first and
  tell an anonymous caller about the routes);
* a path served under another method answers 405 with `Allow`, not 404;
* `public_paths`, the paths served without a credential;
* authorization right after: the route the request names needs one of the
  roles `v2c.handlers.api.roles` assigns it (403 otherwise), also before
  validation, so a viewer learns nothing from a write route's 400s;
* JSON bodies are parsed within `v2c.handlers.api.json_limits` (depth 32,
  4 MiB): too deep is 400, never a `RecursionError` 500;
* path parameters arrive percent-decoded (Powertools routes on the encoded
  `path` of a REST event and would pass `a%20b` on);
* one resolver serves many threads at once. Powertools keeps the current
  event and context on the class (`BaseRouter.current_event`) and the
  routing context on the instance, which suits a Lambda container (one
  invocation at a time) but would mix concurrent requests in the local HTTP
  server: `OtaApi` keeps all three per thread, and builds every route's
  middleware stack once, before serving (Powertools builds it lazily, which
  two first requests racing would do twice).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, cast
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Route
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from v2c.contract.errors import NotAuthorized
from v2c.handlers.api import routes
from v2c.handlers.api.auth import ApiAuth, MissingRole, Principal, authorize, challenge, header
from v2c.handlers.api.errors import error_response, install_error_handlers
from v2c.handlers.api.json_limits import body_deserializer
from v2c.handlers.api.services import ApiServices

API_PREFIX: Final = "/api/v1"
OTA_PREFIX: Final = f"{API_PREFIX}/ota"
OPENAPI_ROUTE: Final = f"{API_PREFIX}/openapi.json"


class RouteModule(Protocol):
    def register(self, app: OtaApi, services: ApiServices) -> None: ...


class _RequestState(threading.local):
    """What Powertools keeps per invocation, kept per thread instead."""

    def __init__(self) -> None:
        self.event: APIGatewayProxyEvent | None = None
        self.lambda_context: Any = None
        self.context: dict[str, Any] = {}


class OtaApi(APIGatewayRestResolver):
    """`APIGatewayRestResolver` with authentication and authorization before
    routing, 405s, JSON limits, and per-thread request state."""

    def __init__(self, auth: ApiAuth, services: ApiServices) -> None:
        self._state = _RequestState()  # before Powertools assigns `self.context`
        super().__init__(
            enable_validation=True,
            # A route answering outside its model is our bug: 500, not the
            # caller's 422 (Powertools' default would blame the request).
            response_validation_error_http_code=500,
            debug=False,  # never a traceback in an answer, whatever POWERTOOLS_DEV says
            json_body_deserializer=body_deserializer,
        )
        self.auth = auth
        self.services = services
        self.public_paths: set[str] = set()
        self._openapi_text: str | None = None

    # -- per-thread request state (see the module docstring) -----------------

    @property  # type: ignore[override]
    def current_event(self) -> APIGatewayProxyEvent:
        event = self._state.event
        if event is None:
            raise RuntimeError("no request is being resolved on this thread")
        return event

    @current_event.setter
    def current_event(self, value: APIGatewayProxyEvent) -> None:
        self._state.event = value

    @property
    def lambda_context(self) -> LambdaContext:
        context: LambdaContext = self._state.lambda_context
        return context

    @lambda_context.setter
    def lambda_context(self, value: LambdaContext) -> None:
        self._state.lambda_context = value

    @property
    def context(self) -> dict[str, Any]:
        return self._state.context

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        self._state.context = value

    def _to_proxy_event(self, event: dict[str, Any]) -> APIGatewayProxyEvent:
        # Powertools stores the result on the class; this thread keeps its own.
        proxy = cast(APIGatewayProxyEvent, super()._to_proxy_event(event))
        self._state.event = proxy
        return proxy

    def prepare(self) -> None:
        """Build every route's middleware stack now, not racing on first use."""
        for route in self._routes():
            if not route._middleware_stack_built:
                route._build_middleware_stack(router_middlewares=self._router_middlewares, app=self)

    def _routes(self) -> list[Route]:
        return self._static_routes + self._dynamic_routes  # Powertools' route table

    # ------------------------------------------------------------------------

    def mark_public(self, *paths: str) -> None:
        """Serve `paths` (exact, any method) without a credential."""
        self.public_paths.update(paths)

    def route_template(self, method: str, path: str) -> str | None:
        """The template of the route serving `method` on `path`, if any."""
        method = method.upper()
        for route in self._routes():
            if route.method == method and route.rule.match(path):
                return route.path
        return None

    def authorize(self, event: Mapping[str, Any]) -> Principal | None:
        """The caller of `event` if it may call the route it names: raises
        `NotAuthorized` (401) or `MissingRole` (403). None on public paths.
        The local HTTP adapter authorizes its streaming routes with this."""
        path = str(event.get("path") or "/")
        if path in self.public_paths:
            return None
        principal = self.auth.authenticate(event)
        template = self.route_template(str(event.get("httpMethod") or "GET"), path)
        if template is not None:  # no route: 404/405 come from routing
            authorize(principal, str(event.get("httpMethod")), template)
        return principal

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        self._state.lambda_context = context
        try:
            principal = self.authorize(event)
        except MissingRole as error:
            return _direct_answer(403, error.detail, error.reason)
        except NotAuthorized as error:
            return _direct_answer(
                401, error.detail, error.reason, {"WWW-Authenticate": challenge(error)}
            )
        content_type = header(event, "Content-Type") or ""
        if content_type.lower().startswith("multipart/") and "boundary=" not in content_type:
            # Powertools' multipart parser raises a bare ValueError (a 500) here.
            return _direct_answer(400, "multipart body without a boundary", "invalid_input")
        # Set only now: `super().resolve` clears the context when it ends.
        append: Any = self.append_context  # untyped in Powertools
        append(principal=principal)
        try:
            return super().resolve(event, context)
        finally:
            self._state.event = None
            self._state.lambda_context = None

    def _convert_matches_into_route_keys(self, match: re.Match[str]) -> dict[str, str]:
        # API Gateway REST keeps `path` percent-encoded and Powertools routes
        # on it: decode the parameters, as API Gateway's own `pathParameters`
        # are, so `/firmware/a%20b` gives the route "a b" (here and in AWS).
        return {key: unquote(value) for key, value in match.groupdict().items()}

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some route serves `path` with."""
        return sorted({route.method.upper() for route in self._routes() if route.rule.match(path)})

    def no_route_response(self, error: NotFoundError) -> Response[str]:
        """404, or 405 when the path exists under other methods."""
        method = self.current_event.http_method.upper()
        allowed = self.allowed_methods(self.current_event.path)
        if allowed and method not in allowed:
            return error_response(
                405,
                f"method {method[:16]} not allowed here; allowed: {', '.join(allowed)}",
                "method_not_allowed",
                headers={"Allow": ", ".join(allowed)},
            )
        detail = str(error.msg) if error.msg and error.msg != "Not found" else "not found"
        return error_response(404, detail, "not_found")

    def openapi_text(self) -> str:
        """The OpenAPI document as served (built once)."""
        if self._openapi_text is None:
            from v2c.handlers.api.openapi import render_text

            self._openapi_text = render_text(self)
        return self._openapi_text


def _direct_answer(
    status: int, detail: str, reason: str, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A REST-proxy error answer built before routing ran (no resolver state)."""
    multi = {"Content-Type": [content_types.APPLICATION_JSON]}
    multi.update({name: [value] for name, value in (headers or {}).items()})
    return {
        "statusCode": status,
        "body": json.dumps({"detail": detail, "reason": reason}),
        "isBase64Encoded": False,
        "multiValueHeaders": multi,
    }


def route_modules() -> list[RouteModule]:
    """Every route module, in name order (the OpenAPI document's order)."""
    names = sorted(
        info.name for info in pkgutil.iter_modules(routes.__path__) if not info.name.startswith("_")
    )
    return [importlib.import_module(f"{routes.__name__}.{name}") for name in names]


def build_app(
    services: ApiServices,
    auth: ApiAuth,
    *,
    modules: list[RouteModule] | None = None,
    extra: Callable[[OtaApi], None] | None = None,
) -> OtaApi:
    """The API over `services`. `modules` replaces the discovered route modules
    (tests of one module); `extra` registers more routes (tests of the frame)."""
    app = OtaApi(auth, services)
    install_error_handlers(app)
    app.mark_public(OPENAPI_ROUTE)

    @app.get(OPENAPI_ROUTE, include_in_schema=False)
    def openapi_document() -> Response[str]:
        return Response(200, content_types.APPLICATION_JSON, app.openapi_text())

    for module in route_modules() if modules is None else modules:
        module.register(app, services)
    if extra is not None:
        extra(app)
    app.prepare()
    return app
