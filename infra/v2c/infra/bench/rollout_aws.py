"""Counting the AWS requests the stack's moto server serves, with moto's own recorder.

Why the recorder: moto 5 can append every request its server handles
(method, URL, headers, body) to a JSON-lines file, switched on and off at
run time (`POST /moto-api/recorder/start-recording`, `.../stop-recording`);
the file is `MOTO_RECORDER_FILEPATH` from the server's environment, which the
stack's moto child inherits from this process (`recording_env`). So the
count needs no change to the stack, the gateway or the API, and it counts
what the server really served, every client included: the gateway's
handlers, the API and its monitor, the vehicles' package downloads and this
bench's own polls.

What it costs: moto writes one line per request (JSON, the body base64) in
the request's thread, for DynamoDB inside the server's one DynamoDB lock
(`moto_server.atomic_dynamodb`): tens of microseconds beside the milliseconds
a moto request takes. `--no-count-aws` runs without it, for comparison.

Reading it: every entry starts with `{"headers": {`, written in the entry's
first write, and no header, URL or base64 body can contain that text; so the
number of requests is exactly the number of those starts, even where two
threads' writes of large entries interleaved (moto appends without a lock).
Each request is classified from the bytes after its start up to the next
start (at most 8 KiB), where its headers are (moto writes an entry's JSON in
one call, its newline in another, so a neighbour can only land after them):

* `bench`: this bench's own calls (its user agent carries `BENCH_AGENT`);
* `download`: presigned S3 GETs, i.e. vehicles fetching the package (in AWS,
  S3 or CloudFront requests of the vehicles, not of the backend);
* `backend`: everything else, by `service:action` (the SigV4 credential
  scope's service; the `X-Amz-Target` operation, or the HTTP method for
  REST services such as S3).

Phases: the file only grows, and its size at a moment covers every request
served by then; a request belongs to the phase whose byte range holds its start.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from v2c.infra.errors import BenchError

RECORDER_PATH_ENV: Final = "MOTO_RECORDER_FILEPATH"
BENCH_AGENT: Final = "v2c-bench-rollout"
ENTRY_START: Final = b'{"headers": {'
HEAD_BYTES: Final = 8192  # the headers of one entry lie within its first bytes
_TARGET: Final = re.compile(rb'"x-amz-target": "([^"]*)"', re.I)
_AGENT: Final = re.compile(rb'"user-agent": "([^"]*)"', re.I)
_SCOPE: Final = re.compile(rb"credential=[^/\"]*/\d{8}/[^/\"]*/([a-z0-9-]+)/aws4_request", re.I)
_QUERY_SCOPE: Final = re.compile(rb"x-amz-credential=[^&\"]*?%2f([a-z0-9-]+)%2faws4_request", re.I)
_METHOD: Final = re.compile(rb'"method": "([A-Z]+)"')
# Query-string authentication, SigV4 (`X-Amz-Signature`) or SigV2 (`Signature`).
_PRESIGNED: Final = re.compile(rb'"url": "[^"]*[?&](?:X-Amz-)?Signature=', re.I)
# X-Amz-Target prefixes, for a request without a credential scope.
_TARGET_SERVICE: Final = {
    "DynamoDB_20120810": "dynamodb",
    "TrentService": "kms",
    "AmazonSQS": "sqs",
    "AWSEvents": "events",
    "Timestream_20181101": "timestream",
}


@dataclass
class RequestTally:
    """The requests of one phase: by group (`bench`, `download`, `backend`) and
    the backend's by `service:action`."""

    groups: Counter[str] = field(default_factory=Counter)
    backend: Counter[str] = field(default_factory=Counter)

    @property
    def backend_total(self) -> int:
        return self.groups["backend"]

    def to_json(self) -> dict[str, object]:
        return {
            "backend": self.groups["backend"],
            "vehicle_downloads": self.groups["download"],
            "bench_own": self.groups["bench"],
            "backend_by_action": dict(self.backend.most_common()),
        }


def classify(head: bytes) -> tuple[str, str]:
    """(group, `service:action`) of one recorded request, from its entry's head."""
    agent = _AGENT.search(head)
    if agent is not None and BENCH_AGENT.encode() in agent.group(1):
        return "bench", ""
    method_match = _METHOD.search(head)
    method = method_match.group(1).decode() if method_match else "?"
    if method == "GET" and _PRESIGNED.search(head):
        return "download", "s3:GET"
    target_match = _TARGET.search(head)
    target = target_match.group(1).decode() if target_match else ""
    scope = _SCOPE.search(head) or _QUERY_SCOPE.search(head)
    prefix, _, operation = target.partition(".")
    if scope is not None:
        service = scope.group(1).decode().lower()
    else:
        service = _TARGET_SERVICE.get(prefix, prefix.lower() or "unknown")
    return "backend", f"{service}:{operation or method}"


def tally(path: Path, phases: Mapping[str, tuple[int, int]]) -> dict[str, RequestTally]:
    """Each phase's requests; a phase is a [start, end) byte range of the file."""
    out = {name: RequestTally() for name in phases}
    if not path.exists() or path.stat().st_size == 0:
        return out
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        starts = [m.start() for m in re.finditer(re.escape(ENTRY_START), data)]
        for at, following in zip(starts, [*starts[1:], len(data)], strict=True):
            phase = next((n for n, (a, b) in phases.items() if a <= at < b), None)
            if phase is None:
                continue
            # Up to the next entry's start: an interleaved neighbour's headers are not ours.
            group, action = classify(data[at : min(following, at + HEAD_BYTES)])
            out[phase].groups[group] += 1
            if group == "backend":
                out[phase].backend[action] += 1
    return out


@contextlib.contextmanager
def recording_env(path: Path) -> Iterator[None]:
    """`MOTO_RECORDER_FILEPATH` set while a moto server starts (it inherits it)."""
    before = os.environ.get(RECORDER_PATH_ENV)
    os.environ[RECORDER_PATH_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RECORDER_PATH_ENV, None)
        else:
            os.environ[RECORDER_PATH_ENV] = before


class MotoRecorder:
    """The recorder of a moto server started inside `recording_env(path)`."""

    def __init__(self, endpoint_url: str, path: Path) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.path = path

    def _call(self, action: str) -> None:
        url = f"{self.endpoint_url}/moto-api/recorder/{action}"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 - our loopback URL
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                if answer.status != 200:
                    raise BenchError(f"moto's recorder: {action} answered HTTP {answer.status}")
        except OSError as exc:
            raise BenchError(f"moto's recorder: {action} failed: {exc}") from exc

    def start(self) -> None:
        """Forget what was recorded so far and record from now on."""
        self._call("reset-recording")
        self._call("start-recording")
        if not self.path.exists():
            raise BenchError(
                f"moto's recorder writes elsewhere than {self.path}: "
                f"was the server started inside recording_env?"
            )

    def stop(self) -> None:
        self._call("stop-recording")

    def mark(self) -> int:
        """The file's size now: every request served so far lies before it."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0
