"""The rollout bench's pure parts: the exact-counters verdict, the request
classification of moto's recording, and the per-wave notification windows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from v2c.infra.bench.rollout_aws import BENCH_AGENT, classify, tally
from v2c.infra.bench.rollout_counters import (
    COUNTERS,
    CampaignView,
    RecordView,
    compare,
    vehicle_view,
)
from v2c.infra.bench.rollout_watch import wave_windows


def counts(**values: int) -> dict[str, int]:
    return {name: values.get(name, 0) for name in COUNTERS}


def finished() -> tuple[CampaignView, RecordView]:
    campaign = CampaignView(
        "c1",
        "completed",
        10,
        counts(completed=9, failed=1),
        [counts(completed=1), counts(completed=8, failed=1)],
    )
    records = RecordView(
        counts(completed=9, failed=1),
        {0: counts(completed=1), 1: counts(completed=8, failed=1)},
        10,
    )
    return campaign, records


def vehicles(completed: int = 9, failed: int = 1, running: int = 9) -> list[tuple[str, str]]:
    states = [("COMPLETED", "2.0.0")] * completed + [("FAILED", "1.0.0")] * failed
    return [(s, "2.0.0" if i < running else "1.0.0") for i, (s, _v) in enumerate(states)]


def test_three_agreeing_views_are_exact() -> None:
    campaign, records = finished()
    assert compare(campaign, records, vehicle_view(vehicles(), "2.0.0")) == []


def test_a_record_counted_apart_from_the_campaign_is_named() -> None:
    campaign, records = finished()
    drifted = replace(records, counters=counts(completed=8, failed=2))
    problems = compare(campaign, drifted, vehicle_view(vehicles(), "2.0.0"))
    assert "campaign vs records: completed 9 != 8" in problems
    assert "campaign vs records: failed 1 != 2" in problems


def test_a_wave_off_by_one_fails_even_when_the_totals_agree() -> None:
    campaign, records = finished()
    waves = {0: counts(completed=2), 1: counts(completed=7, failed=1)}
    problems = compare(campaign, replace(records, waves=waves), vehicle_view(vehicles(), "2.0.0"))
    assert problems == [
        "wave 0 vs records: completed 1 != 2",
        "wave 1 vs records: completed 8 != 7",
    ]


def test_vehicles_that_disagree_with_the_store_fail_the_check() -> None:
    campaign, records = finished()
    assert compare(campaign, records, vehicle_view(vehicles(running=8), "2.0.0")) == [
        "8 vehicles run the new version, 9 completed"
    ]
    still = vehicle_view([*vehicles(completed=8), ("INSTALLING", "1.0.0")], "2.0.0")
    problems = compare(campaign, records, still)
    assert "1 targeted vehicles did not report an end" in problems


def test_an_unfinished_campaign_is_not_exact() -> None:
    campaign, records = finished()
    running = replace(campaign, status="in_progress", counters=counts(completed=9, in_progress=1))
    problems = compare(running, records, vehicle_view(vehicles(), "2.0.0"))
    assert "the campaign is in_progress, not completed" in problems
    assert "targets not terminal: {'pending': 0, 'in_progress': 1}" in problems


def entry(
    target: str = "", agent: str = "Boto3/1.0", method: str = "POST", url: str = "/"
) -> bytes:
    headers = {
        "User-Agent": agent,
        "Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/dynamodb/aws4_request",
    }
    if target:
        headers["X-Amz-Target"] = target
    body = {"headers": headers, "method": method, "url": url, "body": "", "body_encoded": False}
    return json.dumps(body).encode()


def test_requests_are_told_apart_by_agent_signature_and_target() -> None:
    assert classify(entry("DynamoDB_20120810.TransactWriteItems")) == (
        "backend",
        "dynamodb:TransactWriteItems",
    )
    assert classify(entry("DynamoDB_20120810.GetItem", agent=f"Boto3 {BENCH_AGENT}"))[0] == "bench"
    presigned = entry(method="GET", url="http://h/b/k?X-Amz-Credential=a&X-Amz-Signature=ff")
    assert classify(presigned) == ("download", "s3:GET")


def test_interleaved_entries_are_each_counted_once_in_their_phase(tmp_path: Path) -> None:
    first, second, third = (entry(f"DynamoDB_20120810.Op{i}") for i in range(3))
    # moto appends without a lock: another thread's entry can land inside a large
    # one after its first write (which holds its headers), tearing both lines.
    cut = len(first) - 10
    torn = first[:cut] + second + b"\n" + first[cut:] + b"\n" + third + b"\n"
    path = tmp_path / "rec.jsonl"
    path.write_bytes(torn)
    split = torn.index(third)
    phases = tally(path, {"a": (0, split), "b": (split, len(torn))})
    assert phases["a"].backend == {"dynamodb:Op0": 1, "dynamodb:Op1": 1}
    assert phases["b"].backend == {"dynamodb:Op2": 1}


def test_each_wave_is_timed_from_its_first_notification_to_its_last() -> None:
    series = [(1.0, 1), (5.0, 3), (9.0, 6), (9.5, 10)]
    assert wave_windows(series, [1, 2, 7]) == [(1, 0.0), (2, 0.0), (7, 0.5)]
    assert wave_windows([(1.0, 1)], [1, 5]) == [(1, 0.0), (5, None)]
