"""The dashboard's routes: the page and its known assets, public, with their headers;
any other asset name is 404 (to a caller with a credential; 401 without one)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from api_events import AUTH, KEY_ENTRY, rest_event

from v2c.contract.topics import VIN_PATTERN
from v2c.handlers.api import ApiAuth, ApiServices, build_app
from v2c.handlers.api.routes import dashboard, health
from v2c.handlers.dashboard import ASSETS, PAGE, asset, page

APP = build_app(ApiServices(), ApiAuth([KEY_ENTRY]), modules=[health, dashboard])


def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    result: dict[str, Any] = APP.resolve(rest_event("GET", path, headers=headers), None)
    found = {k.lower(): v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()}
    found.update({k.lower(): v for k, v in (result.get("headers") or {}).items()})
    return result["statusCode"], found, result["body"]


def test_the_page_is_public_html_with_a_self_only_policy_and_no_cache() -> None:
    status, headers, body = get("/dashboard")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    assert body == page().text
    # it loads its assets relative to itself (a stage prefix stays), from no CDN
    assert 'src="dashboard/assets/app.js"' in body
    assert 'href="dashboard/assets/dashboard.css"' in body
    assert not re.search(r"(src|href)=\"(https?:)?//", body)
    assert "<script>" not in body  # no inline script: the CSP would refuse it anyway


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("app.js", "text/javascript; charset=utf-8"), ("dashboard.css", "text/css; charset=utf-8")],
)
def test_each_known_asset_is_public_with_its_type_and_a_short_cache(
    name: str, content_type: str
) -> None:
    status, headers, body = get(f"/dashboard/assets/{name}")
    assert (status, headers["content-type"]) == (200, content_type)
    assert headers["cache-control"] == "public, max-age=300"
    assert headers["content-security-policy"].startswith("default-src 'self'")
    found = asset(name)
    assert found is not None
    assert body == found.text
    assert body  # not an empty file


def test_the_asset_table_names_exactly_the_served_files() -> None:
    assert set(ASSETS) == {"app.js", "dashboard.css"}
    assert PAGE == "index.html"


@pytest.mark.parametrize(
    "name", ["index.html", "assets.py", "__init__.py", "..%2F__init__.py", "APP.JS", "app.js.map"]
)
def test_any_other_name_is_404_with_a_credential_and_401_without(name: str) -> None:
    status, headers, body = get(f"/dashboard/assets/{name}", headers=AUTH)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["reason"] == "not_found"
    assert get(f"/dashboard/assets/{name}")[0] == 401
    assert asset(name) is None


def test_the_script_never_writes_markup_from_strings() -> None:
    script = (asset("app.js") or pytest.fail("no app.js")).text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "sessionStorage" in script
    assert '"X-API-Key"' in script
    assert "Authorization: `Bearer ${" in script  # a token (Cognito's, in AWS) as a bearer


def test_the_script_takes_only_vins_and_campaign_ids_from_the_fragment() -> None:
    """An id from `#/vehicles/<id>` or `#/campaigns/<id>` goes into an API path only
    when it is one: the contract's VIN pattern, a campaign's 32 hex digits."""
    script = (asset("app.js") or pytest.fail("no app.js")).text
    assert f"const VIN = /{VIN_PATTERN.pattern}/;" in script
    assert "const CAMPAIGN_ID = /^[0-9a-f]{32}$/;" in script
    assert re.search(r"VIN\.test\(id\)\) mount\(vehicleView, id\)", script)
    assert re.search(r"CAMPAIGN_ID\.test\(id\)\) mount\(campaignView, id\)", script)


def test_the_costly_reads_are_throttled_whatever_poll_ms_says() -> None:
    """Failures by reason (a pass over every update record), the timeline and the
    fleet's version counts have fixed minimum intervals, not scaled by `?poll_ms=`;
    the dead-letter page lists 50 records and never polls."""
    script = (asset("app.js") or pytest.fail("no app.js")).text
    for line in (
        "const STATS_MS = 30000;",
        "const STATS_AUTO_MAX = 2000;",  # a larger campaign's statistics: on demand only
        "const TIMELINE_MS = 10000;",
        "const VERSIONS_MS = 30000;",
        "const DLQ_LIMIT = 50;",
    ):
        assert line in script
    assert "statsDue.take(small)" in script
    # failures by reason come with the campaign; the statistics only for one without them
    assert "if (campaign && campaign.failures_by_reason)" in script
    assert "limit=500" not in script
    assert '"500"' not in script
    assert re.search(r"return \{\s*manual: true,\s*async refresh\(\)", script)  # the DLQ view


def test_the_dashboard_is_not_in_the_openapi_document() -> None:
    status, _, body = get("/api/v1/openapi.json")
    assert status == 200
    assert not any(path.startswith("/dashboard") for path in json.loads(body)["paths"])
