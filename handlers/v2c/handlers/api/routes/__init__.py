"""Route modules of the fleet-manager API; each is found and registered by `build_app`.

A module here (name not starting with `_`) defines `register(app, services)`
and registers its routes inside it, as closures over `services`. Example,
`routes/firmware.py`:

    from typing import Annotated

    from aws_lambda_powertools.event_handler.openapi.params import Path
    from pydantic import BaseModel

    from v2c.handlers.api.app import OTA_PREFIX, OtaApi
    from v2c.handlers.api.services import ApiServices, require

    FirmwareId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="...")]

    class FirmwareOut(BaseModel):
        firmware_id: str
        name: str

    def register(app: OtaApi, services: ApiServices) -> None:
        @app.get(f"{OTA_PREFIX}/firmware/<firmware_id>", tags=["firmware"], summary="Get firmware")
        def get_firmware(firmware_id: FirmwareId) -> FirmwareOut:
            firmware = require(services.firmware, "firmware")  # 503 when not wired
            return FirmwareOut.model_validate(firmware.get(firmware_id), from_attributes=True)

        @app.post(f"{OTA_PREFIX}/campaigns", status_code=201, tags=["campaigns"])
        def create_campaign(body: CampaignIn) -> CampaignOut:
            ...

A runnable example with tests: `tests/integration/api_sample_routes.py`.

Rules:

* Registering must not touch `services` beyond closing over it: the OpenAPI
  document is generated from an app with no services at all.
* Type every parameter and the return value: Powertools validates the request
  (a mismatch answers 400 naming the field) and the answer (a mismatch is our
  bug: 500), and the OpenAPI document is derived from the hints.
* Fail by raising `v2c.contract.errors` classes (`NotFound` 404, `Conflict`
  409, `InvalidInput` 400, a 422 subclass for content checks, `TransientError`
  503): `v2c.handlers.api.errors` turns them into `{"detail", "reason"}`.
  Never build an error `Response` by hand.
* `app.context["principal"]` is the authenticated caller (`auth.Principal`;
  None on public paths), for audit fields such as `created_by`. Never take
  an actor's name from the request: use the principal.
* Who may call a route: `v2c.handlers.api.roles` (a read: any role; any
  other method: `fleet_manager`); a route for another role adds itself to
  `ROUTE_ROLES` and to the table in that module's docstring and the README.
* Request bodies derive from `v2c.handlers.api.models.RequestModel` (strict
  JSON types, unknown fields refused), so the API accepts exactly what its
  document says; put every rule a schema can state into the model
  (`Field(pattern=..., ge=..., max_length=...)`), or schemathesis reports
  valid-looking requests refused with 400.
* More error codes than the defaults in `v2c.handlers.api.openapi`: pass
  `openapi_extensions={"x-v2c-errors": [429]}` to the route decorator.
* After changing routes, run `python -m v2c.handlers.api.openapi` and commit
  `docs/openapi.json` (a unit test compares them).
"""
