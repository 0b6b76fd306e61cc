"""Footfall: moving blobs tracked by centroid across a counting line, counted per minute in and out.

Each blob of the motion mask is matched to the nearest track of the previous frames (within
``max_jump`` full-frame pixels); a track whose centroid goes from one side of the line to the
other, past a dead band either side of it and within the segment's ends, counts once for that
crossing: ``entered`` when it ends on the ``inside`` side, else ``exited``. Counts are kept per
minute of wall time and handed out when the minute is over (or on :meth:`FootfallCounter.flush`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from storegate.wire import CameraFootfall

DEAD_BAND_PX: Final = 6.0  # a centroid this close to the line keeps its side (no jitter counts)
MAX_MISSED: Final = 5  # analysed frames a track survives without a blob


@dataclass(slots=True)
class _Track:
    x: float
    y: float
    side: int  # -1, +1, or 0 before it was clearly on a side
    missed: int = 0


class FootfallCounter:
    """Counts crossings of one line; :meth:`step` takes blob centroids in full-frame pixels."""

    def __init__(
        self,
        *,
        name: str,
        start: tuple[int, int],
        end: tuple[int, int],
        inside: tuple[int, int],
        max_jump: float = 120.0,
        period_s: int = 60,
    ) -> None:
        self.name = name
        self.start = start
        self.end = end
        self.max_jump = max_jump
        self.period_s = period_s
        self._length = math.dist(start, end)
        self.inside_side = 1 if self._signed(inside) > 0 else -1
        self._tracks: list[_Track] = []
        self._period_start: datetime | None = None
        self.entered = 0
        self.exited = 0
        self.total_entered = 0
        self.total_exited = 0

    def _signed(self, point: tuple[float, float]) -> float:
        """Signed distance of ``point`` from the line (the sign says the side)."""
        (x1, y1), (x2, y2) = self.start, self.end
        return ((x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1)) / self._length

    def _within_segment(self, point: tuple[float, float]) -> bool:
        (x1, y1), (x2, y2) = self.start, self.end
        along = ((point[0] - x1) * (x2 - x1) + (point[1] - y1) * (y2 - y1)) / (self._length**2)
        return -0.05 <= along <= 1.05

    def _side(self, point: tuple[float, float]) -> int:
        distance = self._signed(point)
        return 0 if abs(distance) < DEAD_BAND_PX else (1 if distance > 0 else -1)

    def step(self, centroids: Sequence[tuple[float, float]], *, at: datetime) -> list[CameraFootfall]:
        """Feed one frame's blob centroids seen at ``at``; the periods that ended before it."""
        done = self._roll(at)
        unmatched = list(self._tracks)
        for point in centroids:
            best = min(unmatched, key=lambda tr: math.dist((tr.x, tr.y), point), default=None)
            if best is None or math.dist((best.x, best.y), point) > self.max_jump:
                self._tracks.append(_Track(point[0], point[1], self._side(point)))
                continue
            unmatched.remove(best)
            best.x, best.y, best.missed = point[0], point[1], 0
            side = self._side(point)
            if side == 0:
                continue
            if best.side == -side and self._within_segment(point):
                if side == self.inside_side:
                    self.entered += 1
                    self.total_entered += 1
                else:
                    self.exited += 1
                    self.total_exited += 1
            best.side = side
        for track in unmatched:
            track.missed += 1
        self._tracks = [track for track in self._tracks if track.missed <= MAX_MISSED]
        return done

    def _roll(self, at: datetime) -> list[CameraFootfall]:
        start = at.replace(second=0, microsecond=0) if self.period_s == 60 else _floor(at, self.period_s)
        if self._period_start is None:
            self._period_start = start
            return []
        if start <= self._period_start:
            return []
        done = self.flush()
        self._period_start = start
        return done

    def flush(self) -> list[CameraFootfall]:
        """The current period's counts so far (none before the first frame), and a fresh count."""
        if self._period_start is None:
            return []
        report = CameraFootfall(
            line=self.name,
            period_start=self._period_start,
            period_s=self.period_s,
            entered=self.entered,
            exited=self.exited,
        )
        self.entered = self.exited = 0
        return [report]


def _floor(at: datetime, period_s: int) -> datetime:
    epoch = at.timestamp()
    return at - timedelta(seconds=epoch % period_s)
