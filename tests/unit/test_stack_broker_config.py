"""The stack's mosquitto.conf: an mTLS listener with the ACL beside a plain loopback one."""

from __future__ import annotations

from pathlib import Path

import pytest

from v2c.infra.broker import MAX_PACKET_SIZE, BrokerTls, MosquittoConfig, render_config
from v2c.infra.pki import PkiPaths
from v2c.infra.stack_layout import StackLayout, broker_config

ROOT = Path("/srv/stack")


def stack_lines(tls_port: int = 8883, plain_port: int | None = 1883) -> list[str]:
    layout = StackLayout(ROOT)
    config = broker_config(
        layout, PkiPaths.for_dir(layout.pki), tls_port=tls_port, plain_port=plain_port
    )
    return render_config(config).splitlines()


def section(lines: list[str], listener: str) -> list[str]:
    """The lines after `listener` up to the next listener line."""
    start = lines.index(listener) + 1
    rest = lines[start:]
    ends = [i for i, line in enumerate(rest) if line.startswith("listener ")]
    return rest[: ends[0]] if ends else rest


def test_tls_listener_requires_a_certificate_whose_cn_is_the_acl_username() -> None:
    lines = stack_lines()

    assert section(lines, "listener 8883 127.0.0.1") == [
        f"cafile {ROOT}/pki/ca.pem",
        f"certfile {ROOT}/pki/server.pem",
        f"keyfile {ROOT}/pki/server.key",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        f"acl_file {ROOT}/broker/acl",
    ]


def test_plain_listener_is_loopback_only_anonymous_and_outside_the_acl() -> None:
    lines = stack_lines()

    assert section(lines, "listener 1883 127.0.0.1") == ["allow_anonymous true"]


def test_two_listeners_make_security_settings_per_listener() -> None:
    lines = stack_lines()
    first_listener = next(i for i, line in enumerate(lines) if line.startswith("listener "))

    assert "per_listener_settings true" in lines
    # Before the first listener they would configure a default listener instead.
    assert not any(
        line.startswith(("allow_anonymous", "acl_file")) for line in lines[:first_listener]
    )


def test_stack_broker_persists_and_enforces_the_128_kb_limit() -> None:
    lines = stack_lines()

    assert "persistence true" in lines
    assert f"persistence_location {ROOT}/broker/" in lines
    assert f"max_packet_size {MAX_PACKET_SIZE}" in lines


def test_without_a_plain_port_the_single_listener_config_is_unchanged() -> None:
    lines = stack_lines(plain_port=None)

    assert "per_listener_settings false" in lines
    assert "allow_anonymous false" in lines[: lines.index("listener 8883 127.0.0.1")]
    assert sum(line.startswith("listener ") for line in lines) == 1


def test_rendering_needs_the_plain_port_chosen_too() -> None:
    with pytest.raises(ValueError, match="port"):
        stack_lines(plain_port=0)


TLS = BrokerTls(cafile=Path("/ca"), certfile=Path("/c"), keyfile=Path("/k"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"plain_port": 1883}, "beside a TLS one"),
        ({"tls": TLS, "port": 1883, "plain_port": 1883}, "both 1883"),
        ({"tls": TLS, "plain_port": 70_000}, "outside"),
    ],
)
def test_plain_port_needs_a_tls_listener_and_a_port_of_its_own(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MosquittoConfig(data_dir=Path("/d"), **overrides)  # type: ignore[arg-type]
