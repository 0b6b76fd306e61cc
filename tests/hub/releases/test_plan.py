"""The pure core of a rollout: stage sizes and the next step."""

from __future__ import annotations

import pytest

from hub.releases.plan import FAILED, SENT, WAITING, assign_stages, next_step, stage_counts


@pytest.mark.parametrize(
    ("unit", "sizes", "total", "counts"),
    [
        ("gateways", [5, 100], 40, [5, 35]),
        ("gateways", [5, 100], 3, [3]),  # fewer gateways than the first stage: one stage
        ("gateways", [5, 10], 40, [5, 35]),  # the last stage takes the rest
        ("percent", [10, 50, 100], 40, [4, 16, 20]),
        ("percent", [1, 100], 3, [1, 2]),  # at least one gateway a stage while any are left
        ("gateways", [1], 1, [1]),
    ],
)
def test_stage_counts(unit: str, sizes: list[int], total: int, counts: list[int]) -> None:
    assert stage_counts(unit, sizes, total) == counts  # type: ignore[arg-type]
    assert sum(counts) == total


def test_gateways_are_assigned_in_order() -> None:
    gateways = [("s1", "g1"), ("s1", "g2"), ("s2", "g1")]
    assert assign_stages(gateways, [1, 2]) == [("s1", "g1", 0), ("s1", "g2", 1), ("s2", "g1", 1)]


def test_a_stage_moves_on_only_when_every_gateway_of_it_finished() -> None:
    assert next_step([(0, SENT), (1, WAITING)], stage=0, stages=2, max_failed=0).action == "wait"
    assert next_step([(0, "done"), (1, WAITING)], stage=0, stages=2, max_failed=0).action == "advance"
    assert next_step([(0, "done"), (1, "done")], stage=1, stages=2, max_failed=0).action == "done"


def test_past_the_threshold_it_halts_and_says_why() -> None:
    step = next_step([(0, FAILED), (0, SENT), (1, WAITING)], stage=0, stages=2, max_failed=0)
    assert step.action == "halt"
    assert "1 gateway(s) failed to update, more than the 0 allowed" in step.reason
    assert next_step([(0, FAILED), (0, "done"), (1, WAITING)], stage=0, stages=2, max_failed=1).action == "advance"
