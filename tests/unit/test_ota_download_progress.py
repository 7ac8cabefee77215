"""The downloader's minimum-progress rule as pure logic, on an injected clock.

`ProgressWindow` is fed (time, bytes) by the caller; no test here waits. The
rule must fail a trickle once the window has passed, never fail a download
that received the minimum within the last window, and keep bounded memory
whatever the rate. The same rule against a real trickling HTTP server:
tests/integration/test_ota_download.py; through the vehicle runtime:
tests/integration/test_ota_agent_hardening_end_to_end.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from v2c.contract.errors import ValidationFailed
from v2c.vehicle_sim.ota.device.download import DownloadConfig
from v2c.vehicle_sim.ota.device.progress import BUCKETS, MinimumProgress, ProgressWindow

T0 = 1000.0  # any clock origin
EPS = 1e-6


def test_defaults_are_4_kib_per_60_s() -> None:
    rule = DownloadConfig().min_progress
    assert (rule.min_bytes, rule.window_s) == (4096, 60.0)


def test_a_1_byte_per_second_trickle_fails_when_the_window_has_passed() -> None:
    window = ProgressWindow(MinimumProgress(4096, 60.0), T0)
    first_failure = None
    for second in range(1, 3600):
        now = T0 + second
        window.add(now, 1)
        if window.shortfall(now) is not None:
            first_failure = second
            break
    assert first_failure == 60  # not the overall deadline (3600 s)
    detail = window.shortfall(T0 + 60)
    assert detail is not None
    assert "minimum progress" in detail
    assert "below the minimum of 4096" in detail


def test_nothing_is_judged_before_one_window_of_transfer() -> None:
    window = ProgressWindow(MinimumProgress(4096, 60.0), T0)
    assert window.shortfall(T0) is None
    assert window.shortfall(T0 + 59.999) is None
    assert window.shortfall(T0 + 60.0) is not None  # nothing at all arrived


def test_a_steady_link_at_the_minimum_rate_never_fails() -> None:
    rule = MinimumProgress(4096, 60.0)
    window = ProgressWindow(rule, T0)
    # 4096 bytes per 60 s, one piece every 0.5 s (35 bytes: a bit above the rate)
    now = T0
    for _ in range(10 * 120):
        now += 0.5
        window.add(now, 35)
        assert window.shortfall(now) is None


def test_a_stall_after_good_progress_fails_a_window_later() -> None:
    window = ProgressWindow(MinimumProgress(4096, 60.0), T0)
    for second in range(1, 121):
        window.add(T0 + second, 10_000)
    assert window.shortfall(T0 + 120) is None
    assert window.shortfall(T0 + 150) is None  # the last minute still holds 30 s of data
    # a window plus at most one bucket after the last byte, the rule bites
    assert window.shortfall(T0 + 120 + 60 + 60 / BUCKETS) is not None


def test_zero_bytes_disables_the_rule() -> None:
    window = ProgressWindow(MinimumProgress(0, 60.0), T0)
    assert window.shortfall(T0 + 10_000) is None


@pytest.mark.parametrize(("min_bytes", "window_s"), [(-1, 60.0), (4096, 0.0), (4096, -5.0)])
def test_nonsense_limits_are_refused(min_bytes: int, window_s: float) -> None:
    with pytest.raises(ValidationFailed):
        MinimumProgress(min_bytes, window_s)
    with pytest.raises(ValidationFailed):
        DownloadConfig(min_progress_bytes=min_bytes, min_progress_window_s=window_s)


def test_memory_is_bounded_whatever_the_rate() -> None:
    window = ProgressWindow(MinimumProgress(4096, 60.0), T0)
    now = T0
    for _ in range(200_000):  # 64 KiB every millisecond for 200 s
        now += 0.001
        window.add(now, 65_536)
    assert len(window._buckets) <= BUCKETS + 1
    assert window.received(now) >= 60 * 1000 * 65_536


arrivals = st.lists(
    st.tuples(st.floats(0, 600, allow_nan=False), st.integers(1, 5000)), max_size=200
)


@settings(max_examples=300, deadline=None)
@given(
    arrivals,
    st.floats(0, 700, allow_nan=False),
    st.integers(1, 20_000),
    st.sampled_from([1.0, 7.5, 60.0]),
)
def test_never_a_false_failure_and_never_a_missed_trickle(
    events: list[tuple[float, int]], check_at: float, min_bytes: int, window_s: float
) -> None:
    """Whatever arrives when: the rule holds if the last window received the
    minimum, and breaks if even the last window plus one bucket did not."""
    rule = MinimumProgress(min_bytes, window_s)
    window = ProgressWindow(rule, T0)
    now = T0 + check_at
    for at, count in sorted(events):
        if at <= check_at:
            window.add(T0 + at, count)
    # (a microsecond of slack either way: the clock is a float)
    in_window = sum(n for at, n in events if check_at - window_s + EPS <= at <= check_at)
    in_window_and_a_bucket = sum(
        n for at, n in events if check_at - window_s - window_s / BUCKETS - EPS < at <= check_at
    )
    verdict = window.shortfall(now)
    if abs(check_at - window_s) < EPS:
        return
    if check_at < window_s or in_window >= min_bytes:
        assert verdict is None
    elif in_window_and_a_bucket < min_bytes:
        assert verdict is not None
