"""A bulk onboarding file cut into requests, and their answers put together again.

`v2c vehicle import` sends a large file in parts so it can show rows done out
of the total (one request for 10,000 rows is minutes of silence), and so a
file longer than one request's cap still goes in. Each part is a valid body
on its own (a CSV part repeats the header); the answers merge into the one
the API would have given for the whole file, rows numbered from its start.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any


def chunked(text: str, kind: str, size: int) -> Iterator[tuple[str, int]]:
    """The file as bodies of at most `size` rows each, with their row counts
    (a CSV's header repeated in each). Text that does not parse is sent
    whole, as one body, so the API names what is wrong with it."""
    if kind == "text/csv":
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
        if len(rows) - 1 <= size:
            yield text, max(0, len(rows) - 1)
            return
        header, data = rows[0], rows[1:]
        for start in range(0, len(data), size):
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(data[start : start + size])
            yield out.getvalue(), len(data[start : start + size])
        return
    try:
        items = json.loads(text)
    except ValueError:
        yield text, 0
        return
    if not isinstance(items, list) or len(items) <= size:
        yield text, len(items) if isinstance(items, list) else 0
        return
    for start in range(0, len(items), size):
        part = items[start : start + size]
        yield json.dumps(part), len(part)


def merged(answers: list[dict[str, Any]], rows: list[int]) -> dict[str, Any]:
    """The answers of a chunked import as one: counts summed, each row
    renumbered from the start of the whole file."""
    if len(answers) == 1:
        return answers[0]
    total: dict[str, Any] = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
    results: list[dict[str, Any]] = []
    offset = 0
    for answer, count in zip(answers, rows, strict=True):
        for key in total:
            total[key] += answer[key]
        results.extend({**row, "row": row["row"] + offset} for row in answer["results"])
        offset += count
    return {**total, "results": results}
