"""The demo's verdict on a campaign: what its canary's counters call for, nothing stricter.

A failing canary pauses the campaign; updates already in flight then finish,
and when their failures cross the failure threshold the campaign rolls back on
its own (BR-OTA-019/020). Which vehicles land in the canary is a random draw,
so a re-run of the demo may meet either outcome and must accept both.
"""

from __future__ import annotations

from typing import Any

from v2c.infra.cli.demo_view import gate_problem


def _campaign(status: str, wave: int, **counters: int) -> dict[str, Any]:
    names = ("pending", "in_progress", "completed", "failed", "rolled_back", "cancelled")
    return {
        "status": status,
        "current_wave": wave,
        "spec": {"pause_threshold_percent": 10},
        "waves": [{"counters": {name: counters.get(name, 0) for name in names}}],
    }


def test_a_failing_canary_may_end_paused_or_rolled_back_at_the_canary() -> None:
    assert gate_problem(_campaign("paused", 0, completed=17, failed=3)) == ""
    assert gate_problem(_campaign("rolled_back", 0, completed=4, failed=3, rolled_back=13)) == ""


def test_a_failing_canary_must_not_release_the_rollout() -> None:
    assert "but the campaign is" in gate_problem(
        _campaign("in_progress", 1, completed=17, failed=3)
    )
    assert "but the campaign is" in gate_problem(_campaign("completed", 1, completed=17, failed=3))


def test_without_auto_rollback_only_a_pause_is_right() -> None:
    campaign = _campaign("rolled_back", 0, completed=17, failed=3)
    campaign["spec"]["auto_rollback"] = False
    assert "but the campaign is rolled_back" in gate_problem(campaign)


def test_a_passing_canary_must_release_the_rollout() -> None:
    assert gate_problem(_campaign("in_progress", 1, completed=20)) == ""
    assert "not released" in gate_problem(_campaign("in_progress", 0, completed=20))


def test_a_rollback_after_the_gate_passed_rewrites_the_canary_and_is_no_gate_problem() -> None:
    # The canary completed and passed; wave 1's failures then rolled the whole
    # campaign back, the canary's vehicles with it.
    campaign = _campaign("rolled_back", 1, rolled_back=20)
    campaign["gate"] = {
        "verdict": "pass",
        "completed": 20,
        "failures": 0,
        "finished": 20,
        "eligible": 20,
    }
    assert gate_problem(campaign) == ""
    # The counts on record must pass the rules themselves, whatever the verdict says.
    campaign["gate"] |= {"completed": 14, "failures": 6}
    assert "but the campaign is rolled_back at wave 1" in gate_problem(campaign)
    campaign["gate"] = None  # no gate on record: a release past a failing canary
    assert "but the campaign is rolled_back at wave 1" in gate_problem(campaign)
