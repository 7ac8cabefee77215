"""The statistics every bench report relies on: percentiles and Prometheus
histogram summaries."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram

from v2c.infra.bench.common import histogram_summary_ms, percentile, ratio, summarize_ns


def test_percentile_interpolates_between_sorted_values() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 90) == 4.6
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summarize_ns_reports_milliseconds_and_an_empty_sample_as_nulls() -> None:
    summary = summarize_ns([1_000_000, 3_000_000, 2_000_000])
    assert summary == {"count": 3, "mean": 2.0, "p50": 2.0, "p90": 2.8, "p99": 2.98, "max": 3.0}
    assert summarize_ns([])["p50"] is None


def test_histogram_summary_gives_exact_mean_and_bucket_interpolated_quantiles() -> None:
    registry = CollectorRegistry()
    hist = Histogram("lat_seconds", "x", ["rule"], buckets=(0.001, 0.002, 0.004), registry=registry)
    for value in (0.0005, 0.0015, 0.0015, 0.003):
        hist.labels("a").observe(value)
    hist.labels("b").observe(1.0)  # another label: not counted

    summary = histogram_summary_ms(registry, "lat_seconds", {"rule": "a"})
    assert summary["count"] == 4
    assert summary["mean"] == 1.625
    assert summary["p50"] == 1.5  # rank 2 of 4: halfway through the 1-2 ms bucket
    assert 2.0 < summary["p99"] <= 4.0
    assert histogram_summary_ms(registry, "lat_seconds", {"rule": "none"})["p50"] is None


def test_ratio_is_none_when_either_side_is_missing_or_zero() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0.0) is None
