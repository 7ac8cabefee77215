"""`campaign watch`'s bars count against the campaign's targets as they are now.

A campaign still planning has no targets (`target_count` 0) at the first poll;
the bars once kept that total and read "3/1" when the vehicles came. The
total is read again at every poll (`bar_total`); the view is rendered on a
Rich console of a fixed width, with no terminal.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from v2c.infra.cli.campaign_watch import WatchView, bar_total


def campaign(target_count: int, total: int | None, completed: int = 0) -> dict[str, Any]:
    counters: dict[str, Any] = {"completed": completed, "pending": max(0, (total or 0) - completed)}
    if total is not None:
        counters["total"] = total
    return {"status": "in_progress", "target_count": target_count, "counters": counters}


def test_the_total_is_the_larger_of_the_counters_and_the_targets() -> None:
    assert bar_total(campaign(0, 0)) == 1  # planning: an empty bar, not a bar of 0
    assert bar_total(campaign(0, 4)) == 4  # targets counted before target_count is set
    assert bar_total(campaign(6, 4)) == 6
    assert bar_total(campaign(5, None, completed=2)) == 5  # no `total`: the states' sum
    assert bar_total({"status": "planning"}) == 1


def test_bars_follow_a_campaign_that_was_still_planning_at_the_first_poll() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    view = WatchView(console)
    view.update(campaign(0, 0), 0.0)  # the first poll: still planning
    view.update(campaign(4, 4, completed=3), 1.0)
    console.print(view.progress)
    text = out.getvalue()
    assert "3/4" in text
    assert "3/1" not in text
    bars = [line for line in text.splitlines() if line.strip()]
    assert len(bars) == 8
    assert all(line.rstrip().endswith("/4") for line in bars), text  # every bar's new total
