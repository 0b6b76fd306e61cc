"""What the protocol fuzz tests share: their hypothesis settings and the mutation of a good frame or line."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st


def fuzz(examples: int) -> settings:
    """Hypothesis settings for a fuzz test: no deadline, no example database written into the checkout."""
    return settings(max_examples=examples, deadline=None, database=None)


def mutate(draw: st.DrawFn, good: bytes, *, min_changes: int, max_changes: int) -> bytes:
    """``good`` with bytes flipped, dropped, inserted or cut off, ``min_changes`` to ``max_changes`` times."""
    data = bytearray(good)
    for _ in range(draw(st.integers(min_changes, max_changes))):
        operation = draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "drop" and data:
            del data[position]
        elif operation == "insert":
            data.insert(position, draw(st.integers(0, 255)))
        else:
            del data[position:]
    return bytes(data)
