"""Range arithmetic of sequence numbers, checked against plain sets."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from hub.ingest.seqs import Range, advance, describe, gaps, merge, runs, size, subtract

seq_sets = st.sets(st.integers(min_value=1, max_value=200), max_size=60)


def covered(ranges: list[Range]) -> set[int]:
    return {seq for first, last in ranges for seq in range(first, last + 1)}


def is_merged(ranges: list[Range]) -> bool:
    return all(first <= last for first, last in ranges) and all(
        a_last + 1 < b_first for (_, a_last), (b_first, _) in itertools.pairwise(ranges)
    )


def test_examples() -> None:
    assert runs([9, 1, 2, 5, 2]) == [(1, 2), (5, 5), (9, 9)]
    assert merge([(5, 9), (1, 3), (4, 4), (20, 30), (25, 26)]) == [(1, 9), (20, 30)]
    assert advance(0, [(1, 5), (7, 9)]) == 5
    assert advance(6, [(1, 5), (7, 9)]) == 9
    assert gaps(1, 12, [(3, 4), (7, 9)]) == [(1, 2), (5, 6), (10, 12)]
    assert subtract([(1, 10)], [(3, 4), (8, 20)]) == [(1, 2), (5, 7)]
    assert describe([(1, 1), (3, 9), (12, 12)], limit=2) == "1, 3-9 (+1 more)"


@given(seq_sets)
def test_runs_cover_exactly_the_seqs(seqs: set[int]) -> None:
    result = runs(seqs)
    assert covered(result) == seqs
    assert is_merged(result)


@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])), max_size=20))
def test_merge_keeps_what_is_covered(ranges: list[Range]) -> None:
    result = merge(ranges)
    assert covered(result) == covered(ranges)
    assert is_merged(result)
    assert size(result) == len(covered(ranges))


@given(seq_sets, st.integers(0, 50))
def test_advance_stops_at_the_first_missing_seq(seqs: set[int], through: int) -> None:
    expected = through
    while expected + 1 in seqs:
        expected += 1
    assert advance(through, runs(seqs)) == expected


@given(seq_sets, st.integers(1, 100), st.integers(1, 200), st.integers(1, 10))
def test_gaps_are_the_lowest_missing_ranges(seqs: set[int], low: int, high: int, limit: int) -> None:
    result = gaps(low, high, runs(seqs), limit=limit)
    missing = {seq for seq in range(low, high + 1) if seq not in seqs}
    assert is_merged(result)
    assert len(result) <= limit
    assert covered(result) <= missing
    if len(result) < limit:
        assert covered(result) == missing
    else:  # a prefix: nothing missing below the last reported gap is left out
        assert {seq for seq in missing if seq <= result[-1][1]} == covered(result)


@given(seq_sets, seq_sets)
def test_subtract_is_set_difference(kept: set[int], removed: set[int]) -> None:
    result = subtract(runs(kept), runs(removed))
    assert covered(result) == kept - removed
    assert is_merged(result)
