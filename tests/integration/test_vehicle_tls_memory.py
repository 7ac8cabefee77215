"""What the vehicles' mTLS sessions share to save memory, checked on real TLS
connections: an in-process asyncio TLS echo server that requires a client
certificate from the fleet CA, and clients using the vehicles' own context.
Sharing the read buffer must not mix up two connections' bytes."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest

from v2c.infra.pki.authority import PkiPaths, init_pki, issue_vehicle_cert
from v2c.vehicle_sim.tls_memory import client_context, share_read_buffer, trusted_ca

VINS = ("VIN-1HGBH41JXMN109186", "VIN-2HGBH41JXMN109187")
PAYLOAD = 300 * 1024  # bigger than the read buffer: many reads through it


@pytest.fixture
def pki(tmp_path: Path) -> PkiPaths:
    paths = init_pki(tmp_path / "pki")
    for vin in VINS:
        issue_vehicle_cert(paths.root, vin)
    return paths


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.more = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.more.set()

    async def until(self, size: int) -> bytes:
        while len(self.received) < size:
            self.more.clear()
            await asyncio.wait_for(self.more.wait(), 10)
        return bytes(self.received)


def _server_context(pki: PkiPaths) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    context.load_verify_locations(cafile=str(pki.ca_cert))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_two_sessions_share_one_read_buffer_and_their_bytes_stay_their_own(
    pki: PkiPaths,
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Echo, "127.0.0.1", 0, ssl=_server_context(pki))
        port = server.sockets[0].getsockname()[1]
        try:
            connections = []
            for vin in VINS:
                context = client_context(
                    pki.ca_cert, pki.vehicles_dir / f"{vin}.pem", pki.vehicles_dir / f"{vin}.key"
                )
                transport, protocol = await loop.create_connection(
                    _Collect, "localhost", port, ssl=context
                )
                assert transport.get_extra_info("peercert") is not None
                assert share_read_buffer(transport)
                connections.append((transport, protocol))

            buffers = [t._ssl_protocol._ssl_buffer for t, _ in connections]  # type: ignore[attr-defined]
            assert buffers[0] is buffers[1]  # one per thread, not one per connection
            assert all(t.get_extra_info("peercert") is None for t, _ in connections)
            ssl_object = connections[0][0].get_extra_info("ssl_object")
            assert ssl_object.getpeercert()["subject"]  # still there for who asks

            payloads = [os.urandom(PAYLOAD) for _ in connections]
            for (transport, _), payload in zip(connections, payloads, strict=True):
                transport.write(payload)
            echoed = await asyncio.gather(*(p.until(PAYLOAD) for _, p in connections))
            assert echoed == payloads
            for transport, _ in connections:
                transport.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_plain_tcp_transport_is_left_alone(pki: PkiPaths) -> None:
    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            transport, _ = await loop.create_connection(_Collect, "127.0.0.1", port)
            shared = share_read_buffer(transport)
            transport.close()
            return shared
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) is False
    assert share_read_buffer(None) is False


def test_the_ca_is_read_once_and_again_when_it_changes(pki: PkiPaths, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(pki.ca_cert.read_text())
    first = trusted_ca(ca)
    assert trusted_ca(ca) is first  # cached: not a file read per vehicle
    other = init_pki(tmp_path / "other").ca_cert.read_text()
    ca.write_text(other + "\n")  # a CA re-created with --force (another size)
    assert trusted_ca(ca) == other + "\n"
