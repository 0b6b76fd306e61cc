"""The pure core of a rollout: how many gateways each stage takes, and what to do next given their outcomes.

Stages are cumulative: ``{"unit": "gateways", "sizes": [5, 100]}`` is five gateways first, then up to a hundred in
all; ``{"unit": "percent", "sizes": [10, 50, 100]}`` a tenth, then half, then all (rounded up, at least one gateway
a stage while any are left). The last stage always takes the rest, so no chosen gateway is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

StageUnit = Literal["gateways", "percent"]
# Outcomes of a gateway in a rollout; the final ones are those of FINAL_OUTCOMES.
WAITING: Final = "waiting"
SENT: Final = "sent"
DONE: Final = "done"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
FINAL_OUTCOMES: Final = frozenset({DONE, FAILED, SKIPPED})
# Command statuses (hub.commands.status) that end an update, and the outcome each gives.
COMMAND_OUTCOMES: Final = {
    "done": DONE,
    "failed": FAILED,
    "rejected": FAILED,
    "expired": FAILED,
    "undeliverable": FAILED,
}


def stage_counts(unit: StageUnit, sizes: Sequence[int], total: int) -> list[int]:
    """How many of ``total`` gateways each stage takes (not cumulative); empty stages are dropped."""
    counts: list[int] = []
    done = 0
    for index, size in enumerate(sizes):
        last = index == len(sizes) - 1
        wanted = total if last else (math.ceil(total * size / 100) if unit == "percent" else size)
        upto = min(total, max(wanted, done + 1 if done < total else done))
        if upto > done:
            counts.append(upto - done)
            done = upto
    return counts


def assign_stages(gateways: Sequence[tuple[str, str]], counts: Sequence[int]) -> list[tuple[str, str, int]]:
    """The gateways (in the order given) with their stage: the first ``counts[0]`` in stage 0, and so on."""
    assigned: list[tuple[str, str, int]] = []
    stage_of = [stage for stage, count in enumerate(counts) for _ in range(count)]
    for (store_id, gateway_id), stage in zip(gateways, stage_of, strict=True):
        assigned.append((store_id, gateway_id, stage))
    return assigned


@dataclass(frozen=True, slots=True)
class Step:
    """What the runner does next with a running rollout: ``wait``, ``advance`` to the next stage, ``done``, ``halt``."""

    action: Literal["wait", "advance", "done", "halt"]
    reason: str = ""


def next_step(outcomes: Sequence[tuple[int, str]], *, stage: int, stages: int, max_failed: int) -> Step:
    """The next step of a running rollout at ``stage`` of ``stages``, from each gateway's (stage, outcome).

    It halts as soon as more than ``max_failed`` gateways failed (counting every stage so far); it moves on only
    when every gateway of the stage has finished and the threshold holds; after the last stage it is done.
    """
    failed = sum(1 for _, outcome in outcomes if outcome == FAILED)
    if failed > max_failed:
        return Step(
            "halt",
            f"{failed} gateway(s) failed to update, more than the {max_failed} allowed; "
            f"the rollout stopped in stage {stage + 1} of {stages}",
        )
    if any(s == stage and outcome not in FINAL_OUTCOMES for s, outcome in outcomes):
        return Step("wait")
    if stage + 1 >= stages:
        return Step("done", f"every stage finished ({failed} failure(s), {max_failed} allowed)")
    return Step("advance", f"stage {stage + 1} of {stages} finished ({failed} failure(s), {max_failed} allowed)")
