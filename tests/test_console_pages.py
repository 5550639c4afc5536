"""The console's read-only pages: the per-minute activity counters, the plot, the pages'
data gathered from a real database, and the pages a real daemon serves."""

from __future__ import annotations

import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
from pnbridge.config.tables import StorageConfig
from pnbridge.console import views
from pnbridge.console.plot import Series, nice_top, plot
from pnbridge.model import PushRecord, Report
from pnbridge.ops.activity import MINUTES, Activity
from pnbridge.ops.readiness import Readiness
from pnbridge.storage.engines import SQLiteEngine
from pnbridge.storage.reader import Reader
from pnbridge.storage.sqlite.store import SQLiteStore

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


# -- the pages' data, from a real database -------------------------------------------------

TOKEN_A = "A" * 20 + "full-token-alice-calls"
TOKEN_B = "B" * 20 + "full-token-alice-msgs"
TOKEN_C = "C" * 20 + "full-token-carol"
HOSTILE = 'eve<script>alert("x")</script>\u202e'


def record(selector: str, username: str, *, verb: str = "IncomingCall", id: str = "call-1",
           outcome: str = "sent", time: float = T0, token: str = TOKEN_A) -> PushRecord:
    return PushRecord(time, verb, id, username, selector, "calls", views.shorten(token),
                      "com.app.voip", outcome, 200 if outcome == "sent" else 410,
                      "OK" if outcome == "sent" else "Gone", 1, 0.012, "api:pbx")


def filled(path: Path) -> None:
    """Two users' devices, one removed, pushes of one call and its follow-up, a parked
    event: the database a console looks at."""
    store = SQLiteStore(path)
    with store.transaction():
        store.register(Report("token", username="alice", selector="sel-a1", token_calls=TOKEN_A,
                              appid_calls="com.app.voip", token_msgs=TOKEN_B,
                              appid_msgs="com.app"), {"route": "/token/"}, T0 - 100)
        store.register(Report("token", username="alice", selector="sel-a2",
                              token_calls=TOKEN_C), {"route": "/token/"}, T0 - 90)
        store.register(Report("token", username="alice2", selector="sel-x",
                              token_calls=TOKEN_C), {"route": "/token/"}, T0 - 80)
        store.register(Report("token", username=HOSTILE, selector="sel-e",
                              token_calls=TOKEN_C), {"route": "/token/"}, T0 - 70)
        store.register(Report("token", username="carol", selector="sel-c",
                              token_calls=TOKEN_C), {"route": "/token/"}, T0 - 60)
        store.remove(selector="sel-c", reason="operator", source={"command": "devices remove"},
                     now=T0 - 50)
        store.record_pushes([
            record("sel-a1", "alice", time=T0 - 30),
            record("sel-a2", "alice", time=T0 - 30, outcome="invalid-token", token=TOKEN_C),
            record("sel-a1", "alice", verb="Missed", time=T0 - 20),
            record("sel-c", "carol", id="other/call%2F", time=T0 - 40, token=TOKEN_C),
        ])
        first = store.events()[0]
        store.park("webhook", first, 5, "HTTP 500 from <crm>", T0 - 99, T0 - 95)
        store.save_cursor("webhook", 2, T0 - 10)
    store.close()


@pytest.fixture
async def call(tmp_path: Path):
    """The reader's ``call`` on a filled database."""
    filled(tmp_path / "console.db")
    reader = Reader(SQLiteEngine(StorageConfig(path=str(tmp_path / "console.db"))).reader)
    yield reader.call
    reader.close()


async def test_the_overview_counts_devices_users_outcomes_and_each_plugins_lag(call):
    readiness = Readiness()

    async def ready() -> None:
        return None

    async def broken() -> str:
        return "delivery task stopped"

    readiness.add("database", ready)
    readiness.add("plugin webhook", broken)
    readiness.add("plugin auditlog", ready)
    activity = Activity()
    activity.add("reports", T0 - 5)
    page = await views.overview(call, readiness, activity, T0)
    assert (page.devices, page.users) == (4, 3)
    assert page.outcomes == {"sent": 3, "invalid-token": 1, "failed": 0, "skipped": 0}
    plugins = {p.name: p for p in page.plugins}
    assert set(plugins) == {"webhook", "auditlog"}
    assert (plugins["webhook"].cursor, plugins["webhook"].pending) == (2, 4)
    assert plugins["webhook"].lag == 80  # the oldest beyond its cursor: alice2's, at T0 - 80
    assert (plugins["webhook"].parked, plugins["webhook"].retry) == (1, 0)
    assert plugins["auditlog"].pending == 6 and plugins["auditlog"].lag == 100
    assert page.checks == {"database": None, "plugin auditlog": None,
                           "plugin webhook": "delivery task stopped"}
    assert page.database.endswith("console.db") and page.database_bytes
    assert "1 reports, 0 pushes in the last hour" in page.plot


async def test_search_finds_users_by_name_and_prefix_selectors_and_call_ids(call):
    found = await views.search(call, "alice")
    assert found.users == [("alice", 2), ("alice2", 1)] and found.count == 2
    assert (await views.search(call, "alice2")).users == [("alice2", 1)]
    carol = await views.search(call, "carol")  # no device left: known by its history
    assert carol.users == [("carol", 0)] and carol.count == 1
    selector = await views.search(call, "sel-c")
    assert selector.selector and selector.count == 1
    assert (await views.search(call, "other/call%2F")).call
    assert (await views.search(call, "nobody")).count == 0
    assert (await views.search(call, HOSTILE)).users == [(HOSTILE, 1)]


async def test_a_users_page_has_their_devices_with_last_pushes_events_and_pushes(call):
    page = await views.user(call, "alice")
    assert page is not None
    a1, a2 = page.devices
    assert (a1.selector, a1.token_calls, a1.token_msgs) == ("sel-a1", "AAAAAA…ls", "BBBBBB…gs")
    assert a1.last_push is not None and a1.last_push.verb == "Missed"
    assert a2.last_push is not None and a2.last_push.outcome == "invalid-token"
    assert [e.selector for e in page.events] == ["sel-a2", "sel-a1"]
    assert "token_calls: AAAAAA…ls" in page.events[1].change
    assert [p.verb for p in page.pushes] == ["Missed", "IncomingCall", "IncomingCall"]
    assert TOKEN_A not in repr(page) and TOKEN_B not in repr(page)
    assert await views.user(call, "nobody") is None


async def test_a_removed_devices_page_shows_its_history(call):
    page = await views.device(call, "sel-c")
    assert page is not None and page.device is None and page.username == "carol"
    removal, registration = page.events
    assert (removal.kind, removal.reason, removal.change) == ("removed", "operator", "")
    assert registration.change.startswith("username: carol, token_calls: CCCCCC…ol")
    assert page.events[0].source == "command=devices remove"
    assert [p.id for p in page.pushes] == ["other/call%2F"]
    assert await views.device(call, "sel-none") is None
    assert TOKEN_C not in repr(page)


async def test_a_calls_page_has_every_device_and_verb_oldest_first(call):
    page = await views.call_page(call, "call-1")
    assert page is not None
    assert page.verbs == ["IncomingCall", "Missed"]
    assert page.devices == ["sel-a1", "sel-a2"]
    assert page.outcomes == {"sent": 2, "invalid-token": 1}
    assert await views.call_page(call, "call-2") is None


async def test_the_parked_events_by_plugin(call):
    found = await views.parked(call)
    assert list(found) == ["webhook"]
    (row,) = found["webhook"]
    assert (row.selector, row.attempts, row.error, row.status) == \
        ("sel-a1", 5, "HTTP 500 from <crm>", "parked")
