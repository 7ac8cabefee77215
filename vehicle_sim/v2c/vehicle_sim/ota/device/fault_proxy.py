"""Download faults for simulated vehicles: a small HTTP proxy in front of S3.

The vehicles download their package from a presigned S3 URL (moto locally).
S3 does not fail on request, so the download faults of a fault profile are
made here, on the wire, where the vehicle's real downloader meets them:

=================  ============================================================
fault              what the proxy does (per vehicle, counted, deterministic)
=================  ============================================================
s3_unavailable     the first `failures` requests get HTTP 503; the downloader
                   retries with backoff and, at its attempt limit (3), reports
                   FAILED S3_UNAVAILABLE
connection_lost    the response that carries byte `at_percent` % of the
                   package is cut there (`times` times); then the link stays
                   down for `outage_requests` requests (headers, no body), so
                   the downloader gives up its attempts and reports PAUSED;
                   the runtime retries later and the download resumes from
                   the last complete chunk
checksum_mismatch  one byte in the middle of the package is flipped in
                   transit (`times` downloads): the SHA-256 check at the end
                   fails, FAILED CHECKSUM_MISMATCH, the file is deleted
=================  ============================================================

Only vehicles with one of these faults are routed through the proxy
(`url_for`); everyone else downloads from S3 directly. The proxy streams
(64 KiB at a time) and forwards the `Range` header and the URL byte for
byte, so the presigned signature stays valid. One proxy serves a whole fleet
on the fleet's event loop.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from aiohttp import web
from yarl import URL

from v2c.vehicle_sim.ota.device.faults import (
    ChecksumMismatch,
    ConnectionLost,
    S3Unavailable,
    VehicleFaults,
)

logger = logging.getLogger(__name__)

PIECE: Final = 64 * 1024
FORWARDED: Final = (
    "Content-Range",
    "Content-Length",
    "Content-Type",
    "ETag",
    "Last-Modified",
    "Accept-Ranges",
    "Retry-After",
)
_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$", re.IGNORECASE)


@dataclass(slots=True)
class _Plan:
    """One vehicle's remaining download faults."""

    s3_failures: int = 0
    cuts: int = 0
    cut_percent: float = 50.0
    outage: int = 0  # requests still refused after a cut
    corruptions: int = 0

    @property
    def active(self) -> bool:
        return bool(self.s3_failures or self.cuts or self.outage or self.corruptions)


def has_download_faults(faults: VehicleFaults) -> bool:
    return any(
        faults.get(kind) is not None for kind in (S3Unavailable, ConnectionLost, ChecksumMismatch)
    )


class DownloadFaultProxy:
    """`await start()`, then `url_for(vehicle, faults, url)` per download."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        outage_requests: int = 3,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.outage_requests = outage_requests
        self._session = session
        self._own_session = session is None
        self._plans: dict[str, _Plan] = {}
        self._runner: web.AppRunner | None = None
        self.requests = 0
        self.injected: dict[str, int] = {"s3_unavailable": 0, "cut": 0, "outage": 0, "corrupt": 0}

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_get("/v/{vehicle}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        await site.start()
        server: Any = site._server  # aiohttp keeps the bound socket here; port 0 needs it
        if server is not None and getattr(server, "sockets", None):
            self._port = int(server.sockets[0].getsockname()[1])
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, vehicle_id: str, faults: VehicleFaults, url: str) -> str:
        """The URL the vehicle should use: through the proxy if it has download faults."""
        if not has_download_faults(faults) or self._runner is None:
            return url
        if vehicle_id not in self._plans:
            self._plans[vehicle_id] = _plan_for(faults)
        vehicle, upstream = quote(vehicle_id, safe=""), quote(url, safe="")
        return f"http://{self.host}:{self._port}/v/{vehicle}?u={upstream}"

    # -- serving -------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        plan = self._plans.get(request.match_info["vehicle"], _Plan())
        target = request.query.get("u", "")
        if not target.startswith(("http://", "https://")):
            return web.Response(status=400, text="missing upstream URL")
        if plan.s3_failures > 0:
            plan.s3_failures -= 1
            self.injected["s3_unavailable"] += 1
            return web.Response(status=503, text="injected: S3 unavailable")
        headers = {"Accept-Encoding": "identity"}
        if "Range" in request.headers:
            headers["Range"] = request.headers["Range"]
        assert self._session is not None
        try:
            upstream = await self._session.get(
                URL(target, encoded=True), headers=headers, auto_decompress=False
            )
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"upstream: {exc}")
        async with upstream:
            response = web.StreamResponse(status=upstream.status)
            for name in FORWARDED:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            if plan.outage > 0:  # the link is down: headers, then nothing
                plan.outage -= 1
                self.injected["outage"] += 1
                return _cut(request, response)
            start, total = _span(upstream)
            position = start
            async for piece in upstream.content.iter_chunked(PIECE):
                data = bytes(piece)
                if plan.corruptions and total and position <= total // 2 < position + len(data):
                    index = total // 2 - position
                    data = data[:index] + bytes([data[index] ^ 0x5A]) + data[index + 1 :]
                    plan.corruptions -= 1
                    self.injected["corrupt"] += 1
                cut_at = int(total * plan.cut_percent / 100) if total else -1
                if plan.cuts and position <= cut_at < position + len(data):
                    await response.write(data[: cut_at - position])
                    plan.cuts -= 1
                    plan.outage = self.outage_requests
                    self.injected["cut"] += 1
                    return _cut(request, response)
                await response.write(data)
                position += len(data)
            await response.write_eof()
            return response


def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Close the connection mid-response: the client sees a body cut short."""
    if request.transport is not None:
        request.transport.close()
    return response


def _span(upstream: aiohttp.ClientResponse) -> tuple[int, int]:
    """(first byte carried, object size) of an upstream response; size 0 if unknown."""
    match = _CONTENT_RANGE.match(upstream.headers.get("Content-Range", ""))
    if match is not None:
        return int(match[1]), int(match[3])
    if upstream.status == 200 and upstream.content_length is not None:
        return 0, upstream.content_length
    return 0, 0


def _plan_for(faults: VehicleFaults) -> _Plan:
    plan = _Plan()
    s3 = faults.get(S3Unavailable)
    if s3 is not None:
        plan.s3_failures = s3.failures
    lost = faults.get(ConnectionLost)
    if lost is not None:
        plan.cuts, plan.cut_percent = lost.times, lost.at_percent
    corrupt = faults.get(ChecksumMismatch)
    if corrupt is not None:
        plan.corruptions = corrupt.times
    return plan
