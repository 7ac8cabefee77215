"""`v2c bench gateway` end to end at a small size: it spawns its own broker,
runs every phase, and prints one JSON document (and nothing else) on stdout.
Only the shape and the counts are checked, never a rate: the machine is shared."""

from __future__ import annotations

from pathlib import Path

from bench_support import run_bench

MESSAGES = 500
PACED = 100  # --rate 200 x --duration 0.5
FLOOD = 200
INNOCENT = 25  # --innocent-rate 50 x --innocent-duration 0.5


def test_bench_gateway_prints_one_json_report_with_baseline_gateway_and_latency(
    tmp_path: Path,
) -> None:
    args = ["--messages", str(MESSAGES), "--publishers", "1", "--rate", "200", "--duration", "0.5"]
    args += ["--flood", str(FLOOD), "--innocent-rate", "50", "--innocent-duration", "0.5"]
    report, stderr = run_bench("gateway", args, tmp_path, timeout=480)

    assert report["machine"]["cpu_count"] >= 1
    assert report["machine"]["mosquitto"].startswith("2.")
    assert report["parameters"]["messages"] == MESSAGES
    assert report["parameters"]["qos"] == 1

    baseline, gateway = report["results"]["baseline"], report["results"]["gateway"]
    for phase in (baseline, gateway):
        assert phase["messages"] == MESSAGES
        assert phase["msgs_per_s"] > 0
        assert set(phase["cpu_us_per_msg"]) == {"publishers", "broker", "sink"}
        assert phase["puback_refused"] == 0
    assert (gateway["handled"], gateway["failed"]) == (MESSAGES, 0)
    assert 1 <= gateway["max_in_flight"] <= report["parameters"]["receive_maximum"]
    assert gateway["handler_latency_ms"]["count"] == MESSAGES

    latency = report["results"]["latency"]
    for name in ("baseline_publish_to_received_ms", "gateway_publish_to_handler_ms"):
        assert latency[name]["count"] == PACED
        assert 0 < latency[name]["p50"] <= latency[name]["p99"]
    assert latency["gateway_handler_latency_ms"]["count"] == PACED
    assert report["ratios"]["gateway_vs_baseline_throughput"] > 0

    fairness = report["results"]["fairness"]
    assert set(fairness) == {"alone", "valid_flood", "sample_bomb_flood"}
    for run, figures in fairness.items():
        assert figures["innocent_publish_to_handled_ms"]["count"] == INNOCENT
        assert figures["failed"] == 0
        if run != "alone":
            assert figures["flood"]["messages"] == FLOOD
            assert f"{run}_all_p50_vs_alone" in report["ratios"]
    assert fairness["sample_bomb_flood"]["dead_lettered"] == FLOOD  # one record per bomb
    assert fairness["valid_flood"]["dead_lettered"] == 0
    assert "gateway / baseline" in stderr  # the human table went to stderr
