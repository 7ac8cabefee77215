"""An HTTP proxy in front of the moto server that injects AWS service faults.

The code under test talks to it exactly as to AWS (boto3, HTTP, its own
retries) and meets throttling and partial failures in real responses, not
through a patched client. JSON-protocol services only (DynamoDB, Timestream):
a fault is chosen per request by a `FaultPolicy` looking at the operation
(`X-Amz-Target`, e.g. `DynamoDB_20120810.BatchWriteItem`).

Faults:
* `Throttle`: answer 400 with a JSON-protocol error (`ThrottlingException`,
  `ProvisionedThroughputExceededException`, `RejectedRecordsException` ...)
  without forwarding, as an overloaded service would;
* `LeaveUnprocessed`: forward only part of a BatchWriteItem and answer with
  the rest as `UnprocessedItems`, DynamoDB's partial-success answer that
  moto itself never gives.

Policies: `Nth` counts requests (`every_other`, `bursts`): deterministic for
one caller at a time. `FirstAttempts` faults each distinct write once, the
first time it is sent, whatever the concurrency: for writers that overlap
(a gateway's batches, two processes), where a running count could throttle
one write on every attempt while others' calls pass.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from v2c.infra.net import LOOPBACK

DYNAMODB_WRITES = frozenset({"DynamoDB_20120810.PutItem", "DynamoDB_20120810.BatchWriteItem"})
BATCH_WRITE = "DynamoDB_20120810.BatchWriteItem"
TRANSACT_WRITE = "DynamoDB_20120810.TransactWriteItems"
BATCH_WRITES = frozenset({BATCH_WRITE, TRANSACT_WRITE})
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    target: str  # X-Amz-Target, "" for REST services
    body: bytes


@dataclass(frozen=True)
class Throttle:
    code: str = "ThrottlingException"
    namespace: str = "com.amazonaws.dynamodb.v20120810"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LeaveUnprocessed:
    """Forward the first `keep` of every table's write requests (at least one)."""

    keep: float = 0.5


Fault = Throttle | LeaveUnprocessed
FaultPolicy = Callable[[Request], Fault | None]


def no_faults(request: Request) -> Fault | None:
    return None


class Nth:
    """Apply `fault` to requests of `targets` whose running number n (from 0)
    satisfies `when(n)`: `Nth(lambda n: n % 2 == 0)` is every other one."""

    def __init__(
        self,
        when: Callable[[int], bool],
        fault: Fault | None = None,
        targets: frozenset[str] = DYNAMODB_WRITES,
    ) -> None:
        self._when = when
        self._fault = fault or Throttle()
        self._targets = targets
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Fault | None:
        if request.target not in self._targets:
            return None
        with self._lock:
            n = next(self._counter)
        return self._fault if self._when(n) else None


def every_other(fault: Fault | None = None, targets: frozenset[str] = DYNAMODB_WRITES) -> Nth:
    return Nth(lambda n: n % 2 == 0, fault, targets)


def bursts(length: int, fault: Fault | None = None) -> Nth:
    """Half the requests, in runs of `length` failures then `length` passes:
    a run longer than the retry budget exhausts it."""
    return Nth(lambda n: (n // length) % 2 == 0, fault)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def write_identities(request: Request) -> set[str]:
    """What a write request writes, one identity per write that a retry sends again:

    * BatchWriteItem: each put item (or deleted key), whole: a retry, of the
      call or of the items left unprocessed, sends the same items again;
    * TransactWriteItems: each conditioned item as (table, key, the values its
      condition names): a caller that retries reads and decides again, so the
      new values (timestamps) differ but the record and the state it is
      conditioned on do not. Unconditioned items (a campaign's counter `ADD`)
      ride along with the records and are left out.
    """
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return set()
    found: set[str] = set()
    if request.target == BATCH_WRITE:
        for table, writes in body.get("RequestItems", {}).items():
            for write in writes:
                put, delete = write.get("PutRequest"), write.get("DeleteRequest")
                item = put["Item"] if put else (delete or {}).get("Key")
                found.add(_canonical([table, item]))
        return found
    for entry in body.get("TransactItems", []):
        for operation in entry.values():
            condition = operation.get("ConditionExpression")
            if not condition:
                continue
            values = operation.get("ExpressionAttributeValues", {})
            named = {v: values.get(v) for v in re.findall(r":\w+", condition)}
            key = operation.get("Key") or operation.get("Item")
            found.add(_canonical([operation.get("TableName"), key, named]))
    return found


class FirstAttempts:
    """Fault a write request none of whose writes (`write_identities`) was
    sent before; let every other request through. A write is thus refused at
    most once and the retry of a refused request passes: about half the
    write calls fail, whichever callers overlap, and no write is refused
    past a retry budget of two attempts.

    `faults` are used in turn for the faulted requests of each target; a
    `LeaveUnprocessed` throttles instead where it could not leave anything
    (not a BatchWriteItem, or one of a single item)."""

    def __init__(
        self,
        faults: tuple[Fault, ...] = (Throttle(),),
        targets: frozenset[str] = BATCH_WRITES,
    ) -> None:
        self._faults = faults
        self._targets = targets
        self._seen: set[str] = set()
        self._turns: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Fault | None:
        if request.target not in self._targets:
            return None
        identities = write_identities(request)
        with self._lock:
            if not identities or identities & self._seen:
                self._seen |= identities
                return None
            self._seen |= identities
            fault = self._faults[self._turns[request.target] % len(self._faults)]
            self._turns[request.target] += 1
        if isinstance(fault, LeaveUnprocessed) and (
            request.target != BATCH_WRITE or len(identities) < 2
        ):
            return Throttle()  # nothing to leave unprocessed: a write of one item
        return fault


class AwsFaultProxy:
    """`endpoint_url` is what clients under test use instead of moto's."""

    def __init__(self, upstream_url: str, policy: FaultPolicy = no_faults) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or LOOPBACK, parts.port or 80)
        self.policy = policy
        self.seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        # Errors the upstream itself answered, by (target, error code): a
        # transaction cancelled on a lost condition, say.
        self.upstream_errors: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _count(self, counter: Counter[str], target: str) -> None:
        with self._lock:
            counter[target] += 1

    def _count_error(self, target: str, answer: bytes) -> None:
        try:
            code = str(json.loads(answer).get("__type", "")).rpartition("#")[2]
        except (ValueError, AttributeError):
            code = ""
        with self._lock:
            self.upstream_errors[(target, code or "unknown")] += 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without NODELAY, Nagle and
                # the client's delayed ACK add ~40 ms to every response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: one line per request would flood the test output

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, self.headers.get("X-Amz-Target", ""), body
                )
                proxy._count(proxy.seen, request.target)
                fault = proxy.policy(request)
                if isinstance(fault, Throttle):
                    proxy._count(proxy.injected, request.target)
                    self._answer_error(fault)
                    return
                held: dict[str, list[Any]] = {}
                if isinstance(fault, LeaveUnprocessed) and request.target.endswith(
                    ".BatchWriteItem"
                ):
                    proxy._count(proxy.injected, request.target)
                    body, held = _split_batch(body, fault.keep)
                status, headers, answer = self._forward(body)
                if status >= 400:
                    proxy._count_error(request.target, answer)
                if held and status == 200:
                    data = json.loads(answer or b"{}")
                    data["UnprocessedItems"] = held
                    answer = json.dumps(data).encode()
                self._send(status, headers, answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay  # noqa: N815

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                connection = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    headers["Content-Length"] = str(len(body))
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    return response.status, response.getheaders(), response.read()
                finally:
                    connection.close()

            def _answer_error(self, fault: Throttle) -> None:
                payload = {
                    "__type": f"{fault.namespace}#{fault.code}",
                    "message": "injected by the test's fault proxy",
                    **fault.extra,
                }
                headers = [
                    ("Content-Type", "application/x-amz-json-1.0"),
                    ("x-amzn-RequestId", "fault-proxy"),
                ]
                self._send(400, headers, json.dumps(payload).encode())

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler


def _split_batch(body: bytes, keep: float) -> tuple[bytes, dict[str, list[Any]]]:
    request = json.loads(body)
    forwarded: dict[str, list[Any]] = {}
    held: dict[str, list[Any]] = {}
    for table, writes in request["RequestItems"].items():
        cut = max(1, int(len(writes) * keep))
        forwarded[table] = writes[:cut]
        if writes[cut:]:
            held[table] = writes[cut:]
    request["RequestItems"] = forwarded
    return json.dumps(request).encode(), held
