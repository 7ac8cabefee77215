"""What a vehicle's mutual-TLS session costs in memory, and the parts of it that can be shared.

Measured with 1,000 mTLS sessions to mosquitto in one process (Python 3.11,
OpenSSL 3.0), per vehicle:

============================================  ========  =====================================
part                                          KiB       here
============================================  ========  =====================================
`ssl.SSLContext` with the CA, cert and key    ~25       one per vehicle: OpenSSL's SSL_CTX
                                                        holds the client certificate, and
                                                        Python sets no certificate per
                                                        connection; the CA file is read once
asyncio's TLS read buffer (`SSLProtocol`)     32 (256)  one per thread (`share_read_buffer`)
the broker's certificate decoded to a dict    ~2        dropped (`share_read_buffer`)
the connection: OpenSSL's SSL, the BIOs,      ~41       --
asyncio's transport objects
... plus the broker's TLS 1.3 session         ~12       the server's choice (mosquitto sends
tickets, kept after the handshake                       two; with OpenSSL's `NumTickets = 0`
                                                        it sends none): nothing a client
                                                        can refuse
============================================  ========  =====================================

The read buffer: asyncio's `SSLProtocol` gives every connection its own
`bytearray(max_size)` (256 KiB by default), and uses it only between the
transport's `get_buffer()` and `buffer_updated()`, two calls the selector
event loop makes back to back on its thread: `buffer_updated` copies the
bytes into the connection's `MemoryBIO` before anything else runs. So one
buffer per thread serves every connection of that thread's loop; swapped in
after the handshake, it saves the whole buffer per idle vehicle and keeps
reads as large as before. These are asyncio internals (the attributes are
checked, and nothing is changed when they are missing or when the loop
reads asynchronously, as the proactor loop does). The same call drops the
`peercert` extra, the broker's certificate decoded into Python objects at
the end of the handshake that verified it: nothing reads it afterwards
(`get_extra_info("peercert")` answers None; `ssl_object.getpeercert()`
still works).
"""

from __future__ import annotations

import ssl
import threading
from asyncio import sslproto
from asyncio.selector_events import BaseSelectorEventLoop
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["client_context", "share_read_buffer", "trusted_ca"]

_local = threading.local()


def trusted_ca(ca_file: Path) -> str:
    """The CA bundle's text, read from disk once per process (and again
    when the file changes), not once per vehicle."""
    stat = ca_file.stat()
    return _read_ca(str(ca_file), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _read_ca(path: str, _mtime_ns: int, _size: int) -> str:
    return Path(path).read_text(encoding="ascii")


def client_context(ca_file: Path, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    """A vehicle's TLS client context: verifies the broker against `ca_file`
    (host name included), TLS 1.2 at least, with its own certificate if given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=trusted_ca(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION  # the default already; stated, not assumed
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file))
    return context


def share_read_buffer(transport: Any) -> bool:
    """Point a TLS transport's read buffer at its thread's shared one.

    Call it on the loop's thread once the connection is up (a reconnect is a
    new transport: call it again). Returns False, changing nothing, when the
    transport is not asyncio's selector-loop TLS transport.
    """
    protocol = getattr(transport, "_ssl_protocol", None)
    if not isinstance(protocol, sslproto.SSLProtocol):
        return False
    internals: Any = protocol  # the attributes below are not in asyncio's API
    own = getattr(internals, "_ssl_buffer", None)
    if not isinstance(own, bytearray) or not hasattr(internals, "_ssl_buffer_view"):
        return False
    if not isinstance(getattr(internals, "_loop", None), BaseSelectorEventLoop):
        return False  # a proactor loop keeps the buffer while an overlapped read is pending
    shared: bytearray | None = getattr(_local, "buffer", None)
    if shared is None or len(shared) < len(own):
        shared = _local.buffer = bytearray(len(own))
        _local.view = memoryview(shared)
    if own is not shared:
        internals._ssl_buffer = shared
        internals._ssl_buffer_view = _local.view
    extra = getattr(internals, "_extra", None)
    if isinstance(extra, dict):  # the broker's certificate as a dict of tuples: ~2 KiB,
        extra.pop("peercert", None)  # verified in the handshake, read by nobody after
    return True
