"""When certificate work runs: the vehicle's renewal timer and the stack's hourly expiry pass.

The vehicle checks at connect and then sets one loop timer for the moment its
certificate becomes due (simulated time), never a periodic poll; the local
stack invokes the rotation function's expiry pass as AWS's schedule does,
once at start and then every hour, and a failing pass never ends the loop.
No I/O: the session is never connected, the handler is the function's own
dispatch over a fake service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from v2c.contract.certificate_renewal import RenewalAnswer, RenewalRequest
from v2c.handlers.vehicles.rotation_lambda import handle
from v2c.handlers.vehicles.rotation_service import PassSummary
from v2c.infra.local.certificate_rotation import (
    EXPIRY_INTERVAL_S,
    FUNCTION_NAME,
    ExpirySchedule,
)
from v2c.vehicle_sim.identity.renewal import CertificateRenewal, IdentityFiles, RenewalConfig
from v2c.vehicle_sim.identity.schedule import RETRY_S, UNANSWERED_RETRY_S, RenewalSchedule
from v2c.vehicle_sim.mqtt_async import AsyncMqttSession, MqttTarget
from v2c.vehicle_sim.ota.device.sim_time import SimTime

VIN = "VIN-1HGBH41JXMN109186"
REGION = "eu-west-1"
DAY_S = 24 * 3600


# -- the vehicle's renewal timer -------------------------------------------------------


def certificate_ending(files: IdentityFiles, not_after: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, VIN)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def renewal_schedule(files: IdentityFiles, sim: SimTime) -> RenewalSchedule:
    session = AsyncMqttSession(VIN, MqttTarget("127.0.0.1", 1))  # never connected
    renewal = CertificateRenewal(VIN, REGION, session, files, clock=sim.now)
    return RenewalSchedule(renewal, session, sim)


@pytest.fixture
def files(tmp_path: Path) -> IdentityFiles:
    return IdentityFiles(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_a_certificate_not_yet_due_sets_one_timer_for_the_moment_it_becomes_due(
    files: IdentityFiles,
) -> None:
    async def scenario() -> None:
        sim = SimTime(1.0)
        schedule = renewal_schedule(files, sim)
        ends = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
        certificate_ending(files, ends)

        schedule.check()
        assert not schedule.rotating
        assert schedule.next_check_at == ends.timestamp() - 7 * DAY_S
        # connecting again replaces the timer, never adds one
        schedule.check()
        assert schedule.next_check_at == ends.timestamp() - 7 * DAY_S
        schedule.stop()
        assert schedule.next_check_at is None

    asyncio.run(scenario())


async def rotating(schedule: RenewalSchedule) -> None:
    """Return once the timer fired and a rotation started."""
    while True:
        if schedule.rotating:
            return
        await asyncio.sleep(0.01)


def test_when_the_timer_fires_the_due_certificate_is_rotated(files: IdentityFiles) -> None:
    async def scenario() -> None:
        # a simulated day passes in a tenth of a real second
        sim = SimTime(0.1 / DAY_S)
        schedule = renewal_schedule(files, sim)
        ends = datetime.fromtimestamp(int(sim.now()), UTC) + timedelta(days=8)
        certificate_ending(files, ends)

        schedule.check()
        assert not schedule.rotating
        timer_at = schedule.next_check_at
        assert timer_at == ends.timestamp() - 7 * DAY_S
        # the timer fires a simulated day later; the certificate is due then, and
        # the rotation waits for the connection (none here)
        await asyncio.wait_for(rotating(schedule), timeout=30)  # a bound, not an expectation
        assert sim.now() >= ends.timestamp() - 7 * DAY_S
        assert schedule.next_check_at is None
        assert schedule.renewals == schedule.failures == 0
        schedule.stop()
        await asyncio.sleep(0)
        assert not schedule.rotating

    asyncio.run(scenario())


def test_a_certificate_already_due_at_connect_is_rotated_at_once(files: IdentityFiles) -> None:
    async def scenario() -> None:
        sim = SimTime(1.0)
        schedule = renewal_schedule(files, sim)
        certificate_ending(files, datetime.now(UTC) + timedelta(days=5))

        schedule.check()
        assert schedule.rotating
        assert schedule.next_check_at is None
        schedule.check()  # connecting again while rotating starts nothing more
        assert schedule.rotating
        schedule.stop()

    asyncio.run(scenario())


class Unanswered:
    """A connected session on which the cloud answers each request with
    `reply` (None: no answer reaches the vehicle)."""

    def __init__(self, reply: RenewalAnswer | None) -> None:
        self.reply = reply
        self.renewal: CertificateRenewal | None = None
        self.requests: list[RenewalRequest] = []
        self._tasks: set[asyncio.Task[bool]] = set()

    async def wait_connected(self) -> None:
        return None

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Awaitable[bool]:
        request = RenewalRequest.decode(payload)
        self.requests.append(request)
        loop = asyncio.get_running_loop()
        if self.reply is not None and self.renewal is not None:
            answer = replace(self.reply, request_id=request.request_id)
            task = loop.create_task(
                self.renewal.handle_message(self.renewal.answer_topic, answer.encode())
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        acked: asyncio.Future[bool] = loop.create_future()
        acked.set_result(True)
        return acked

    async def reconnect(self, offline: Callable[[], Awaitable[None]] | None = None) -> None:
        raise AssertionError("nothing was issued")


async def failed_once(schedule: RenewalSchedule) -> None:
    """Return once a rotation failed."""
    while True:
        if schedule.failures:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("reply", "retry_s"),
    [(None, UNANSWERED_RETRY_S), (RenewalAnswer.rejected("r", "too early"), RETRY_S)],
    ids=["no-answer", "refused"],
)
def test_an_unanswered_rotation_asks_again_within_the_overlap_with_the_same_key(
    files: IdentityFiles, reply: RenewalAnswer | None, retry_s: float
) -> None:
    async def scenario() -> tuple[float, float, float | None]:
        sim = SimTime(1.0)
        link = Unanswered(reply)
        config = RenewalConfig(answer_timeout_s=0.05)  # the wait ends; its length is not checked
        renewal = CertificateRenewal(VIN, REGION, link, files, config=config, clock=sim.now)
        link.renewal = renewal
        schedule = RenewalSchedule(renewal, link, sim)
        certificate_ending(files, datetime.now(UTC) + timedelta(days=5))

        started = sim.now()
        schedule.check()
        await asyncio.wait_for(failed_once(schedule), timeout=30)  # a bound, not an expectation
        ended = sim.now()
        at = schedule.next_check_at
        schedule.stop()
        return started, ended, at

    started, ended, next_check_at = asyncio.run(scenario())

    # the next attempt: soon after no answer (the cloud may have issued, and keeps the
    # old certificate active for an hour only), an hour after a refusal
    assert next_check_at is not None
    assert started + retry_s <= next_check_at <= ended + retry_s
    assert UNANSWERED_RETRY_S < 3600 <= RETRY_S  # 3600: the cloud's default overlap
    # the key it asked with stays staged for that attempt, the old pair in place
    assert files.staged().key.exists()
    assert not files.staged().cert.exists()


# -- the stack's expiry pass -------------------------------------------------------------


class FakeRotation:
    def __init__(self, fail_first: int = 0) -> None:
        self.passes = 0
        self.fail_first = fail_first

    def end_overlaps(self) -> PassSummary:
        self.passes += 1
        if self.passes <= self.fail_first:
            raise ConnectionError("registry unreachable")
        return PassSummary(revoked=["old"], expiring={7: 1, 30: 2}, evaluated=3)


def invoked_as_the_function(service: FakeRotation, seen: list[tuple[Any, Any]]) -> Any:
    """The function's own dispatch (`rotation_lambda.handle`) over a fake service."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append((event, context))
        return handle(service, event, context)  # type: ignore[arg-type]

    return handler


class Hours:
    """A stop event's `wait`, an hour at a time: True (stop) after `n` waits."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.waited: list[float] = []

    def __call__(self, interval_s: float) -> bool:
        self.waited.append(interval_s)
        return len(self.waited) >= self.n


def test_the_schedule_runs_the_expiry_pass_at_start_then_every_hour() -> None:
    service = FakeRotation()
    seen: list[tuple[Any, Any]] = []
    schedule = ExpirySchedule(invoked_as_the_function(service, seen))
    hours = Hours(3)

    schedule.run(hours)

    assert service.passes == 3  # at start, then after the first and the second hour
    assert hours.waited == [EXPIRY_INTERVAL_S] * 3 == [3600.0] * 3
    for event, context in seen:
        assert event == {"v2c": "certificate_expiry"}  # template.yaml's Input
        assert context.function_name == FUNCTION_NAME
        assert 0 < context.get_remaining_time_in_millis() <= 30_000
    assert len({context.aws_request_id for _, context in seen}) == 3


def test_a_short_interval_is_what_the_schedule_waits() -> None:
    service = FakeRotation()
    hours = Hours(1)

    ExpirySchedule(invoked_as_the_function(service, []), interval_s=2.5).run(hours)

    assert hours.waited == [2.5]
    assert service.passes == 1


def test_a_failing_pass_is_logged_once_and_the_next_pass_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = FakeRotation(fail_first=2)
    schedule = ExpirySchedule(invoked_as_the_function(service, []))

    with caplog.at_level(logging.INFO, logger="v2c.certificates"):
        schedule.run(Hours(3))

    assert service.passes == 3
    assert schedule.failed_passes == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "registry unreachable" in errors[0].getMessage()
    assert any("work again after 2 failed" in r.getMessage() for r in caplog.records)
