"""The fleet-manager HTTP API (`/api/v1/ota/...`, `/health`) as Lambda-style handlers.

`build_app(services, auth)` is the resolver; `v2c.handlers.ota_api` its Lambda
entry point; `v2c.infra.local.http_adapter` serves it on loopback. Route modules
live in `routes/` (see its docstring for how to add one).
"""

from v2c.handlers.api.app import API_PREFIX, OTA_PREFIX, OtaApi, build_app
from v2c.handlers.api.auth import ApiAuth, Principal
from v2c.handlers.api.services import ApiServices, HealthCheck, require

__all__ = [
    "API_PREFIX",
    "OTA_PREFIX",
    "ApiAuth",
    "ApiServices",
    "HealthCheck",
    "OtaApi",
    "Principal",
    "build_app",
    "require",
]
