"""The downloader's minimum-progress rule: bytes over a sliding window.

A server that keeps sending *something* never trips the stall timeout (no
byte for 30 s); trickling at 1 B/s it would hold the vehicle's only update
slot until the overall deadline (an hour), and every genuine update sent
meanwhile would be refused UPDATE_IN_PROGRESS. The rule: once a download
call has been transferring for `window_s`, the bytes received during the
last `window_s` must reach `min_bytes` (4 KiB per 60 s by default: a link
that slow would need 3.5 years for a 500 MB package), else the download
fails DOWNLOAD_TIMEOUT.

Pure: the caller passes the clock's readings (`RangeDownloader` passes its
injected clock, minus the time it spent in retry backoff, which is not the
server's slowness). Memory is bounded whatever the rate: bytes are summed
into `BUCKETS` time buckets of `window_s / BUCKETS` each, and the sum that is
checked covers the last `window_s` plus at most one bucket. So the rule never
fails a download that received `min_bytes` within the last `window_s`, and
fails a trickle at the first check after `window_s` (a reader checks at
least every stall timeout: the bound is `window_s` + the stall timeout).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from v2c.contract.errors import ValidationFailed

__all__ = ["BUCKETS", "MinimumProgress", "ProgressWindow"]

BUCKETS: Final = 16


@dataclass(frozen=True, slots=True)
class MinimumProgress:
    """At least `min_bytes` in every `window_s` of transfer (0 bytes: no rule)."""

    min_bytes: int = 4096
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.min_bytes < 0:
            raise ValidationFailed("the minimum progress must not be negative")
        if not self.window_s > 0:
            raise ValidationFailed("the minimum-progress window must be positive")

    @property
    def enabled(self) -> bool:
        return self.min_bytes > 0


class ProgressWindow:
    """Bytes received over the last `rule.window_s`, from time `started` on."""

    def __init__(self, rule: MinimumProgress, started: float) -> None:
        self.rule = rule
        self._started = started
        self._width = rule.window_s / BUCKETS
        self._buckets: deque[list[int]] = deque()  # [bucket index, bytes], oldest first

    def add(self, now: float, received: int) -> None:
        """`received` bytes arrived (by `now`)."""
        if received <= 0:
            return
        index = self._index(now)
        if self._buckets and self._buckets[-1][0] >= index:
            self._buckets[-1][1] += received
        else:
            self._buckets.append([index, received])
        self._forget(index)

    def received(self, now: float) -> int:
        """Bytes in the window that ends at `now` (the last `window_s`, give
        or take the bucket under way)."""
        self._forget(self._index(now))
        return sum(count for _, count in self._buckets)

    def shortfall(self, now: float) -> str | None:
        """Why the rule is broken at `now`, or None while it holds."""
        rule = self.rule
        if not rule.enabled or now - self._started < rule.window_s:
            return None
        got = self.received(now)
        if got >= rule.min_bytes:
            return None
        return (
            f"{got} bytes in the last {rule.window_s:g} s, below the minimum "
            f"of {rule.min_bytes} (minimum progress)"
        )

    def _index(self, now: float) -> int:
        return max(0, int((now - self._started) // self._width))

    def _forget(self, index: int) -> None:
        while self._buckets and self._buckets[0][0] < index - BUCKETS:
            self._buckets.popleft()
