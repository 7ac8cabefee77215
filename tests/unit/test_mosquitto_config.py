"""The generated mosquitto.conf: what the broker is told, checked without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from v2c.infra.local.mosquitto_config import (
    MAX_PACKET_SIZE,
    BrokerTls,
    MosquittoConfig,
    render_config,
)


def lines_of(config: MosquittoConfig) -> list[str]:
    return render_config(config).splitlines()


def test_plain_listener_binds_loopback_on_the_chosen_port_and_allows_anonymous() -> None:
    lines = lines_of(MosquittoConfig(data_dir=Path("/data"), port=18830))

    assert "listener 18830 127.0.0.1" in lines
    assert "allow_anonymous true" in lines
    assert not any(line.startswith(("cafile", "certfile", "keyfile")) for line in lines)


def test_packet_limit_is_aws_iot_cores_128_kb_by_default() -> None:
    assert MAX_PACKET_SIZE == 131_072
    assert "max_packet_size 131072" in lines_of(MosquittoConfig(data_dir=Path("/d"), port=1))


def test_persistence_writes_the_database_into_the_data_dir() -> None:
    lines = lines_of(MosquittoConfig(data_dir=Path("/var/v2c/broker"), port=1))

    assert "persistence true" in lines
    assert "persistence_location /var/v2c/broker/" in lines
    assert "persistence_file mosquitto.db" in lines


def test_persistence_off_leaves_out_the_location() -> None:
    lines = lines_of(MosquittoConfig(data_dir=Path("/d"), port=1, persistence=False))

    assert "persistence false" in lines
    assert not any(line.startswith("persistence_location") for line in lines)


def test_broker_keeps_the_callers_user_so_it_can_read_keys_it_was_given() -> None:
    lines = lines_of(MosquittoConfig(data_dir=Path("/d"), port=1, user="root"))

    assert lines[1] == "user root"


def test_log_goes_to_unbuffered_stderr_with_readable_timestamps() -> None:
    lines = lines_of(MosquittoConfig(data_dir=Path("/d"), port=1))

    assert "log_dest stderr" in lines
    assert "log_timestamp_format %Y-%m-%dT%H:%M:%S" in lines


def test_mutual_tls_takes_the_username_from_the_certificate_and_refuses_anonymous() -> None:
    tls = BrokerTls(cafile=Path("/pki/ca.pem"), certfile=Path("/pki/s.pem"), keyfile=Path("/k.pem"))
    config = MosquittoConfig(data_dir=Path("/d"), port=8883, tls=tls, acl_file=Path("/acl"))

    lines = lines_of(config)

    listener = lines.index("listener 8883 127.0.0.1")
    assert lines[listener + 1 :] == [
        "cafile /pki/ca.pem",
        "certfile /pki/s.pem",
        "keyfile /k.pem",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    assert "allow_anonymous false" in lines
    assert "acl_file /acl" in lines


def test_a_listener_can_bind_the_client_id_to_the_certificate_name() -> None:
    tls = BrokerTls(
        cafile=Path("/ca"), certfile=Path("/c"), keyfile=Path("/k"), use_username_as_clientid=True
    )

    lines = lines_of(MosquittoConfig(data_dir=Path("/d"), port=8883, tls=tls))

    assert lines[-2:] == ["use_identity_as_username true", "use_username_as_clientid true"]


def test_dynamic_security_loads_the_plugin_with_its_state_file() -> None:
    config = MosquittoConfig(
        data_dir=Path("/d"),
        port=1,
        dynsec_file=Path("/d/dynamic-security.json"),
        dynsec_plugin=Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"),
    )

    lines = lines_of(config)

    plugin = lines.index("plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    assert lines[plugin + 1] == "plugin_opt_config_file /d/dynamic-security.json"
    assert plugin < lines.index("listener 1 127.0.0.1")


def test_rendering_dynamic_security_needs_the_plugin_chosen() -> None:
    config = MosquittoConfig(data_dir=Path("/d"), port=1, dynsec_file=Path("/d/ds.json"))

    with pytest.raises(ValueError, match="plugin"):
        render_config(config)


def test_retained_messages_are_available_unless_turned_off() -> None:
    assert "retain_available true" in lines_of(MosquittoConfig(data_dir=Path("/d"), port=1))
    off = MosquittoConfig(data_dir=Path("/d"), port=1, retain_available=False)
    assert "retain_available false" in lines_of(off)


def test_tls_without_identity_usernames_still_admits_certificate_holders() -> None:
    tls = BrokerTls(
        cafile=Path("/ca"), certfile=Path("/c"), keyfile=Path("/k"), use_identity_as_username=False
    )

    assert "allow_anonymous true" in lines_of(MosquittoConfig(data_dir=Path("/d"), port=1, tls=tls))


def test_explicit_allow_anonymous_wins_over_the_derived_default() -> None:
    config = MosquittoConfig(data_dir=Path("/d"), port=1, allow_anonymous=False)

    assert "allow_anonymous false" in lines_of(config)


def test_rendering_needs_a_chosen_port() -> None:
    with pytest.raises(ValueError, match="port"):
        render_config(MosquittoConfig(data_dir=Path("/d")))


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": 70_000},
        {"port": -1},
        {"max_packet_size": 10},
        {"max_queued_messages": -1},
        {"data_dir": Path("/d\nlistener 1883 0.0.0.0")},
        {"acl_file": Path("/acl\nallow_anonymous true")},
        {"dynsec_file": Path("/ds\nallow_anonymous true")},
    ],
)
def test_values_that_would_corrupt_or_widen_the_config_are_refused(
    overrides: dict[str, object],
) -> None:
    settings: dict[str, object] = {"data_dir": Path("/d"), **overrides}

    with pytest.raises(ValueError, match=r"port|max_|config line"):
        MosquittoConfig(**settings)  # type: ignore[arg-type]
