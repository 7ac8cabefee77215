"""The stack's mosquitto.conf: a vehicle and a service mTLS listener under the
dynamic-security policy, no anonymous access anywhere, no retained messages."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from v2c.infra.local.mosquitto_config import (
    MAX_PACKET_SIZE,
    BrokerTls,
    MosquittoConfig,
    render_config,
)
from v2c.infra.local.stack_layout import StackLayout, broker_config, prepare_broker_files
from v2c.infra.pki.authority import PkiPaths, init_pki, issue_vehicle_cert

ROOT = Path("/srv/stack")
PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
VIN = "VIN-1HGBH41JXMN109186"


def stack_config(tls_port: int = 8883, service_port: int = 8884) -> MosquittoConfig:
    layout = StackLayout(ROOT)
    config = broker_config(
        layout, PkiPaths.for_dir(layout.pki), tls_port=tls_port, service_port=service_port
    )
    return replace(config, dynsec_plugin=PLUGIN)


def stack_lines(tls_port: int = 8883, service_port: int = 8884) -> list[str]:
    return render_config(stack_config(tls_port, service_port)).splitlines()


def section(lines: list[str], listener: str) -> list[str]:
    """The lines after `listener` up to the next listener line."""
    start = lines.index(listener) + 1
    rest = lines[start:]
    ends = [i for i, line in enumerate(rest) if line.startswith("listener ")]
    return rest[: ends[0]] if ends else rest


def test_vehicle_listener_trusts_the_fleet_ca_and_makes_the_cn_the_client_id() -> None:
    lines = stack_lines()

    assert section(lines, "listener 8883 127.0.0.1") == [
        f"cafile {ROOT}/pki/ca.pem",
        f"certfile {ROOT}/pki/server.pem",
        f"keyfile {ROOT}/pki/server.key",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        f"crlfile {ROOT}/pki/crl.pem",
    ]


def test_service_listener_trusts_the_service_ca_only_and_leaves_client_ids_alone() -> None:
    lines = stack_lines()

    assert section(lines, "listener 8884 127.0.0.1") == [
        f"cafile {ROOT}/pki/service-ca.pem",
        f"certfile {ROOT}/pki/server.pem",
        f"keyfile {ROOT}/pki/server.key",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
    ]


def test_one_policy_for_both_listeners_no_anonymous_no_acl_file_no_retained() -> None:
    lines = stack_lines()
    first_listener = next(i for i, line in enumerate(lines) if line.startswith("listener "))
    global_lines = lines[:first_listener]

    assert sum(line.startswith("listener ") for line in lines) == 2
    for line in (
        "per_listener_settings false",
        "allow_anonymous false",
        "retain_available false",
        f"plugin {PLUGIN}",
        f"plugin_opt_config_file {ROOT}/broker/dynamic-security.json",
    ):
        assert line in global_lines
    assert not any(line.startswith("acl_file") for line in lines)
    assert "allow_anonymous true" not in lines


def test_stack_broker_persists_and_enforces_the_128_kb_limit() -> None:
    lines = stack_lines()

    assert "persistence true" in lines
    assert f"persistence_location {ROOT}/broker/" in lines
    assert f"max_packet_size {MAX_PACKET_SIZE}" in lines


def test_rendering_needs_the_service_port_chosen_too() -> None:
    with pytest.raises(ValueError, match="port"):
        stack_lines(service_port=0)


TLS = BrokerTls(cafile=Path("/ca"), certfile=Path("/c"), keyfile=Path("/k"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"service_port": 1883, "service_tls": TLS}, "beside a TLS one"),
        ({"tls": TLS, "port": 1883, "service_port": 1883, "service_tls": TLS}, "both 1883"),
        ({"tls": TLS, "service_port": 70_000, "service_tls": TLS}, "outside"),
        ({"tls": TLS, "service_port": 1884}, "together"),
        ({"tls": TLS, "service_tls": TLS}, "together"),
    ],
)
def test_service_listener_needs_a_tls_listener_beside_it_and_a_port_of_its_own(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MosquittoConfig(data_dir=Path("/d"), **overrides)  # type: ignore[arg-type]


def test_stack_files_admit_every_vehicle_with_a_certificate_and_drop_the_old_acl(
    tmp_path: Path,
) -> None:
    # Given a stack directory from before the plugin (an ACL file) with one vehicle issued
    layout = StackLayout.for_dir(tmp_path / "stack")
    layout.broker.mkdir(parents=True)
    (layout.broker / "acl").write_text("pattern readwrite v2c/v1/+/%u/#\n")
    issue_vehicle_cert(init_pki(layout.pki).root, VIN)

    # When the stack prepares its broker
    prepare_broker_files(layout)

    # Then the policy knows the services, the admin and that vehicle, and nothing else
    state = json.loads(layout.dynsec.read_text())
    users = [client["username"] for client in state["clients"]]
    assert users == ["v2c-gateway", "v2c-admin", VIN]
    assert not (layout.broker / "acl").exists()
