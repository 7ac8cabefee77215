"""A bulk onboarding file cut into requests (for a rows-done bar) and the answers merged."""

from __future__ import annotations

import csv
import io
import json

from v2c.infra.cli.bulk_rows import chunked, merged


def test_a_csv_is_cut_into_parts_that_each_repeat_the_header() -> None:
    text = "vin,model\n" + "".join(f'VIN-{n},"Accord, LX"\n' for n in range(5))

    parts = list(chunked(text, "text/csv", 2))

    assert [rows for _, rows in parts] == [2, 2, 1]
    for body, rows in parts:
        read = list(csv.reader(io.StringIO(body)))
        assert read[0] == ["vin", "model"]
        assert len(read) == rows + 1
        assert all(row[1] == "Accord, LX" for row in read[1:])  # quoting kept


def test_a_small_file_and_a_file_that_does_not_parse_go_whole() -> None:
    assert list(chunked("vin\nVIN-1\n", "text/csv", 10)) == [("vin\nVIN-1\n", 1)]
    assert list(chunked("[{", "application/json", 10)) == [("[{", 0)]


def test_a_json_array_is_cut_and_the_answers_merge_as_one() -> None:
    items = [{"vehicle_id": f"VIN-{n}"} for n in range(3)]
    parts = list(chunked(json.dumps(items), "application/json", 2))
    assert [json.loads(body) for body, _ in parts] == [items[:2], items[2:]]

    answers = [
        {"created": 1, "updated": 0, "unchanged": 0, "failed": 1,
         "results": [{"row": 1, "status": 201}, {"row": 2, "status": 400}]},
        {"created": 1, "updated": 0, "unchanged": 0, "failed": 0,
         "results": [{"row": 1, "status": 201}]},
    ]  # fmt: skip
    whole = merged(answers, [2, 1])
    assert (whole["created"], whole["failed"]) == (2, 1)
    assert [r["row"] for r in whole["results"]] == [1, 2, 3]  # numbered from the file's start
