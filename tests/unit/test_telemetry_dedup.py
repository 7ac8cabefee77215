"""The in-process dedup window and the within-batch helpers (pure, fake clock)."""

from __future__ import annotations

import pytest

from v2c.handlers.telemetry.dedup import DedupWindow, first_occurrences, partition


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_id_is_a_duplicate_for_five_minutes_after_it_was_stored() -> None:
    clock = Clock()
    window = DedupWindow(clock=clock)
    window.add(["a"])

    clock.now += 299.9
    assert window.seen("a")
    clock.now += 0.2
    assert not window.seen("a")
    assert len(window) == 0


def test_an_id_never_stored_is_not_a_duplicate() -> None:
    window = DedupWindow(clock=Clock())
    window.add(["a"])

    assert not window.seen("b")


def test_storing_an_id_again_restarts_its_window() -> None:
    clock = Clock()
    window = DedupWindow(window_s=10, clock=clock)
    window.add(["a", "b"])
    clock.now += 8
    window.add(["a"])
    clock.now += 8

    assert window.seen("a")
    assert not window.seen("b")


def test_a_full_window_forgets_the_oldest_ids_first() -> None:
    window = DedupWindow(max_entries=3, clock=Clock())
    window.add(["a", "b", "c"])
    window.add(["d"])

    assert [window.seen(x) for x in "abcd"] == [False, True, True, True]
    assert len(window) == 3


def test_a_window_needs_a_positive_length_and_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        DedupWindow(window_s=0)
    with pytest.raises(ValueError, match="positive"):
        DedupWindow(max_entries=0)


def test_a_sample_repeated_inside_one_batch_is_kept_once_in_order() -> None:
    first, repeats = first_occurrences(["a", "b", "a", "c", "b"], key=lambda x: x)

    assert first == ["a", "b", "c"]
    assert repeats == ["a", "b"]


def test_partition_keeps_the_order_on_both_sides() -> None:
    new, duplicates = partition(range(6), lambda x: x % 2 == 1)

    assert (new, duplicates) == ([0, 2, 4], [1, 3, 5])
