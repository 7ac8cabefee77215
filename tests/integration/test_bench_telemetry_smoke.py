"""`v2c bench telemetry` end to end at a small size: it spawns its own moto
server and broker, runs every part (the pipeline phases through the real
gateway included), and prints one JSON document (and nothing else) on
stdout. Only the shape and the counts are checked, never a rate, a latency
or a ratio's value: the machine is shared."""

from __future__ import annotations

from pathlib import Path

from bench_support import run_bench

MESSAGES = 100
BATCH_SIZE = 25
BROKER_MESSAGES = 200
PACED = {  # (messages, samples): rate 50/s x 0.5 s, steady singles 20/s, steady batches 50/s
    "singles_at_paced_rate": (25, 25),
    "singles_at_steady_rate": (10, 10),
    "batches_at_paced_rate": (1, 25),
    "batches_at_steady_rate": (1, 25),
}


def test_bench_telemetry_prints_one_json_report_with_compression_baselines_and_handlers(
    tmp_path: Path,
) -> None:
    args = [
        *("--messages", str(MESSAGES), "--batch-size", str(BATCH_SIZE), "--vehicles", "2"),
        *("--compression-batches", "2", "--training-batches", "16"),
        *("--publishers", "1", "--broker-messages", str(BROKER_MESSAGES)),
        *("--rate", "50", "--duration", "0.5", "--steady-rate", "20"),
        *("--steady-batch-rate", "50"),
    ]
    report, stderr = run_bench("telemetry", args, tmp_path, timeout=240)
    assert report["parameters"]["messages"] == MESSAGES

    results = report["results"]
    assert set(results["compression"]) == {"25", "50"}
    for entry in results["compression"].values():
        for kind in ("zstd", "zstd_dictionary"):
            assert {"envelope_bytes", "bytes_per_sample", "compression_ratio"} <= entry[kind].keys()
    for phase in ("baseline_put_item", "baseline_batch_write", "handlers_singles"):
        assert results[phase]["stored"] == MESSAGES
        assert {"seconds", "msgs_per_s"} <= results[phase].keys()
    assert results["handlers_batches"]["stored"] == MESSAGES
    assert results["handlers_batches"]["batches"] == MESSAGES // BATCH_SIZE
    assert {"singles_vs_put_item", "batches_vs_batch_write", "batches_vs_singles"} <= set(
        report["ratios"]
    )
    assert "batches / singles" in stderr  # the human table went to stderr

    # Through broker, gateway and handlers: every published sample was stored.
    pipeline = results["pipeline"]
    assert pipeline["broker_pass_through"]["messages"] == BROKER_MESSAGES
    assert pipeline["broker_pass_through"]["msgs_per_s"] > 0
    for phase, messages in (("singles", MESSAGES), ("batches", MESSAGES // BATCH_SIZE)):
        entry = pipeline[phase]
        assert (entry["messages"], entry["stored"]) == (messages, MESSAGES)
        assert entry["verified_in_dynamodb"] == MESSAGES
        assert (entry["handled"], entry["failed"], entry["dead_lettered"]) == (messages, 0, 0)
        assert entry["publish_to_stored_ms"]["count"] == messages
        assert set(entry["cpu_us_per_sample"]) == {
            "publishers",
            "broker",
            "gateway_and_handlers",
            "moto",
        }
    assert set(pipeline["latency"]) == set(PACED)
    for name, (messages, samples) in PACED.items():
        entry = pipeline["latency"][name]
        assert (entry["messages"], entry["stored"]) == (messages, samples)
        assert (entry["handled"], entry["failed"]) == (messages, 0)
        for latency in ("publish_to_stored_ms", "scheduled_to_stored_ms"):
            assert entry[latency]["count"] == messages
            assert 0 < entry[latency]["p50"] <= entry[latency]["p99"]
        assert {"publish_per_s", "stored_per_s", "stored_per_s_while_offered"} <= entry.keys()
        assert isinstance(entry["sustained"], bool)
    for name, offered in (("singles_at_steady_rate", 20), ("batches_at_steady_rate", 50)):
        entry = pipeline["latency"][name]
        assert entry["offered_per_s"] == offered
        assert [a["offered_per_s"] for a in entry["attempts"]] == [offered]  # a fixed rate
    for key in (
        "pipeline_singles_vs_broker",
        "pipeline_singles_vs_put_item",
        "pipeline_singles_vs_handlers",
        "pipeline_batches_vs_batch_write",
        "pipeline_batches_vs_handlers",
    ):
        assert report["ratios"][key] > 0
    assert "end to end, singles" in stderr
