"""Fault injection for integration tests: real failures, injected from outside the code under test.

`TcpProxy` sits between a client (a vehicle) and a server (mosquitto) on the
loopback interface and breaks the link the way a cellular network does, so
the client meets the failure through its own sockets, not through a mock:

* `cut()`: every connection is reset and new ones are refused (the modem lost
  its bearer). The client sees a closed socket at once.
* `blackhole()`: connections stay open but nothing flows either way, and new
  connections never reach the server (a tunnel, a dead cell, a NAT that lost
  its mapping: the "split brain" of the spec). The client only finds out by a
  timeout of its own. Bytes are held, not dropped, while the link is down,
  exactly as TCP retransmission would deliver them after the partition.
* `heal()`: traffic flows again.

The proxy runs an asyncio loop on a background thread; every state change
returns only after it took effect, so a test can publish right after `cut()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from v2c.infra.net import LOOPBACK

_CHUNK = 64 * 1024
_WAIT_S = 10.0


class LinkState(StrEnum):
    UP = "up"
    CUT = "cut"
    BLACKHOLE = "blackhole"


@dataclass(eq=False)
class _Connection:
    """One accepted client connection and, once the link allows, its upstream."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def abort(self, *, cancel: bool = True) -> None:
        """Reset both sockets (no FIN, unsent bytes discarded) and stop the pipes."""
        if cancel:
            for task in self.tasks:
                task.cancel()
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """A loopback TCP proxy to (upstream_host, upstream_port) whose link can be broken."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = LOOPBACK) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self._port = 0
        self._state = LinkState.UP
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        self.accepted = 0  # client connections accepted (refused ones included)

    # -- lifecycle (test thread) -------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_WAIT_S)
        self._loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the proxy has not started")
        return self._port

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def live_connections(self) -> int:
        return len(self._connections)

    # -- faults (test thread) ----------------------------------------------
    def cut(self) -> None:
        """Reset every connection now and refuse new ones until `heal()`."""
        self._call(self._set_state(LinkState.CUT))

    def blackhole(self) -> None:
        """Stop all traffic, keep connections open, stall new ones until `heal()`."""
        self._call(self._set_state(LinkState.BLACKHOLE))

    def heal(self) -> None:
        self._call(self._set_state(LinkState.UP))

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(_WAIT_S)

    # -- the loop's side ---------------------------------------------------
    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        self._connections.clear()

    async def _set_state(self, state: LinkState) -> None:
        assert self._flowing is not None
        self._state = state
        if state is LinkState.UP:
            self._flowing.set()
            return
        self._flowing.clear()
        if state is LinkState.CUT:
            for connection in list(self._connections):
                connection.abort()
            self._connections.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._state is LinkState.CUT:
            writer.transport.abort()
            return
        connection = _Connection(writer)
        self._connections.add(connection)
        task = asyncio.current_task()
        assert task is not None
        connection.tasks.add(task)
        try:
            await self._wait_flowing()  # a partition: the SYN never reaches the server
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
            connection.upstream = up_writer
            await asyncio.gather(
                self._pipe(connection, reader, up_writer),
                self._pipe(connection, up_reader, writer),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if self.state is LinkState.CUT:  # may have changed while we awaited
                connection.abort(cancel=False)
            else:
                self._close(connection)
            self._connections.discard(connection)

    async def _pipe(
        self, connection: _Connection, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection.tasks.add(task)
        try:
            while True:
                await self._wait_flowing()
                data = await source.read(_CHUNK)
                if not data:
                    break
                await self._wait_flowing()  # held, not dropped, while the link is down
                sink.write(data)
                await sink.drain()
        finally:
            # One direction ended: end the other too, as a TCP peer would.
            self._close(connection)

    async def _wait_flowing(self) -> None:
        assert self._flowing is not None
        await self._flowing.wait()

    @staticmethod
    def _close(connection: _Connection) -> None:
        for writer in (connection.client, connection.upstream):
            if writer is not None and not writer.is_closing():
                writer.close()
