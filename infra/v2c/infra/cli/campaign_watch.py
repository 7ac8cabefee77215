"""`v2c campaign watch`: a live view on stderr, then an exit code that says how it ended.

A script (or CI job) that runs `v2c campaign watch ID && next-step` must not
go on after a campaign a gate paused or that was rolled back, so each way a
campaign stops has its own code (`OUTCOME_CODES`, documented in
`v2c.infra.cli.errors` and docs/cli.md); only `completed` is 0. The live view
(one bar per update state, then the status, the current wave of how many,
the gate's verdict and the elapsed time) goes to stderr and is closed with a
newline before anything goes to stdout, so the final table or JSON never
starts mid-line after the last bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from v2c.handlers.ota.domain.counters import Counter
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.infra.cli.errors import (
    OK,
    WATCH_CANCELLED,
    WATCH_FAILED,
    WATCH_PAUSED,
    WATCH_REJECTED,
    WATCH_ROLLED_BACK,
)

STATES: Final = tuple(Counter)
STYLE: Final[Mapping[Counter, str]] = {
    Counter.PENDING: "white",
    Counter.IN_PROGRESS: "cyan",
    Counter.COMPLETED: "green",
    Counter.FAILED: "red",
    Counter.ROLLED_BACK: "magenta",
    Counter.CANCELLED: "yellow",
    Counter.TIMED_OUT: "red3",
    Counter.WAITING: "blue",
}
# Where a watch stops, and its exit code. A paused campaign is not final (it
# may be resumed), but nothing moves until someone acts, so the watch ends.
OUTCOME_CODES: Final[Mapping[CampaignStatus, int]] = {
    CampaignStatus.COMPLETED: OK,
    CampaignStatus.PAUSED: WATCH_PAUSED,
    CampaignStatus.PLANNING_FAILED: WATCH_FAILED,
    CampaignStatus.CANCELLED: WATCH_CANCELLED,
    CampaignStatus.ROLLED_BACK: WATCH_ROLLED_BACK,
    CampaignStatus.REJECTED: WATCH_REJECTED,
}


def outcome_code(status: str) -> int | None:
    """The exit code once the watch may stop at `status`; None while it runs."""
    try:
        return OUTCOME_CODES.get(CampaignStatus(status))
    except ValueError:  # a status this CLI does not know: keep watching
        return None


def wave_line(campaign: Mapping[str, Any]) -> str:
    """`wave 2/3 canary (10 vehicles, gated)`: where the rollout is."""
    waves = campaign.get("waves") or []
    if not waves:
        return "waves: -"
    current = min(int(campaign.get("current_wave", 0)), len(waves) - 1)
    wave = waves[current]
    gated = ", gated" if wave.get("gated") else ""
    return f"wave {current + 1}/{len(waves)} {wave['name']} ({wave['size']} vehicles{gated})"


def gate_line(campaign: Mapping[str, Any]) -> str:
    gate = campaign.get("gate")
    if not gate:
        return "gate: not evaluated yet"
    return f"gate: {gate.get('verdict')}: {gate.get('reason')}"


def status_text(campaign: Mapping[str, Any], elapsed_s: float) -> Text:
    counters = campaign.get("counters") or {}
    percent = counters.get("progress_percent")
    done = "-" if percent is None else f"{percent:.0f} %"
    reason = campaign.get("status_reason") or ""
    lines = [
        f"status {campaign['status']}"
        + (f" ({reason})" if reason else "")
        + f"  progress {done}  elapsed {elapsed_s:.0f} s",
        wave_line(campaign),
        gate_line(campaign),
    ]
    return Text("\n".join(lines))


def bar_total(campaign: Mapping[str, Any]) -> int:
    """Each bar's total at this poll: a campaign still planning has no
    targets yet (`target_count` 0) and gains them wave by wave, so the total
    is read again at every poll, never kept from the first one; the larger of
    the counters' sum and `target_count`, at least 1 (a bar of 0 is empty)."""
    counters = campaign.get("counters") or {}
    counted = counters.get("total")
    if counted is None:  # an older API: the sum of the states
        counted = sum(int(counters.get(state, 0) or 0) for state in STATES)
    return max(1, int(counted or 0), int(campaign.get("target_count") or 0))


class WatchView:
    """The bars and the status lines, updated from each poll's campaign."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>11}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            console=console,
        )
        self.tasks = {s: self.progress.add_task(f"[{STYLE[s]}]{s}", total=1) for s in STATES}
        # Wrapped, not cropped: the stderr console soft-wraps (long paths
        # stay whole), which would cut the gate's reason at the edge.
        self.status = Text(no_wrap=False, overflow="fold")

    def update(self, campaign: Mapping[str, Any], elapsed_s: float) -> None:
        counters = campaign.get("counters") or {}
        total = bar_total(campaign)
        for state in STATES:
            self.progress.update(self.tasks[state], completed=counters.get(state, 0), total=total)
        fresh = status_text(campaign, elapsed_s)
        self.status.plain = fresh.plain

    def renderable(self) -> Group:
        return Group(self.progress, self.status)


def follow(
    fetch: Callable[[], dict[str, Any]],
    console: Console,
    *,
    interval_s: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], int | None]:
    """Poll until the campaign stops or `timeout_s` passes: (the last
    campaign, its exit code, or None when the time ran out)."""
    started = clock()
    campaign = fetch()
    view = WatchView(console)
    code = outcome_code(campaign["status"])
    with Live(view.renderable(), console=console, transient=False, refresh_per_second=4):
        view.update(campaign, 0.0)
        while code is None:
            if clock() - started > timeout_s:
                break
            sleep(interval_s)
            campaign = fetch()
            view.update(campaign, clock() - started)
            code = outcome_code(campaign["status"])
    if not console.is_terminal:
        # On a terminal Live ends its last line itself; in a file or a pipe
        # shared with stdout (2>&1) it does not, and the table would follow
        # the last bar on the same line.
        console.file.write("\n")
        console.file.flush()
    return campaign, code
