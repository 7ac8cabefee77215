"""`v2c bench rollout` at a toy size: a real stack, a dozen mTLS vehicles, a
canary stage then the rest, to the end; the report's fields, its internal
consistency and the exact-counters verdict. No timing asserts."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_support import run_bench

VEHICLES = 12


@pytest.mark.timeout(400)
def test_bench_rollout_runs_a_staged_campaign_to_the_end_with_exact_counters(
    tmp_path: Path,
) -> None:
    args = [
        "--vehicles", str(VEHICLES), "--stages", "10,100", "--time-scale", "0.001",
        "--package-kib", "4", "--timeout", "240", "--dir", str(tmp_path / "run"),
    ]  # fmt: skip
    report, table = run_bench("rollout", args, tmp_path, timeout=380)

    assert report["parameters"]["vehicles"] == VEHICLES
    assert report["parameters"]["stages"] == [10, 100]
    assert report["machine"]["load_avg_1m_at_start"] is not None
    r = report["results"]
    assert len(r["load_avg_at_start"]) == 3

    campaign = r["campaign"]
    assert campaign["status"] == "completed"
    assert campaign["target_count"] == VEHICLES
    assert [w["name"] for w in campaign["waves"]] == ["stage-1", "stage-2"]
    assert [w["gated"] for w in campaign["waves"]] == [True, False]
    assert sum(w["size"] for w in campaign["waves"]) == VEHICLES
    assert campaign["gate"]["verdict"] == "pass"

    counters = r["counters"]
    assert counters["exact"] is True, counters["problems"]
    assert counters["problems"] == []
    assert counters["campaign_counters"]["completed"] == VEHICLES
    assert counters["records_by_counter"] == counters["campaign_counters"]
    assert counters["vehicles_by_counter"]["completed"] == VEHICLES
    assert counters["vehicles_running_new_version"] == VEHICLES
    for wave, size in zip(counters["waves"], (w["size"] for w in campaign["waves"]), strict=True):
        assert wave["campaign"] == wave["records"]
        assert wave["campaign"]["completed"] == size

    wall = r["wall_s"]
    for phase in ("onboarding", "connect", "upload", "create", "dispatch_to_terminal"):
        assert wall[phase] >= 0
    assert r["all_terminal"] is True
    assert r["stopped"] is None
    assert wall["create"] <= wall["planned"] <= wall["to_all_terminal"]
    assert wall["to_all_terminal"] >= wall["dispatch_to_terminal"]
    assert wall["total"] >= wall["onboarding"] + wall["to_all_terminal"]
    onboarding = r["onboarding"]
    assert onboarding["certificates_issued"] == VEHICLES
    assert onboarding["broker_policy_bytes"] > 0

    assert r["connect"]["connected"] == VEHICLES
    assert r["connect"]["broker_established"] >= VEHICLES  # the services' sessions too
    assert r["memory"]["kib_per_vehicle"] is not None

    notifications = r["notifications"]
    assert notifications["received"] == VEHICLES
    assert [w["size"] for w in notifications["per_wave"]] == [w["size"] for w in campaign["waves"]]
    reports = r["reports"]
    assert reports["stored"] == reports["sent"] > VEHICLES
    assert reports["dead_lettered"] == 0
    assert reports["per_s"] > 0

    assert set(r["cpu"]) == {"simulator", "sim_loop", "gateway", "api", "moto", "mosquitto"}
    assert all(part["cpu_s"] is not None for part in r["cpu"].values())

    aws = r["aws_requests"]
    assert aws["vehicles_updated"] == VEHICLES
    assert aws["backend_total"] == sum(p["backend"] for p in aws["phases"].values())
    assert set(aws["phases"]) == {"create", "planning", "dispatch"}
    assert aws["phases"]["create"]["backend"] >= 1
    assert aws["phases"]["dispatch"]["backend"] >= 1
    assert aws["phases"]["dispatch"]["bench_own"] >= 1  # its polls, left out of backend
    assert aws["vehicle_downloads"] >= VEHICLES
    assert aws["per_vehicle_update"] == round(aws["backend_total"] / VEHICLES, 2)
    assert report["ratios"]["aws_requests_per_vehicle_update"] == aws["per_vehicle_update"]
    assert "counters exact" in table
