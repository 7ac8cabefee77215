"""What a local mosquitto is told: the configuration as a value, and its mosquitto.conf text.

Kept apart from the process (`v2c.infra.local.broker`) because it is pure:
the stack's layout, the broker admin and the unit tests render and check a
configuration without spawning anything, and what the file says (limits,
listeners, who may connect) is reviewed on its own, not between the
signals and the readiness polling of a child process.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from v2c.infra.net import LOOPBACK

MAX_PACKET_SIZE: Final = 128 * 1024  # AWS IoT Core's message limit, enforced locally too

# The files of a broker's data folder.
CONFIG_NAME: Final = "mosquitto.conf"
DYNSEC_NAME: Final = "dynamic-security.json"
LOG_NAME: Final = "mosquitto.log"
DB_NAME: Final = "mosquitto.db"


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener; with the defaults, mutual TLS where the certificate CN is the username.

    The CN is then the identity the broker's policy (ACL file or the
    dynamic-security plugin) is written against, which is how a vehicle (CN =
    VIN) is confined to its own topics. No password check runs for such a
    client (mosquitto's `handle_connect.c`). `use_username_as_clientid` also
    replaces the client id with that CN, so a certificate can only ever be
    its own session: nobody takes over another client id. `cafile` is the
    CA that verifies client certificates on this listener. `tls_version` is
    the minimum accepted (mosquitto 2.0 semantics), so TLS 1.3 clients still
    connect.
    """

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True
    use_identity_as_username: bool = True
    use_username_as_clientid: bool = False
    tls_version: Literal["tlsv1.2", "tlsv1.3"] = "tlsv1.2"
    # A CRL of `cafile`'s CA: a client certificate it lists is refused at the
    # handshake. Read at start and again on SIGHUP (`v2c.infra.pki.crl`).
    crlfile: Path | None = None

    def lines(self) -> list[str]:
        lines = [
            f"cafile {self.cafile}",
            f"certfile {self.certfile}",
            f"keyfile {self.keyfile}",
            f"tls_version {self.tls_version}",
            f"require_certificate {_flag(self.require_certificate)}",
            f"use_identity_as_username {_flag(self.use_identity_as_username)}",
        ]
        if self.use_username_as_clientid:
            lines.append("use_username_as_clientid true")
        if self.crlfile is not None:
            lines.append(f"crlfile {self.crlfile}")
        return lines


@dataclass(frozen=True)
class MosquittoConfig:
    """Everything the generated mosquitto.conf says; see mosquitto.conf(5) for 2.0.

    `port=0` asks `MosquittoBroker` to pick a free loopback port at the first
    start (and keep it across restarts). `allow_anonymous=None` derives it: a
    plain listener allows anonymous clients; a TLS listener that takes the
    username from the certificate does not need to.

    `service_port` with `service_tls` adds a second TLS listener beside the
    first (0: pick a free port), with a CA and options of its own: the stack
    gives vehicles one listener and cloud services the other. Security
    settings (anonymous access, the ACL file, the dynamic-security plugin)
    are global and apply to both.

    `dynsec_file` loads mosquitto's dynamic-security plugin with that state
    file (`v2c.infra.device_policy` renders it); `dynsec_plugin` is the
    plugin library, found at start when None. `retain_available=False` makes
    the broker refuse every retained publish (MQTT 5 clients are
    disconnected with reason 0x9A), so no client can park messages in it.
    """

    data_dir: Path
    host: str = LOOPBACK
    port: int = 0
    persistence: bool = True
    # Seconds between database saves; a SIGTERM stop always saves, a SIGKILL
    # loses what changed since the last save.
    autosave_interval: int = 60
    max_packet_size: int = MAX_PACKET_SIZE
    # Outgoing QoS 1/2 per client: enough for throughput tests, and a queue deep
    # enough that a slow test subscriber does not silently lose messages.
    max_inflight_messages: int = 100
    max_queued_messages: int = 100_000
    tls: BrokerTls | None = None
    service_port: int | None = None
    service_tls: BrokerTls | None = None
    acl_file: Path | None = None
    dynsec_file: Path | None = None
    dynsec_plugin: Path | None = None
    retain_available: bool = True
    allow_anonymous: bool | None = None
    # As root, mosquitto otherwise switches to the `mosquitto` user and can no
    # longer read keys or the data folder the caller created (FIELD_NOTES).
    user: str = field(default_factory=_current_user)
    connection_messages: bool = True
    sys_interval: int = 10
    executable: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            raise ValueError(f"port {self.port} is outside 0-65535")
        if (self.service_port is None) != (self.service_tls is None):
            raise ValueError("service_port and service_tls go together")
        if self.service_port is not None:
            if not 0 <= self.service_port <= 65_535:
                raise ValueError(f"service_port {self.service_port} is outside 0-65535")
            if self.tls is None:
                raise ValueError("service_port is a second listener beside a TLS one: set tls")
            if self.service_port == self.port != 0:
                raise ValueError(f"port and service_port are both {self.port}")
        if self.max_packet_size < 20:  # mosquitto refuses smaller values
            raise ValueError(f"max_packet_size {self.max_packet_size} is below 20 bytes")
        for name in ("max_inflight_messages", "max_queued_messages", "autosave_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for value in (self.host, self.user, str(self.data_dir), *self._paths()):
            if not value or any(c in value for c in "\r\n"):
                raise ValueError(f"{value!r} cannot be written into a mosquitto config line")

    def _paths(self) -> list[str]:
        files = (self.acl_file, self.dynsec_file, self.dynsec_plugin)
        paths = [str(p) for p in files if p is not None]
        for tls in (self.tls, self.service_tls):
            if tls is not None:
                paths += [str(tls.cafile), str(tls.certfile), str(tls.keyfile)]
                paths += [str(tls.crlfile)] if tls.crlfile is not None else []
        return paths

    @property
    def anonymous_allowed(self) -> bool:
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return self.tls is None or not self.tls.use_identity_as_username


def _flag(value: bool) -> str:
    return "true" if value else "false"


def render_config(config: MosquittoConfig) -> str:
    """The text of mosquitto.conf for `config`, whose ports (and plugin) must be chosen."""
    if config.port == 0 or config.service_port == 0:
        raise ValueError("choose a port before rendering (MosquittoBroker does)")
    security = []
    if config.acl_file is not None:
        security.append(f"acl_file {config.acl_file}")
    if config.dynsec_file is not None:
        if config.dynsec_plugin is None:
            raise ValueError(
                "choose the dynamic-security plugin before rendering (MosquittoBroker does)"
            )
        security += [
            f"plugin {config.dynsec_plugin}",
            f"plugin_opt_config_file {config.dynsec_file}",
        ]
    lines = [
        "# Generated by v2c.infra.local.broker: edits are overwritten at the next start.",
        f"user {config.user}",
        "per_listener_settings false",
        f"allow_anonymous {_flag(config.anonymous_allowed)}",
        f"retain_available {_flag(config.retain_available)}",
        f"max_packet_size {config.max_packet_size}",
        f"max_inflight_messages {config.max_inflight_messages}",
        f"max_queued_messages {config.max_queued_messages}",
        "set_tcp_nodelay true",
        f"sys_interval {config.sys_interval}",
        f"persistence {_flag(config.persistence)}",
    ]
    if config.persistence:
        # mosquitto appends the file name to the location without a separator.
        lines += [
            f"persistence_location {config.data_dir}/",
            f"persistence_file {DB_NAME}",
            f"autosave_interval {config.autosave_interval}",
        ]
    lines += [
        "log_dest stderr",  # unbuffered: stdout to a file would hold lines back
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        f"connection_messages {_flag(config.connection_messages)}",
    ]
    lines += security
    lines.append(f"listener {config.port} {config.host}")
    if config.tls is not None:
        lines += config.tls.lines()
    if config.service_tls is not None:
        lines.append(f"listener {config.service_port} {config.host}")
        lines += config.service_tls.lines()
    return "\n".join(lines) + "\n"
