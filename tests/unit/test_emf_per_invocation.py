"""In Lambda, an invocation's counts become one EMF line per service, not one per event."""

from __future__ import annotations

import json

import pytest

from v2c.handlers.emf_counts import emit_counts, emit_gauges, per_invocation


def emf_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


@per_invocation
def cancel_many(n: int) -> int:
    for _ in range(n):  # as a campaign cancel counts each update it moves
        emit_counts("ota", {"UpdatesCancelled": 1, "UpdatesFailed": 0})
    emit_counts("signing", {"SigningFailures": 1})
    emit_gauges("vehicles", {"CertificatesExpired": 0})  # a level: written at once
    return n


def test_a_thousand_counts_in_one_invocation_are_one_line_per_service(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "ota_api")

    assert cancel_many(1000) == 1000

    lines = emf_lines(capsys.readouterr().out)
    by_service = {line["service"]: line for line in lines}
    assert len(lines) == 3
    assert by_service["ota"]["UpdatesCancelled"] == [1000.0]
    assert "UpdatesFailed" not in by_service["ota"]  # zero: left out
    assert by_service["signing"]["SigningFailures"] == [1.0]
    assert by_service["vehicles"]["CertificatesExpired"] == [0.0]


def test_counts_of_an_invocation_that_raised_are_still_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "ota_api")

    @per_invocation
    def fails() -> None:
        emit_counts("ota", {"Rollbacks": 1})
        raise RuntimeError("the table went away")

    with pytest.raises(RuntimeError):
        fails()
    (line,) = emf_lines(capsys.readouterr().out)
    assert line["Rollbacks"] == [1.0]
    cancel_many(2)  # and the next invocation starts from zero
    ota = next(x for x in emf_lines(capsys.readouterr().out) if x["service"] == "ota")
    assert ota["UpdatesCancelled"] == [2.0]
    assert "Rollbacks" not in ota


def test_outside_lambda_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    cancel_many(3)
    assert emf_lines(capsys.readouterr().out) == []
