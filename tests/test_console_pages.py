"""The console's read-only pages: the per-minute activity counters, the plot, the pages'
data gathered from a real database, and the pages a real daemon serves."""

from __future__ import annotations

from pnbridge.ops.activity import MINUTES, Activity

HOUR = 3600.0
T0 = 1_800_000_000.0  # a minute's start


def test_activity_counts_per_minute_for_the_last_hour():
    activity = Activity()
    for offset in (0, 1, 59.9):
        activity.add("reports", T0 + offset)
    activity.add("reports", T0 + 60)
    activity.add("pushes", T0 + 120)
    reports = activity.per_minute("reports", T0 + 120)
    assert len(reports) == MINUTES
    assert reports[-1] == (T0 + 120, 0) and reports[-2] == (T0 + 60, 1)
    assert reports[-3] == (T0, 3)
    assert sum(n for _, n in reports) == 4
    assert activity.per_minute("pushes", T0 + 120)[-1] == (T0 + 120, 1)


def test_activity_forgets_what_is_older_than_an_hour():
    activity = Activity()
    activity.add("pushes", T0)
    assert activity.per_minute("pushes", T0 + HOUR - 60)[0] == (T0, 1)
    assert sum(n for _, n in activity.per_minute("pushes", T0 + HOUR)) == 0
    # The slot minute 0 used is reused an hour later: it starts from zero.
    activity.add("pushes", T0 + HOUR)
    assert activity.per_minute("pushes", T0 + HOUR)[-1] == (T0 + HOUR, 1)
    assert sum(n for _, n in activity.per_minute("pushes", T0 + HOUR)) == 1
