"""The files of a local stack directory, and the broker configuration built from them.

Shared by `LocalStack` (which runs the stack), `v2c stack status/down` (which
only read it) and tests that need a broker configured exactly like the
stack's without the rest of it. Paths are absolute, so child processes
started elsewhere agree on them.

Layout of `DIR` (default `./.stack`)::

    stack.json        written once every component is ready; removed at stop
    ports.json        the last ports, reused when free
    share_group       the gateway's secret shared-subscription group (see below)
    pki/              CA, broker and service identities, vehicles/ (`v2c pki`)
    broker/           mosquitto.conf, acl, mosquitto.db, mosquitto.log
    logs/             moto.log, gateway.log
    run/stack.json    what the gateway starts from (the stack before it is ready)
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from v2c.infra.acl import ACL_NAME, write_acl
from v2c.infra.broker import CONFIG_NAME, BrokerTls, MosquittoConfig
from v2c.infra.pki import PkiPaths, init_pki
from v2c.infra.settings import STACK_FILE

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
    def acl(self) -> Path:
        return self.broker / ACL_NAME

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


def prepare_broker_files(layout: StackLayout) -> PkiPaths:
    """The PKI (idempotent) and the ACL the stack's broker needs."""
    paths = init_pki(layout.pki)
    write_acl(layout.acl)
    return paths


def new_share_group() -> str:
    """An unguessable shared-subscription group name: `v2c-` and 128 random bits."""
    return SHARE_GROUP_PREFIX + secrets.token_hex(16)


def stack_share_group(layout: StackLayout) -> str:
    """The stack's gateway share group: created once per stack directory, then reused.

    Why a secret: mosquitto 2.0.11's `acl_file` never checks SUBSCRIBE, so any
    vehicle may join a shared group. One that joins the gateway's group is
    handed a share of every message matching the filter, which the read ACL
    then refuses to deliver to it, and mosquitto drops them: the vehicle
    silently diverts other vehicles' traffic. A group nobody can guess keeps
    vehicles out. The residual risk is a leaked name (it lives in this file,
    in stack.json and on the gateway's command line: anyone who can read the
    stack directory or the process list can divert traffic). AWS IoT Core
    authorizes subscriptions (`iot:Subscribe` on the `$share/...` filter), so
    there the name need not be secret.

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


def broker_config(
    layout: StackLayout,
    pki: PkiPaths,
    *,
    tls_port: int = 0,
    plain_port: int | None = 0,
    executable: Path | None = None,
) -> MosquittoConfig:
    """The stack's mosquitto: mutual TLS with CN usernames and the ACL, persistence on."""
    tls = BrokerTls(cafile=pki.ca_cert, certfile=pki.server.cert, keyfile=pki.server.key)
    return MosquittoConfig(
        data_dir=layout.broker,
        port=tls_port,
        tls=tls,
        plain_port=plain_port,
        acl_file=layout.acl,
        persistence=True,
        executable=executable,
    )
