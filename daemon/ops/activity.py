"""This instance's activity over the last hour, per minute: reporter requests and push
requests, for the console's plot. A ring of 60 minute buckets per kind; counting one is an
increment (and, once a minute, a reset of the bucket it reuses)."""

from __future__ import annotations

import time
from typing import Literal, get_args

# What is counted: reporter requests that reached a route, push requests accepted.
ActivityKind = Literal["reports", "pushes"]

MINUTES = 60


class Ring:
    """Counts per minute for the last ``MINUTES`` minutes: slot ``m % MINUTES`` holds minute
    ``m`` (minutes since the epoch) once ``minutes[slot] == m``; an older stamp means zero."""

    def __init__(self) -> None:
        self.minutes = [-1] * MINUTES
        self.counts = [0] * MINUTES

    def add(self, now: float, n: int = 1) -> None:
        minute = int(now // 60)
        slot = minute % MINUTES
        if self.minutes[slot] != minute:
            self.minutes[slot], self.counts[slot] = minute, 0
        self.counts[slot] += n

    def count(self, minute: int) -> int:
        slot = minute % MINUTES
        return self.counts[slot] if self.minutes[slot] == minute else 0


class Activity:
    """Per-minute counters of each ``ActivityKind`` (one per daemon, in its Metrics), from
    ``started`` on (the minutes before it are not measured: left out, not zero)."""

    def __init__(self, started: float = 0.0) -> None:
        self.started = started
        self.rings: dict[str, Ring] = {kind: Ring() for kind in get_args(ActivityKind)}

    def add(self, kind: ActivityKind, now: float | None = None) -> None:
        """Count one ``kind`` at ``now`` (the wall clock when not given)."""
        self.rings[kind].add(time.time() if now is None else now)

    def per_minute(self, kind: ActivityKind, now: float) -> list[tuple[float, int]]:
        """The last hour's minutes up to ``now``'s, oldest first: (minute start, count);
        only those from ``started``'s minute on (fewer than ``MINUTES`` in the first hour)."""
        ring = self.rings[kind]
        last = int(now // 60)
        first = max(last - MINUTES + 1, min(int(self.started // 60), last))
        return [(m * 60.0, ring.count(m)) for m in range(first, last + 1)]
