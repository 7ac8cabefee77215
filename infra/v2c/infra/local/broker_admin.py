"""Admitting vehicles to a running broker through its dynamic-security control topic.

`v2c stack up` renders every vehicle that already has a certificate into the
plugin's state file (`stack_layout.write_dynsec`). A vehicle issued while the
broker runs (`v2c pki issue --stack`, the fleet simulator) is registered here:
the admin service identity publishes `createRole` (its literal topics,
`device_policy.vehicle_registration`) and `createClient` commands to
`$CONTROL/dynamic-security/v1` and waits for the plugin's answer on
`.../response`. Many vehicles travel in one message, under the broker's packet
limit. A vehicle already registered answers "already exists" and is left as
it is (`v2c stack up` re-renders the policy whole). A decommissioned vehicle
is taken out again (`deleteClient`, `deleteRole`: `remove_vehicles`).

Cost (mosquitto 2.0.11): the plugin rewrites its whole JSON file after every
command that changes something, so admitting N new vehicles one by one costs
O(N^2) bytes written; rendering them at start costs nothing. Callers that
know a large fleet before the stack starts should issue its certificates
first (docs/architecture.md has the measured figures).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from v2c.contract.errors import TransientError
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.contract.topics import KNOWN_REGIONS
from v2c.infra.device_policy import (
    CONTROL_RESPONSE_TOPIC,
    CONTROL_TOPIC,
    vehicle_principal,
    vehicle_registration,
)
from v2c.infra.local.mosquitto_config import MAX_PACKET_SIZE
from v2c.infra.settings import StackSettings
from v2c.infra.tools.mqtt5 import MqttClientError, PahoV5Client

# ~10 vehicles per message (well under the 128 KB packet limit): the plugin answers a
# message only after saving its state once per command in it, so smaller messages
# keep each wait short when the state is large (20 commands on top of 10,000
# vehicles: ~25 s on the 2-core machine).
BATCH_BYTES: Final = 32 * 1024
ANSWER_TIMEOUT_S: Final = 600.0
_EXISTS: Final = frozenset({"Client already exists", "Role already exists"})
_MISSING: Final = frozenset({"Client not found", "Role not found"})


class BrokerAdminError(TransientError):
    """The broker's control topic refused a command or did not answer."""

    reason = "broker_admin_failed"


@dataclass(frozen=True, slots=True)
class Registration:
    requested: int
    created: int  # vehicles admitted now; the others were already registered
    messages: int


def admin_endpoint(settings: StackSettings) -> MqttEndpoint | None:
    """The admin identity on the service listener, when the stack has one."""
    mqtt = settings.mqtt
    if mqtt is None or mqtt.admin_cert is None or mqtt.admin_key is None or not mqtt.ca_file:
        return None
    return MqttEndpoint(
        mqtt.host,
        mqtt.port,
        ca_file=str(mqtt.ca_file),
        cert_file=str(mqtt.admin_cert),
        key_file=str(mqtt.admin_key),
    )


def _batches(commands: Sequence[dict[str, Any]], limit: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 16
    for command in commands:
        length = len(json.dumps(command, separators=(",", ":"))) + 1
        if batch and size + length > limit:
            yield batch
            batch, size = [], 16
        batch.append(command)
        size += length
    if batch:
        yield batch


class DynsecAdmin:
    """One admin session on the plugin's control topic; a context manager."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        timeout: float = ANSWER_TIMEOUT_S,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        if not 1024 <= batch_bytes <= MAX_PACKET_SIZE - 1024:
            raise ValueError(f"batch_bytes {batch_bytes} outside 1 KiB .. the packet limit")
        # A client id of its own per session: two admins never take each other's.
        self._client = PahoV5Client(
            endpoint.host,
            endpoint.port,
            client_id=f"v2c-admin-{uuid.uuid4().hex[:12]}",
            timeout=timeout,
            tls_context=endpoint.ssl_context(),
        )
        self._timeout = timeout
        self._batch_bytes = batch_bytes
        self.messages = 0

    def __enter__(self) -> DynsecAdmin:
        try:
            self._client.connect()
            self._client.subscribe(CONTROL_RESPONSE_TOPIC, 1)
        except MqttClientError as exc:
            self._client.disconnect()
            raise BrokerAdminError(f"cannot reach the broker's control topic: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()

    def execute(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send `commands` (batched), wait for every answer; the responses in order."""
        responses: list[dict[str, Any]] = []
        for batch in _batches(commands, self._batch_bytes):
            tag = uuid.uuid4().hex
            tagged = [{**c, "correlationData": f"{tag}-{i}"} for i, c in enumerate(batch)]
            payload = json.dumps({"commands": tagged}, separators=(",", ":")).encode()
            try:
                self._client.publish(CONTROL_TOPIC, payload, 1)
                answer = self._client.receive(self._timeout)
            except MqttClientError as exc:
                raise BrokerAdminError(f"the broker's control topic: {exc}") from exc
            self.messages += 1
            got = json.loads(answer.payload).get("responses", [])
            if [r.get("correlationData") for r in got] != [c["correlationData"] for c in tagged]:
                raise BrokerAdminError("the control topic answered another request")
            responses += got
        return responses

    def register_vehicles(
        self, vehicle_ids: Iterable[str], regions: Sequence[str] = KNOWN_REGIONS
    ) -> Registration:
        """Admit every vehicle in `vehicle_ids`; the registered ones stay as they are."""
        ids = list(dict.fromkeys(vehicle_ids))
        commands = [c for v in ids for c in vehicle_registration(v, regions)]
        before = self.messages
        responses = self.execute(commands)
        created = 0
        for response in responses:
            error = response.get("error")
            if error is not None and error not in _EXISTS:
                raise BrokerAdminError(f"{response.get('command')}: {error}")
            created += response.get("command") == "createClient" and error is None
        return Registration(len(ids), created, self.messages - before)

    def remove_vehicles(self, vehicle_ids: Iterable[str]) -> int:
        """Take vehicles out of the policy (client, then its role): a connected
        one is disconnected by the plugin, and its certificate can then do
        nothing (a user name without a client is denied everything). Vehicles
        not registered are skipped; returns how many clients were removed."""
        ids = list(dict.fromkeys(vehicle_ids))
        commands = [c for v in ids for c in vehicle_removal(v)]
        removed = 0
        for response in self.execute(commands):
            error = response.get("error")
            if error is not None and error not in _MISSING:
                raise BrokerAdminError(f"{response.get('command')}: {error}")
            removed += response.get("command") == "deleteClient" and error is None
        return removed


def vehicle_removal(vehicle_id: str) -> list[dict[str, Any]]:
    """The commands that undo `vehicle_registration` (the same names)."""
    principal = vehicle_principal(vehicle_id)
    return [
        {"command": "deleteClient", "username": principal.name},
        {"command": "deleteRole", "rolename": principal.role},
    ]


def register_in_stack(settings: StackSettings, vehicle_ids: Iterable[str]) -> Registration | None:
    """Admit vehicles to the stack's running broker; None for a broker without the policy."""
    endpoint = admin_endpoint(settings)
    ids = list(vehicle_ids)
    if endpoint is None or not ids:
        return None
    with DynsecAdmin(endpoint) as admin:
        return admin.register_vehicles(ids)


def remove_from_stack(settings: StackSettings, vehicle_ids: Iterable[str]) -> int | None:
    """Take vehicles out of the stack's running broker; None without the policy."""
    endpoint = admin_endpoint(settings)
    ids = list(vehicle_ids)
    if endpoint is None or not ids:
        return None
    with DynsecAdmin(endpoint) as admin:
        return admin.remove_vehicles(ids)
