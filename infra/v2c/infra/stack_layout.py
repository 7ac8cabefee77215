"""The files of a local stack directory, and the broker configuration built from them.

Shared by `LocalStack` (which runs the stack), `v2c stack status/down` (which
only read it) and tests that need a broker configured exactly like the
stack's without the rest of it. Paths are absolute, so child processes
started elsewhere agree on them.

Layout of `DIR` (default `./.stack`)::

    stack.json        written once every component is ready; removed at stop
    ports.json        the last ports, reused when free
    pki/              CA, broker and service identities, vehicles/ (`v2c pki`)
    broker/           mosquitto.conf, acl, mosquitto.db, mosquitto.log
    logs/             moto.log, gateway.log
    run/stack.json    what the gateway starts from (the stack before it is ready)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2c.infra.acl import ACL_NAME, write_acl
from v2c.infra.broker import CONFIG_NAME, BrokerTls, MosquittoConfig
from v2c.infra.pki import PkiPaths, init_pki
from v2c.infra.settings import STACK_FILE


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


def prepare_broker_files(layout: StackLayout) -> PkiPaths:
    """The PKI (idempotent) and the ACL the stack's broker needs."""
    paths = init_pki(layout.pki)
    write_acl(layout.acl)
    return paths


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
