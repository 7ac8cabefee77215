"""How long a vehicle waits before its next connection attempt.

A fleet reconnects together: after a cell outage, a broker restart or a
fleet-wide software update, thousands of vehicles lose the connection in the
same second. Plain exponential backoff keeps them in lock-step, so every
retry wave hits the broker at once; jitter spreads each wave. The schedule is
the spec's (2, 4, 8, 16, 32 s, nominal delays capped at 60 s) and the jitter
is *added* to the nominal delay, so a vehicle never retries sooner than the
schedule says, and vehicles that reached the cap keep spreading instead of
all waiting exactly 60 s.

A quota refusal is different: the broker says it is overloaded (CONNACK 0x97
quota exceeded, 0x89 server busy, 0x9F connection rate exceeded). Retrying
sooner than its rate window only adds load, so the vehicle waits for the
window plus a random share of a jitter span (the spec: 60 s + 0-30 s).

A refusal that no retry can fix (bad certificate, banned, not authorized)
still retries, at the cap: a vehicle must never give up its uplink for
good, but it must not hammer the broker while a certificate is renewed.

Pure: the random source is injected and nothing sleeps here.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from v2c.contract.errors import MqttReasonCode

CONNECTION_RATE_EXCEEDED: Final = 0x9F
# CONNACK reason codes meaning "too many of you right now".
QUOTA_REASON_CODES: Final = frozenset(
    {MqttReasonCode.SERVER_BUSY, MqttReasonCode.QUOTA_EXCEEDED, CONNECTION_RATE_EXCEEDED}
)
# CONNACK reason codes no retry can fix without a change on one side.
REFUSED_REASON_CODES: Final = frozenset(
    {
        0x84,  # unsupported protocol version
        0x85,  # client identifier not valid
        0x86,  # bad user name or password (an expired certificate on AWS IoT)
        MqttReasonCode.NOT_AUTHORIZED,
        0x8A,  # banned
        0x8C,  # bad authentication method
    }
)


class ConnectFailure(StrEnum):
    NETWORK = "network"  # no CONNACK: refused socket, timeout, reset, TLS failure
    QUOTA = "quota"  # the broker is overloaded: wait for its window
    REFUSED = "refused"  # credentials or identity: retry slowly, alert someone
    SERVER = "server"  # any other CONNACK failure (0x80, 0x88 unavailable, ...)


def classify_connack(reason_code: int | None) -> ConnectFailure:
    """What kind of failure a connection attempt was; `None` means no CONNACK at all."""
    if reason_code is None:
        return ConnectFailure.NETWORK
    if reason_code in QUOTA_REASON_CODES:
        return ConnectFailure.QUOTA
    if reason_code in REFUSED_REASON_CODES:
        return ConnectFailure.REFUSED
    return ConnectFailure.SERVER


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_s: float = 2.0
    multiplier: float = 2.0
    max_s: float = 60.0
    jitter: float = 0.2  # up to this fraction of the nominal delay is added at random
    quota_window_s: float = 60.0
    quota_jitter_s: float = 30.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError("need 0 < initial_s <= max_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.jitter < 0 or self.quota_window_s < 0 or self.quota_jitter_s < 0:
            raise ValueError("jitter and quota times must not be negative")

    def nominal(self, attempt: int) -> float:
        """The delay before retry number `attempt` (1-based), without jitter."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        # Exponent bounded so a vehicle offline for weeks cannot overflow a float.
        exponent = min(attempt - 1, 64)
        return float(min(self.max_s, self.initial_s * self.multiplier**exponent))

    def delay(self, attempt: int, reason_code: int | None, random: Callable[[], float]) -> float:
        """Seconds to wait before retry `attempt` after a failure with `reason_code`.

        `random()` returns a float in [0, 1), as `random.random` does.
        """
        failure = classify_connack(reason_code)
        if failure is ConnectFailure.QUOTA:
            return self.quota_window_s + self.quota_jitter_s * random()
        nominal = self.max_s if failure is ConnectFailure.REFUSED else self.nominal(attempt)
        return nominal * (1.0 + self.jitter * random())


class Backoff:
    """Counts consecutive failed attempts and hands out the next delay."""

    def __init__(
        self, policy: BackoffPolicy | None = None, random: Callable[[], float] | None = None
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._random = random or _random.Random().random
        self._attempts = 0
        self.last_failure: ConnectFailure | None = None

    @property
    def attempts(self) -> int:
        """Failed attempts since the last success."""
        return self._attempts

    def failed(self, reason_code: int | None = None) -> float:
        """Record a failed attempt; return how long to wait before the next one."""
        self._attempts += 1
        self.last_failure = classify_connack(reason_code)
        return self.policy.delay(self._attempts, reason_code, self._random)

    def succeeded(self) -> None:
        self._attempts = 0
        self.last_failure = None
