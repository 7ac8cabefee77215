"""`v2c stack up` as a user runs it: a foreground process that starts mosquitto, moto and
the gateway, prints where they are, carries a vehicle's traffic over mutual TLS,
and on SIGTERM, Ctrl-C or `v2c stack down` leaves no process and no port behind."""

from __future__ import annotations

import json
import re
import signal
import ssl
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from gateway_support import publish_all, vehicle_client, wait_until

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.local import processes
from v2c.infra.local.stack_control import addresses
from v2c.infra.net import port_accepts
from v2c.infra.settings import StackSettings, read_settings
from v2c.infra.tools.mqtt5 import MqttClientError, PahoV5Client
from v2c.vehicle_sim.sampler import TelemetrySampler

V2C = Path(sys.executable).parent / "v2c"
VIN = "VIN-1HGBH41JXMN109186"
START_TIMEOUT = 120.0  # a bound, not an expectation: the machine is shared


@contextmanager
def stack_up(directory: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`v2c stack up --dir directory`, output to `log`; terminated if the test fails."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(V2C), "stack", "up", "--dir", str(directory)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(90)


def wait_ready(directory: Path, process: subprocess.Popen[bytes], log: Path) -> StackSettings:
    stack_file = directory / "stack.json"
    wait_until(
        lambda: stack_file.exists() or process.poll() is not None,
        timeout=START_TIMEOUT,
        what="stack.json",
    )
    assert process.poll() is None, log.read_text()
    wait_until(lambda: "v2c stack status" in log.read_text(), what="the status table")
    return read_settings(stack_file)


def metric(url: str, line_start: str) -> str | None:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: str = response.read().decode()
    return next((line for line in body.splitlines() if line.startswith(line_start)), None)


def assert_nothing_left(settings: StackSettings) -> None:
    alive = {name: pid for name, pid in settings.processes.items() if processes.alive(pid)}
    listening = [address for address in addresses(settings) if port_accepts(*address)]
    assert (alive, listening) == ({}, [])


def open_files_limit(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    line = next(line for line in limits if line.startswith("Max open files"))
    return int(line.split()[3])  # the soft limit


def stored_samples(settings: StackSettings, vin: str) -> int:
    """Telemetry records of `vin` in the stack's own table, read through its moto."""
    answer = settings.aws.client("dynamodb").query(
        TableName=settings.resources.telemetry_table,
        KeyConditionExpression="vehicle_id = :v",
        ExpressionAttributeValues={":v": {"S": vin}},
        Select="COUNT",
    )
    return answer["Count"]


def v2c(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(V2C), *args], capture_output=True, text=True, timeout=120)


def test_stack_up_serves_an_mtls_vehicle_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    directory, log = tmp_path / "stack", tmp_path / "up.log"
    with stack_up(directory, log) as up:
        # Given a ready stack
        settings = wait_ready(directory, up, log)
        output = log.read_text()
        for component in (
            *("mosquitto vehicles (mTLS)", "mosquitto services (mTLS)"),
            *("moto (AWS)", "gateway", "API"),
        ):
            assert component in output
        assert "mosquitto plain" not in output
        assert str(directory / "stack.json") in output
        assert f"v2c pki issue --vin {VIN} --stack {directory}" in output
        assert set(settings.processes) == {"stack", "mosquitto", "moto", "gateway", "api"}
        assert settings.processes["stack"] == up.pid
        assert v2c("stack", "status", "--dir", str(directory)).returncode == 0
        assert open_files_limit(settings.processes["mosquitto"]) >= 10_240  # 10,000 vehicles

        # And no listener of the stack admits a client without a certificate
        mqtt, gateway = settings.require_mqtt(), settings.gateway
        assert mqtt.tls_port is not None
        assert mqtt.ca_file is not None
        for port in (mqtt.tls_port, mqtt.port):
            for tls in (None, ssl.create_default_context(cafile=str(mqtt.ca_file))):
                with pytest.raises(MqttClientError):
                    PahoV5Client(mqtt.host, port, tls_context=tls, timeout=30).connect()

        # When a vehicle with a certificate from `v2c pki issue --stack` publishes over
        # mTLS (issued while the broker runs: it is registered there at once)
        issued = v2c("pki", "issue", "--vin", VIN, "--stack", str(directory))
        assert issued.returncode == 0, issued.stderr
        assert "registered in the running broker: new" in issued.stdout
        assert gateway is not None
        assert gateway.metrics_url is not None
        assert gateway.share_group is not None
        assert re.fullmatch(r"v2c-[0-9a-f]{32}", gateway.share_group)
        vehicles = directory / "pki" / "vehicles"
        endpoint = MqttEndpoint(
            mqtt.host,
            mqtt.tls_port,
            ca_file=str(mqtt.ca_file),
            cert_file=str(vehicles / f"{VIN}.pem"),
            key_file=str(vehicles / f"{VIN}.key"),
        )
        with vehicle_client(endpoint, VIN) as vehicle:
            publish_all(vehicle, [(f"v2c/v1/eu-west-1/{VIN}/ota/status", b"status")], qos=2)
            (sample,) = TelemetrySampler(VIN, seed=7).samples(1)
            telemetry = f"v2c/v1/eu-west-1/{VIN}/telemetry/vehicle"
            publish_all(vehicle, [(telemetry, sample.SerializeToString())], qos=1)

        # Then the gateway, connected with the service identity, handled it
        metrics = gateway.metrics_url
        assert metric(metrics, "v2c_gateway_connected ") == "v2c_gateway_connected 1.0"
        # (a malformed status report: routed to the OTA handler, which refuses it)
        routed = 'v2c_gateway_messages_received_total{rule="ota_status"} 1.0'
        wait_until(lambda: metric(metrics, routed) is not None, what=routed)
        # and its telemetry handlers, configured from the stack, stored the sample in its moto
        wait_until(lambda: stored_samples(settings, VIN) == 1, what="the stored sample")

        # And the fleet-manager API answers on loopback: public health, 401 without
        # the stack's key, and the campaigns list with it
        assert settings.api is not None
        assert settings.api.key_file is not None
        assert stat.S_IMODE(settings.api.key_file.stat().st_mode) == 0o600
        api_key = settings.api.key_file.read_text().strip()
        assert requests.get(f"{settings.api.url}/health", timeout=5).status_code == 200
        campaigns = f"{settings.api.url}/api/v1/ota/campaigns"
        assert requests.get(campaigns, timeout=5).status_code == 401
        listed = requests.get(campaigns, headers={"X-API-Key": api_key}, timeout=10)
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == []
        # One credential per role, each its own 0600 file; the fleet manager's is the default,
        # and a viewer's key reads but cannot write (403 in the API's shape)
        assert sorted(settings.api.key_files) == [
            "approver", "fleet_manager", "operator", "viewer"
        ]  # fmt: skip
        assert settings.api.key_files["fleet_manager"] == settings.api.key_file
        keys = {}
        for role, path in settings.api.key_files.items():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, role
            keys[role] = path.read_text().strip()
        assert len(set(keys.values())) == 4
        viewer = {"X-API-Key": keys["viewer"]}
        assert requests.get(campaigns, headers=viewer, timeout=10).status_code == 200
        refused = requests.post(campaigns, json={}, headers=viewer, timeout=10)
        assert (refused.status_code, refused.json()["reason"]) == (403, "forbidden")
        dlq = requests.get(
            f"{settings.api.url}/api/v1/dlq/ota",
            headers={"X-API-Key": keys["operator"]},
            timeout=10,
        )
        assert dlq.status_code == 200, dlq.text

        # When SIGTERM arrives
        up.send_signal(signal.SIGTERM)
        assert up.wait(90) == 0, log.read_text()

    # Then it said so, and no process, port or stack.json is left
    assert "stopped cleanly" in log.read_text()
    assert_nothing_left(settings)
    assert not (directory / "stack.json").exists()
    # And every process logged one JSON object per line, with one formatter, and
    # no AWS SDK chatter (the API's log once held 455 plain lines for one demo)
    for name, service in (("api", "v2c-api"), ("gateway", "v2c-gateway"), ("moto", "v2c-moto")):
        lines = (directory / "logs" / f"{name}.log").read_text().splitlines()
        records = [json_line(line, name) for line in lines if line.strip()]
        assert records or name == "moto", f"{name}.log is empty"
        assert {r["service"] for r in records} <= {service, "v2c-publisher", "v2c-ota-api"}
        assert not [r for r in records if r.get("logger", "").startswith(("botocore", "boto3"))]
    api_lines = (directory / "logs" / "api.log").read_text().splitlines()
    assert any(json_line(line, "api")["message"].startswith("API serving") for line in api_lines)


def json_line(line: str, log: str) -> dict[str, str]:
    try:
        record: dict[str, str] = json.loads(line)
    except ValueError:
        raise AssertionError(f"{log}.log: not a JSON line: {line!r}") from None
    assert {"level", "message", "timestamp", "service"} <= set(record), line
    return record


def test_stack_down_from_another_shell_stops_it_and_a_restart_keeps_its_ports(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "stack"
    with stack_up(directory, tmp_path / "up1.log") as first:
        before = wait_ready(directory, first, tmp_path / "up1.log")

        # A second stack in the same directory is refused while the first runs
        again = v2c("stack", "up", "--dir", str(directory))
        assert again.returncode == 3
        assert "already runs" in again.stderr

        down = v2c("stack", "down", "--dir", str(directory))
        assert down.returncode == 0, down.stdout + down.stderr
        assert first.wait(90) == 0
    assert_nothing_left(before)
    assert v2c("stack", "status", "--dir", str(directory)).returncode == 4  # no stack

    with stack_up(directory, tmp_path / "up2.log") as second:
        after = wait_ready(directory, second, tmp_path / "up2.log")
        second.send_signal(signal.SIGINT)  # Ctrl-C
        assert second.wait(90) == 0
    assert after.require_mqtt().tls_port == before.require_mqtt().tls_port
    assert after.require_mqtt().port == before.require_mqtt().port
    assert after.aws.endpoint_url == before.aws.endpoint_url
    assert after.gateway is not None
    assert before.gateway is not None
    assert after.gateway.share_group == before.gateway.share_group
    assert_nothing_left(after)
