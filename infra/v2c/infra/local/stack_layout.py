"""The files of a local stack directory, and the broker configuration built from them.

Shared by `LocalStack` (which runs the stack), `v2c stack status/down` (which
only read it) and tests that need a broker configured exactly like the
stack's without the rest of it. Paths are absolute, so child processes
started elsewhere agree on them.

Layout of `DIR` (default `./.stack`)::

    stack.json        written once every component is ready; removed at stop
    ports.json        the last ports, reused when free
    share_group       the gateway's shared-subscription group (kept across restarts)
    pki/              fleet and service CAs, broker, service and admin identities,
                      vehicles/ (`v2c pki`)
    broker/           mosquitto.conf, dynamic-security.json, mosquitto.db, mosquitto.log

The broker (`broker_config`): two mutual-TLS listeners on loopback and no
anonymous access anywhere. Vehicles connect to one that trusts the fleet CA
and makes the certificate CN both the username and the client id (a vehicle
is always its own VIN); cloud processes to one that trusts the service CA
only and lets them choose their client ids. What each identity may do is
`v2c.infra.device_policy`, enforced by mosquitto's dynamic-security plugin
(SUBSCRIBE included); retained publishes are refused. The vehicle listener
reads the fleet CA's CRL (`pki/crl.pem`, `v2c.infra.pki.crl`), so a revoked
vehicle certificate is refused at the handshake, as an expired one is.
    logs/             moto.log, gateway.log
    run/stack.json    what the gateway starts from (the stack before it is ready)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from v2c.infra.device_policy import dynsec_config
from v2c.infra.local.mosquitto_config import CONFIG_NAME, DYNSEC_NAME, BrokerTls, MosquittoConfig
from v2c.infra.pki.authority import PkiPaths, init_pki
from v2c.infra.pki.crl import crl_path, init_crl
from v2c.infra.settings import STACK_FILE, MqttSettings

SHARE_GROUP_PREFIX: Final = "v2c-"
_SHARE_GROUP = re.compile(r"v2c-[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class StackLayout:
    """Where everything of a stack lives; absolute, so child processes agree on paths."""

    root: Path

    @classmethod
    def for_dir(cls, directory: Path) -> StackLayout:
        return cls(directory.expanduser().resolve())

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def broker(self) -> Path:
        return self.root / "broker"

    @property
    def dynsec(self) -> Path:
        return self.broker / DYNSEC_NAME

    @property
    def broker_marker(self) -> bytes:
        return str(self.broker / CONFIG_NAME).encode()

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def stack_file(self) -> Path:
        return self.root / STACK_FILE

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def share_group_file(self) -> Path:
        return self.root / "share_group"


def write_dynsec(path: Path, vehicle_ids: Iterable[str]) -> Path:
    """Write the dynamic-security state: services, admin and `vehicle_ids` (atomically).

    Rendered whole at every `v2c stack up`, so the policy in force is always
    `device_policy`'s current one; vehicles issued while the broker runs are
    added through its control topic (`v2c.infra.local.broker_admin`), which the
    plugin saves here too.
    """
    text = json.dumps(dynsec_config(vehicle_ids), separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # nothing secret: names and topics
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def prepare_broker_files(layout: StackLayout) -> PkiPaths:
    """The PKI (idempotent; older directories upgraded) and the broker's policy.

    Every vehicle with a certificate in `pki/vehicles` is admitted from the start.
    """
    paths = init_pki(layout.pki)
    init_crl(layout.pki)  # the vehicle listener's `crlfile`: it must exist before the start
    write_dynsec(layout.dynsec, paths.vehicle_ids())
    # The ACL file of stacks made before the plugin: no longer read, so not left to mislead.
    (layout.broker / "acl").unlink(missing_ok=True)
    return paths


def new_share_group() -> str:
    """A shared-subscription group name: `v2c-` and 128 random bits."""
    return SHARE_GROUP_PREFIX + secrets.token_hex(16)


def stack_share_group(layout: StackLayout) -> str:
    """The stack's gateway share group: created once per stack directory, then reused.

    Not a secret and no security boundary: it shows in stack.json and on the
    gateway's command line. The broker's policy (`device_policy`) grants
    `$share/...` subscriptions to services only and refuses every vehicle
    subscription but its own literal topics (SUBACK 0x87), so knowing the
    name lets no vehicle join the group; AWS IoT Core does the same with
    `iot:Subscribe`.

    Persisted like ports.json, so a restarted stack keeps its group and a
    gateway resuming its persistent session stays in the same group.
    """
    path = layout.share_group_file
    try:
        remembered = path.read_text(encoding="utf-8").strip()
    except OSError:
        remembered = ""
    if _SHARE_GROUP.fullmatch(remembered):
        return remembered
    group = new_share_group()
    layout.root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(group + "\n")
    return group


def broker_settings(host: str, tls_port: int, service_port: int, pki: PkiPaths) -> MqttSettings:
    """How clients reach a broker configured by `broker_config`: services and the admin
    on the service listener, vehicles on `tls_port`; everybody trusts the fleet CA."""
    return MqttSettings(
        host=host,
        port=service_port,
        tls_port=tls_port,
        ca_file=pki.ca_cert,
        service_cert=pki.service.cert,
        service_key=pki.service.key,
        admin_cert=pki.admin.cert,
        admin_key=pki.admin.key,
    )


def broker_config(
    layout: StackLayout,
    pki: PkiPaths,
    *,
    tls_port: int = 0,
    service_port: int = 0,
    executable: Path | None = None,
) -> MosquittoConfig:
    """The stack's mosquitto: a vehicle and a service mTLS listener, the dynamic-security
    policy, no anonymous access, no retained messages, persistence on."""
    cert, key = pki.server.cert, pki.server.key
    vehicles = BrokerTls(
        pki.ca_cert, cert, key, use_username_as_clientid=True, crlfile=crl_path(pki.root)
    )
    services = BrokerTls(pki.service_ca_cert, cert, key)
    return MosquittoConfig(
        data_dir=layout.broker,
        port=tls_port,
        tls=vehicles,
        service_port=service_port,
        service_tls=services,
        dynsec_file=layout.dynsec,
        retain_available=False,
        allow_anonymous=False,
        persistence=True,
        executable=executable,
    )
