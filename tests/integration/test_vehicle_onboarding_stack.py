"""Onboarding on a running stack (`LocalStack`, what `v2c stack up` runs), as fleet managers do it.

`v2c vehicle register` makes the vehicle's key and CSR and the stack's API
issues the certificate through the stack's CA and admits the vehicle to the
real mosquitto; the vehicle then connects over mTLS with exactly that
certificate and its telemetry reaches the cloud. Decommissioning it through
the CLI cancels its update (also consumed as `device.deleted` by the OTA
side, in the API process) and takes it out of the broker: the session is
closed and the same certificate, revoked, is refused at the handshake.
"""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gateway_support import publish_all, vehicle_client, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.cli.api_client import ApiClient
from v2c.infra.cli.demo_view import target_for, upload_package
from v2c.infra.cli.main import app as cli
from v2c.infra.local.stack import LocalStack
from v2c.infra.settings import StackSettings
from v2c.infra.tools.mqtt5 import MqttClientError, PahoV5Client
from v2c.vehicle_sim.sampler import TelemetrySampler

VIN = "VIN-1HGBH41JXMN109186"
REGION = "eu-west-1"
WAIT = 60.0  # a bound for a loaded machine, never an expectation


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[StackSettings]:
    with LocalStack(tmp_path / "stack") as running:
        yield running.settings


def v2c(stack_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--stack", str(stack_dir)])


def endpoint(settings: StackSettings, cert: Path, key: Path) -> MqttEndpoint:
    mqtt_settings = settings.require_mqtt()
    assert mqtt_settings.tls_port is not None
    return MqttEndpoint(
        mqtt_settings.host,
        mqtt_settings.tls_port,
        ca_file=str(mqtt_settings.ca_file),
        cert_file=str(cert),
        key_file=str(key),
    )


def stored_samples(settings: StackSettings) -> int:
    answer = settings.aws.client("dynamodb").query(
        TableName=settings.resources.telemetry_table,
        KeyConditionExpression="vehicle_id = :v",
        ExpressionAttributeValues={":v": {"S": VIN}},
        Select="COUNT",
    )
    return int(answer["Count"])


def watched_session(target: MqttEndpoint) -> tuple[mqtt.Client, threading.Event]:
    """A connected vehicle session and the event its disconnection sets."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=VIN, protocol=mqtt.MQTTv5)
    context = target.ssl_context()
    assert context is not None
    client.tls_set_context(context)
    connected, disconnected = threading.Event(), threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_disconnect = lambda c, u, f, rc, p: disconnected.set()
    client.reconnect_delay_set(min_delay=120, max_delay=120)  # never within the test
    client.connect(target.host, target.port)
    client.loop_start()
    assert connected.wait(WAIT), "no CONNACK"
    return client, disconnected


def test_a_vehicle_registered_with_a_csr_connects_and_is_shut_out_once_decommissioned(
    stack: StackSettings, tmp_path: Path
) -> None:
    stack_dir = tmp_path / "stack"
    key, cert = tmp_path / "vehicle" / "key.pem", tmp_path / "vehicle" / "cert.pem"

    # Given a vehicle registered through the CLI: its key made here, its certificate issued
    registered = v2c(
        stack_dir,
        *("vehicle", "register", VIN, "--model", "Accord", "--region", REGION),
        *("--year", "2024", "--attr", "fleet=north", "--json"),
        *("--key-out", str(key), "--cert-out", str(cert)),
    )
    assert registered.exit_code == 0, registered.output
    answer = json.loads(registered.stdout)
    assert answer["outcome"] == "created"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in registered.output  # never printed
    assert cert.read_text() == answer["certificate"]["pem"]
    target = endpoint(stack, cert, key)

    # When it connects over mTLS with that certificate and publishes telemetry
    telemetry = f"v2c/v1/{REGION}/{VIN}/telemetry/vehicle"
    with vehicle_client(target, VIN) as vehicle:
        (sample,) = TelemetrySampler(VIN, seed=3).samples(1)
        publish_all(vehicle, [(telemetry, sample.SerializeToString())], qos=1)
    # Then the cloud stored it, and the inventory says when it last heard from it
    wait_until(lambda: stored_samples(stack) == 1, timeout=WAIT, what="the stored sample")
    shown = json.loads(v2c(stack_dir, "vehicle", "show", VIN, "--json").stdout)
    assert shown["last_telemetry_at"] is not None
    assert shown["attributes"] == {"fleet": "north"}
    listed = v2c(stack_dir, "vehicle", "list", "--attr", "fleet=north")
    assert listed.exit_code == 0, listed.output
    assert VIN in listed.stdout

    # And a viewer may read but not decommission it; no credential gets 401
    viewer = v2c(stack_dir, "vehicle", "decommission", VIN, "-y", "--as", "viewer")
    assert viewer.exit_code == 3, viewer.output
    assert "403" in viewer.output
    assert stack.api is not None
    anonymous = ApiClient(target_for(stack.api.url, None))
    with pytest.raises(Exception, match="401"):
        anonymous.get("/api/v1/vehicles")

    # Given an update on its way to it
    client = ApiClient(target_for(stack.api.url, stack.api.key_file))
    firmware_id = upload_package(client, "Accord", "2.0.0", tmp_path / "packages")
    update = client.post(f"/api/v1/ota/devices/{VIN}/update", {"firmware_id": firmware_id})
    update_id = update["update_id"]
    assert client.get(f"/api/v1/vehicles/{VIN}")["active_update"]["update_id"] == update_id

    # When it is decommissioned while connected
    session, disconnected = watched_session(target)
    done = v2c(stack_dir, "vehicle", "decommission", VIN, "-y", "--reason", "sold", "--json")
    assert done.exit_code == 0, done.output
    body = json.loads(done.stdout)
    assert body["status"] == "decommissioned"
    assert body["cancelled_updates"] == [update_id]
    assert body["certificate"]["revoked_at"] is not None

    # Then the broker closed its session, and the same certificate, revoked (on the
    # fleet CA's CRL, which the broker read again), no longer completes a handshake
    assert disconnected.wait(WAIT), "the broker kept the decommissioned vehicle connected"
    session.loop_stop()
    with pytest.raises(MqttClientError):
        PahoV5Client(
            target.host, target.port, client_id=VIN, tls_context=target.ssl_context()
        ).connect()
    # its update is cancelled, and the OTA side consumed device.deleted (in the API process)
    assert client.get(f"/api/v1/ota/updates/{update_id}")["state"] == "cancelled"
    log = (stack_dir / "logs" / "api.log").read_text()
    assert f"device.deleted delivered in process: {{'handled': True, 'vehicle_id': '{VIN}'" in log
    # and the next `v2c stack up` will not admit it again
    assert not (stack_dir / "pki" / "vehicles" / f"{VIN}.pem").exists()
