"""The console's read-only pages: the per-minute activity counters, the plot, the pages'
data gathered from a real database, and the pages a real daemon serves."""

from __future__ import annotations

import time
from xml.etree import ElementTree

from pnbridge.console.plot import Series, nice_top, plot
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


SVG = "{http://www.w3.org/2000/svg}"


def activity_svg(activity: Activity, now: float, title: str = "Reports and pushes") -> str:
    return str(plot([Series(kind, activity.per_minute(kind, now))
                     for kind in ("reports", "pushes")], title))


def test_the_plot_is_well_formed_svg_with_a_titled_point_per_minute():
    activity = Activity()
    for _ in range(7):
        activity.add("reports", T0 + 30)
    activity.add("pushes", T0 + 90)
    svg = ElementTree.fromstring(activity_svg(activity, T0 + 90))
    assert svg.tag == f"{SVG}svg" and svg.get("class") == "plot"
    assert svg.get("viewBox") == "0 0 640 220"
    lines = svg.findall(f".//{SVG}polyline")
    assert [len(line.get("points", "").split()) for line in lines] == [MINUTES, MINUTES]
    points = [c.findtext(f"{SVG}title") for c in svg.iter(f"{SVG}circle")]
    assert len(points) == 2 * MINUTES
    minute = time.strftime("%H:%M", time.gmtime(T0))
    assert f"{minute} UTC: 7 reports" in points
    assert f"{time.strftime('%H:%M', time.gmtime(T0 + 60))} UTC: 1 pushes" in points
    legend = [t.text for t in svg.findall(f".//{SVG}g[@class]/{SVG}text")]
    assert "reports" in legend and "pushes" in legend
    labels = {t.text for t in svg.iter(f"{SVG}text")}
    assert {"0", "5", "10", "59 min ago", "now"} <= labels  # 7 at most: the axis tops at 10
    assert svg.findtext(f"{SVG}desc") == "7 reports, 1 pushes in the last hour"
    # CSP: no inline style or script, no event handler attributes.
    for element in svg.iter():
        assert element.tag not in (f"{SVG}script", f"{SVG}style")
        assert not [name for name in element.attrib if name == "style" or name.startswith("on")]


def test_the_plot_escapes_its_title_and_draws_an_empty_hour():
    svg_text = str(plot([Series("reports", Activity().per_minute("reports", T0))],
                        '<script>alert("x")</script> & more'))
    assert "<script>" not in svg_text
    svg = ElementTree.fromstring(svg_text)
    assert svg.findtext(f"{SVG}title") == '<script>alert("x")</script> & more'
    assert {t.text for t in svg.iter(f"{SVG}text")} >= {"0", "1"}


def test_the_y_axis_tops_at_a_round_number():
    assert [nice_top(n) for n in (0, 1, 2, 3, 7, 10, 11, 99, 101, 4000)] == \
        [1, 1, 2, 5, 10, 10, 20, 100, 200, 5000]
