"""`GET /dashboard` and `GET /dashboard/assets/<name>`: the fleet dashboard's files (issue #16).

Served by the API function itself, so the page is the same shape locally
(the HTTP adapter) and behind API Gateway, and every URL it calls is
relative to where it was loaded from (a stage prefix included). The files
hold no data, so they are public like `/health` (in AWS too: each has an
API Gateway route without the authorizer, `v2c.infra.aws.template_api`):
every data call the page makes carries the credential its user typed, an
API key (`X-API-Key`) or a bearer token (`Authorization: Bearer`, a Cognito
ID token in AWS), and the API checks it as for any client. Only the known
asset names are public; another name needs a credential like any path and is
then 404, so an anonymous caller learns nothing about the routes.

Headers, and why:

* `Content-Security-Policy: default-src 'self'` (plus no framing, no
  `<base>`): the page runs only its own script and style, so a string a
  vehicle supplied cannot become script even if it became markup (the
  script never builds markup from API data: `textContent` only);
* `Cache-Control`: the page `no-cache` (a deployment shows at once), the
  assets five minutes;
* `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`.

Not in the OpenAPI document: it describes the JSON API, and these answers
are not JSON.
"""

from __future__ import annotations

from typing import Final

from aws_lambda_powertools.event_handler import Response

from v2c.handlers.api.app import OtaApi
from v2c.handlers.api.errors import error_response
from v2c.handlers.api.services import ApiServices
from v2c.handlers.dashboard import ASSETS, Asset, asset, page

PAGE_PATH: Final = "/dashboard"
ASSETS_PATH: Final = "/dashboard/assets"
CSP: Final = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
PAGE_CACHE: Final = "no-cache"
ASSET_CACHE: Final = "public, max-age=300"


def _answer(file: Asset, cache_control: str) -> Response[str]:
    return Response(
        200,
        file.content_type,
        file.text,
        headers={
            "Cache-Control": cache_control,
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def register(app: OtaApi, services: ApiServices) -> None:
    app.mark_public(PAGE_PATH, *(f"{ASSETS_PATH}/{name}" for name in ASSETS))

    @app.get(PAGE_PATH, include_in_schema=False)
    def dashboard_page() -> Response[str]:
        return _answer(page(), PAGE_CACHE)

    @app.get(f"{ASSETS_PATH}/<name>", include_in_schema=False)
    def dashboard_asset(name: str) -> Response[str]:
        found = asset(name)
        if found is None:
            return error_response(404, "no such dashboard asset", "not_found")
        return _answer(found, ASSET_CACHE)
