"""Arithmetic on inclusive ranges of sequence numbers, without I/O.

A stream's state at the hub is its contiguous mark (``through``) and what it holds or
knows to be lost above it. These functions turn sets of sequence numbers into sorted,
merged ranges and answer the two questions an Ack needs: how far is everything
accounted for, and what is missing below the highest sequence number known.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

Range = tuple[int, int]  # (first, last), inclusive, first <= last

# The most gaps one Ack carries (the wire contract's limit).
MAX_GAPS: Final = 100


def runs(seqs: Iterable[int]) -> list[Range]:
    """Sorted, merged ranges covering ``seqs``: a batch is usually one run."""
    result: list[Range] = []
    for seq in sorted(set(seqs)):
        if result and seq == result[-1][1] + 1:
            result[-1] = (result[-1][0], seq)
        else:
            result.append((seq, seq))
    return result


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted ranges with overlapping and adjacent ones joined."""
    result: list[Range] = []
    for first, last in sorted(ranges):
        if result and first <= result[-1][1] + 1:
            if last > result[-1][1]:
                result[-1] = (result[-1][0], last)
        else:
            result.append((first, last))
    return result


def advance(through: int, merged: Iterable[Range]) -> int:
    """The contiguous mark after ``through`` once ``merged`` (sorted, merged) is accounted for."""
    for first, last in merged:
        if first > through + 1:
            break
        through = max(through, last)
    return through


def gaps(low: int, high: int, merged: Iterable[Range], *, limit: int = MAX_GAPS) -> list[Range]:
    """Ranges within ``low..high`` not covered by ``merged`` (sorted, merged), lowest first, at most ``limit``."""
    result: list[Range] = []
    expected = low
    for first, last in merged:
        if expected > high or len(result) >= limit:
            break
        if last < expected:
            continue
        if first > expected:
            result.append((expected, min(first - 1, high)))
        expected = last + 1
    if expected <= high and len(result) < limit:
        result.append((expected, high))
    return result


def subtract(ranges: Iterable[Range], holes: Iterable[Range]) -> list[Range]:
    """The parts of ``ranges`` not covered by ``holes``, sorted and merged."""
    remove = merge(holes)
    result: list[Range] = []
    for first, last in merge(ranges):
        start = first
        for hole_first, hole_last in remove:
            if hole_last < start or hole_first > last:
                continue
            if hole_first > start:
                result.append((start, hole_first - 1))
            start = max(start, hole_last + 1)
            if start > last:
                break
        if start <= last:
            result.append((start, last))
    return result


def size(ranges: Iterable[Range]) -> int:
    """How many sequence numbers the (disjoint) ranges hold."""
    return sum(last - first + 1 for first, last in ranges)


def describe(ranges: Iterable[Range], *, limit: int = 10) -> str:
    """Ranges for people and logs, e.g. ``5-9, 12, 40-41 (+3 more)``."""
    listed = list(ranges)
    text = ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in listed[:limit])
    return f"{text} (+{len(listed) - limit} more)" if len(listed) > limit else text
