"""The console's read-only pages: the per-minute activity counters, the plot, the pages'
data gathered from a real database, and the pages a real daemon serves."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
import trio
from configs import free_port, merge
from consoletools import (
    OPERATOR,
    PASSWORD,
    console_config,
    console_url,
    csrf_of,
    logged_in,
    phone_report,
    target,
)
from plugintools import install_plugins
from pnbridge import __version__
from pnbridge.access import users
from pnbridge.config.tables import StorageConfig
from pnbridge.console import views
from pnbridge.console.plot import Series, nice_top, plot
from pnbridge.model import PushRecord, Report
from pnbridge.ops.activity import MINUTES, Activity
from pnbridge.ops.readiness import Readiness
from pnbridge.storage.engines import SQLiteEngine
from pnbridge.storage.reader import Reader
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import BODY_404, KEY, push_config
from reports import report

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


def test_the_minutes_before_the_start_are_left_out_not_zero():
    activity = Activity(started=T0 + 125)  # in minute T0 + 120
    activity.add("reports", T0 + 130)
    points = activity.per_minute("reports", T0 + 250)
    assert points == [(T0 + 120, 1), (T0 + 180, 0), (T0 + 240, 0)]
    assert len(activity.per_minute("reports", T0 + 125 + 3 * HOUR)) == MINUTES
    svg = ElementTree.fromstring(str(plot([Series("reports", points)], "t", MINUTES)))
    xs = [float(c.get("cx", "")) for c in svg.iter(f"{SVG}circle")]
    assert len(xs) == 3 and xs[-1] == 640 - 12  # the last minutes of the hour's axis
    assert xs[0] > 500  # not at the left edge: 57 minutes there are not measured
    minute = time.strftime("%H:%M UTC", time.gmtime(T0 + 120))
    assert svg.findtext(f"{SVG}desc") == f"1 reports since {minute}"
    assert svg.find(f".//{SVG}text[@class='not-measured']").text == (
        f"not measured (before {minute})")


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
    activity = Activity()
    activity.add("reports", T0 - 5)
    page = await views.overview(call, readiness, activity, T0, {"webhook": 2, "auditlog": 0})
    assert (page.devices, page.users) == (4, 3)
    assert page.outcomes == {"sent": 3, "invalid-token": 1, "failed": 0, "skipped": 0}
    plugins = {p.name: p for p in page.plugins}
    assert list(plugins) == ["auditlog", "webhook"]
    assert (plugins["webhook"].cursor, plugins["webhook"].pending) == (2, 4)
    assert plugins["webhook"].lag == 80  # the oldest beyond its cursor: alice2's, at T0 - 80
    assert (plugins["webhook"].parked, plugins["webhook"].retry) == (1, 0)
    assert plugins["auditlog"].pending == 6 and plugins["auditlog"].lag == 100
    assert page.checks == {"database": None, "plugin webhook": "delivery task stopped"}
    assert page.database.endswith("console.db") and page.database_bytes
    # Writes not yet checkpointed are in the -wal file: counted, with the -shm file.
    writer = sqlite3.connect(page.database)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    with writer:
        writer.execute("CREATE TABLE scratch (x)")
        writer.executemany("INSERT INTO scratch VALUES (?)", [("x" * 1000,)] * 50)
    walled = await views.overview(call, readiness, activity, T0)
    files = [Path(page.database + suffix) for suffix in ("", "-wal", "-shm")]
    assert files[1].stat().st_size > 50_000 and files[2].exists()
    assert walled.database_bytes == sum(f.stat().st_size for f in files)
    writer.close()
    assert "1 reports, 0 pushes in the last hour" in page.plot
    # Without the dispatcher's cursors: the plugins with a cursor saved in the store.
    saved = await views.overview(call, readiness, activity, T0)
    assert [(p.name, p.cursor, p.pending) for p in saved.plugins] == [("webhook", 2, 4)]


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
    (found,) = await views.parked(call)
    assert (found.plugin, found.parked, found.retry) == ("webhook", 1, 0)
    (row,) = found.rows
    assert (row.selector, row.attempts, row.error, row.status) == \
        ("sel-a1", 5, "HTTP 500 from <crm>", "parked")


# -- the pages, served by a real daemon ----------------------------------------------------

CALL_ID = "call/7%+ü"  # a path part's every hazard: /, %, +, non-ASCII
PHONE = "+4930123456"
# What a report may carry (no control or bidi-control characters: the reporter refuses those).
HOSTILE_WEB = '<script>alert("x")</script>\'&שלום'
ALICE_CALLS, ALICE_MSGS = "alice-voip-" + "x" * 40, "alice-apns-" + "y" * 40
ALICE2_MSGS = "alice2-fcm-" + "z" * 40
HOSTILE_CALLS = "hostile-voip-" + "h" * 40
PHONE_MSGS = "phone-fcm-" + "p" * 40
KEY_ID = hashlib.sha256(KEY.encode()).hexdigest()[:12]  # what the history names the key by
BIDI_MSGS = "bidi-token-" + "b" * 30
QUERYISH = "q?x=1&y=2#frag d"  # what a URL's query and fragment start with
FULL_TOKENS = (ALICE_CALLS, ALICE_MSGS, ALICE2_MSGS, HOSTILE_CALLS, PHONE_MSGS, BIDI_MSGS)


@pytest.fixture
async def console(start_daemon, stub, tmp_path):
    """A daemon with the console on its admin listener and pnmediator at the stand-in;
    a client of the admin listener, logged in; devices of alice, alice2, a hostile name and
    a phone number."""
    operators = tmp_path / "operators"
    users.write(operators, {OPERATOR: users.new_user(OPERATOR, "pnbridge", PASSWORD)})
    daemon = await start_daemon(merge(push_config(stub), {
        "server": {"admin_listen": [f"127.0.0.1:{free_port()}"]},
        "console": {"enabled": True, "users_file": str(operators)},
    }))
    await report(daemon, "alice-phone", username="alice", token=None,
                 calls=ALICE_CALLS, msgs=ALICE_MSGS)
    await report(daemon, "alice-tablet", username="alice", token=None, msgs=ALICE2_MSGS)
    await report(daemon, "evil-dev", username=HOSTILE_WEB, token=None, calls=HOSTILE_CALLS)
    await report(daemon, "phone-dev", username=PHONE, token=None, msgs=PHONE_MSGS)
    async with logged_in(daemon) as client:
        yield daemon, client


async def api_push(daemon, verb: str, username: str, id: str | None = CALL_ID) -> dict:
    body = {"verb": verb, "username": username, **({"id": id} if id else {})}
    answer = await daemon.client.post("/api/v1/push", json=body,
                                      headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def page(client: httpx.AsyncClient, url: str, status: int = 200) -> str:
    """The page at ``url`` once it answers ``status`` (the history is written within a
    second of a push); no full token in it."""
    with trio.fail_after(10):
        while (answer := await client.get(url)).status_code != status:
            await trio.sleep(0.05)
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["cache-control"] == "no-store"
    for token in FULL_TOKENS:
        assert token not in answer.text, (url, token)
    return answer.text


def html_of(text: str) -> ElementTree.Element:
    """The page's ``<main>`` as XML (our templates write well-formed markup there)."""
    main = text[text.index("<main>"):text.index("</main>") + len("</main>")]
    return ElementTree.fromstring(main.replace("&nbsp;", " "))


async def test_a_call_made_through_the_api_is_on_the_user_device_and_call_pages(console, stub):
    daemon, client = console
    stub.answer(ALICE2_MSGS, BODY_404)  # pnmediator says the tablet's token is gone
    await api_push(daemon, "NotifyIncomingCall", "alice")
    await api_push(daemon, "NotifyIncomingCallMissed", "alice")
    call_url = console_url("call", id=CALL_ID)
    text = await page(client, call_url)
    rows = html_of(text).findall(".//tr[@data-call-id]")
    assert {r.get("data-call-id") for r in rows} == {CALL_ID}
    cells = [[("".join(c.itertext())).strip() for c in r.findall("td")] for r in rows]
    # Oldest first: IncomingCall to the phone (its calls pair), then Missed to both devices.
    # Oldest first: the call to both devices (the tablet's only pair is msgs), then its
    # follow-up to the phone alone (pnmediator's 404 removed the tablet).
    assert [(c[1], c[4], c[5], c[6], c[8], c[9], c[13]) for c in cells] == [
        ("NotifyIncomingCall", "alice-phone", "calls", "alice-…xx", "sent", "200", "api:" + KEY_ID),
        ("NotifyIncomingCall", "alice-tablet", "msgs", "alice2…zz", "invalid-token", "200",
         "api:" + KEY_ID),
        ("NotifyIncomingCallMissed", "alice-phone", "calls", "alice-…xx", "sent", "200",
         "api:" + KEY_ID),
    ]
    assert "Device token not found" in cells[1][10] and "device removed" in cells[1][10]
    assert all(re.fullmatch(r"\d+ ms", c[12]) and c[11] == "1" for c in cells)
    facts = html_of(text).find(".//dd[@class='verbs']")
    assert facts is not None and facts.text == "NotifyIncomingCall, NotifyIncomingCallMissed"
    times = html_of(text).findall(".//time")
    assert times and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                                      t.get("datetime", "")) for t in times)

    # The user's page: both devices' rows, their pushes, each linking to the call's page.
    text = await page(client, console_url("user", username="alice"))
    main = html_of(text)
    devices = {r.get("data-selector"): r for r in main.findall(".//tr[@data-selector]")}
    assert list(devices) == ["alice-phone"]  # the tablet is gone (its token was refused)
    phone = "".join(devices["alice-phone"].itertext())
    assert "alice-…xx" in phone and "alice-…yy" in phone and "com.app.voip" in phone
    assert "NotifyIncomingCallMissed" in phone and "sent" in phone
    links = {target(a.get("href"))[1]["id"] for r in main.findall(".//tr[@data-call-id]")
             for a in r.iter("a") if target(a.get("href") or "")[0] == "/console/call"}
    assert links == {CALL_ID}
    events = [("".join(r.itertext())) for r in main.findall(".//table[@class='sortable events']"
                                                           "/tbody/tr")]
    assert len(events) == 3 and "invalid-token" in events[0]  # newest first: the removal
    assert main.findall(".//table[@class='sortable events']") and \
        all("sortable" in t.get("class", "") for t in main.iter("table"))

    # The device's page: the device, its pushes and the action forms, each with its token.
    text = await page(client, console_url("device", selector="alice-phone"))
    main = html_of(text)
    assert [r.get("data-selector") for r in main.findall(".//tr[@data-selector]")] == \
        ["alice-phone"]
    assert len(main.findall(".//tr[@data-call-id]")) == 2
    test_push = main.find(".//form[@class='test-push']")
    remove = main.find(".//form[@class='remove-device']")
    assert test_push is not None and remove is not None
    assert test_push.get("action") == "/console/devices/test-push"
    assert remove.get("action") == "/console/devices/remove"
    for form in (test_push, remove):
        assert form.find("input[@name='selector']").get("value") == "alice-phone"
    assert test_push.find(".//input[@name='message']") is not None
    for form in (test_push, remove):
        assert form.get("method") == "post"
        assert form.find("input[@name='csrf']").get("value") == csrf_of(text)

    # A removed device's page keeps its history, without the actions.
    text = await page(client, console_url("device", selector="alice-tablet"))
    assert "no longer stored" in text and 'class="test-push"' not in text
    assert "invalid-token" in text


async def test_the_overview_shows_counts_the_plot_outcomes_and_plugins(console, stub):
    daemon, client = console
    await api_push(daemon, "NotifyIncomingCall", "alice")
    await page(client, console_url("call", id=CALL_ID))  # the history has it
    text = await page(client, "/console/")
    main = html_of(text)
    assert main.findtext(".//dd[@class='devices']") == "4"
    assert main.findtext(".//dd[@class='users']") == "3"
    svg = main.find(f".//{SVG}svg")
    assert svg is not None and svg.get("class") == "plot"
    # The daemon started a moment ago: the minutes before are left out, not drawn as 0.
    started = svg.findtext(f"{SVG}desc").rpartition(" since ")[2]
    assert started in {time.strftime("%H:%M UTC", time.gmtime(time.time() - ago))
                       for ago in (0, 60)}
    assert svg.findtext(f"{SVG}desc") == f"4 reports, 1 pushes since {started}"
    assert svg.findtext(f"{SVG}title") == f"Reports and pushes per minute, since {started}"
    assert len(list(svg.iter(f"{SVG}circle"))) <= 2 * 2  # this minute (and the last)
    assert (svg.find(f".//{SVG}text[@class='not-measured']").text
            == f"not measured (before {started})")
    assert main.find(".//p[@class='muted plot-period']/time") is not None
    outcomes = {r.get("data-outcome"): r.findall("td")[1].text
                for r in main.findall(".//tr[@data-outcome]")}
    heads = [th.text for th in main.findall(".//table[@class='sortable outcomes']//th")]
    assert heads == ["Outcome", "Push records"]  # a no-device push is a record, no device
    assert outcomes == {"sent": "2", "invalid-token": "0", "failed": "0", "skipped": "0"}
    plugin = main.find(".//tr[@data-plugin='pnmediator']")
    assert plugin is not None
    assert "ready" in "".join(main.find(".//table[@class='sortable readiness']").itertext())
    assert f"pnbridge {__version__}" in text


async def test_search_redirects_to_the_one_match_and_lists_several(console):
    daemon, client = console
    await api_push(daemon, "NotifyIncomingCall", PHONE)
    await page(client, console_url("call", id=CALL_ID))

    async def search(q: str, status: int = 303) -> httpx.Response:
        answer = await client.get("/console/search", params={"q": q})
        assert answer.status_code == status, (q, answer.text)
        return answer

    async def found(q: str) -> tuple[str, dict[str, str]]:
        return target((await search(q)).headers["location"])

    assert await found(PHONE) == ("/console/user", {"username": PHONE})
    assert await found("alice-phone") == ("/console/device", {"selector": "alice-phone"})
    assert await found(CALL_ID) == ("/console/call", {"id": CALL_ID})
    # A prefix that one username has is that user's; one more user, and they are listed.
    assert await found("alic") == ("/console/user", {"username": "alice"})
    await report(daemon, "al-dev", username="al", token=None, msgs="al-token-" + "q" * 30)
    several = html_of((await search("al", 200)).text)
    assert [r.get("data-username") for r in several.findall(".//tr[@data-username]")] == \
        ["al", "alice"]
    none = (await search("nobody-at-all", 200)).text
    assert "Nothing matches" in none and "nobody-at-all" in none
    assert "Give a username" in (await search("", 400)).text
    # Followed, each redirect lands on its page.
    for q in (PHONE, "alice-phone", CALL_ID):
        landed = await client.get("/console/search", params={"q": q}, follow_redirects=True)
        assert landed.status_code == 200 and q in landed.text.replace("&#43;", "+")


async def test_unknown_users_devices_and_calls_are_404_pages(console):
    _, client = console
    for url, what in [("/console/user?username=nobody", "no user"),
                      ("/console/device?selector=no-such", "no device"),
                      ("/console/call?id=no%2Fsuch", "no call")]:
        answer = await client.get(url)
        assert answer.status_code == 404, url
        assert what in answer.text and answer.headers["content-type"].startswith("text/html")


async def test_hostile_names_are_escaped_and_links_round_trip(console):
    daemon, client = console
    store = daemon.store()
    with store.transaction():  # what no report may carry: bidi controls
        store.register(Report("token", username=HOSTILE, selector="bidi/dev%2F",
                              token_msgs=BIDI_MSGS), {"command": "test"}, T0)
        store.register(Report("token", username=QUERYISH, selector="s?x=1#f g",
                              token_msgs=BIDI_MSGS), {"command": "test"}, T0)
    store.close()
    for username in (HOSTILE_WEB, HOSTILE, QUERYISH):
        found = await client.get("/console/search", params={"q": username})
        assert found.status_code == 303
        text = await page(client, found.headers["location"])
        assert "<script>alert" not in text
        if "<script>" in username:
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
        main = html_of(text)
        assert main.findtext(".//bdi[@class='username']") == username
        (row,) = main.findall(".//tr[@data-selector]")
        device = row.find(".//a").get("href")
        assert (await client.get(device)).status_code == 200
    text = await page(client, console_url("device", selector="bidi/dev%2F"))
    assert html_of(text).findtext(".//code[@class='selector']") == "bidi/dev%2F"
    text = await page(client, console_url("user", username=PHONE))
    assert html_of(text).findtext(".//bdi[@class='username']") == PHONE


async def test_the_parked_page_lists_each_plugins_events_with_a_retry_form(console):
    daemon, client = console
    assert "No plugin has a parked event" in await page(client, "/console/parked")
    store = daemon.store()
    with store.transaction():
        first, second = store.events()[:2]
        store.park("webhook", first, 5, "HTTP 500 <b>from the CRM</b>", T0, T0 + 10)
        store.park("auditlog", second, 1, "disk full", T0, T0 + 1)
    store.close()
    text = await page(client, "/console/parked")
    main = html_of(text)
    sections = {s.get("data-plugin"): s for s in main.findall(".//section")}
    assert list(sections) == ["auditlog", "webhook"]
    webhook = sections["webhook"]
    (row,) = webhook.findall(".//tr[@data-event-id]")
    cells = ["".join(c.itertext()).strip() for c in row.findall("td")]
    assert cells[3] == "alice-phone" and cells[5] == "parked" and cells[6] == "5"
    assert cells[7] == "HTTP 500 <b>from the CRM</b>"  # escaped: text, not markup
    form = webhook.find("form[@class='retry-parked']")
    assert form.get("action") == "/console/parked/retry" and form.get("method") == "post"
    assert form.find("input[@name='plugin']").get("value") == "webhook"
    assert form.find("input[@name='csrf']").get("value") == csrf_of(text)


async def test_a_page_the_store_fails_is_a_503_page_not_a_traceback(console):
    daemon, client = console
    store = daemon.store()
    store.conn.execute("DROP TABLE pushes")  # a damaged database: the history is gone
    store.close()
    answer = await client.get("/console/call?id=call-1")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert "storage unavailable" in answer.text and "Traceback" not in answer.text
    assert (await client.get("/console/parked")).status_code == 200  # the rest still reads


async def test_the_parked_page_lists_at_most_its_share_and_counts_all(start_daemon, tmp_path,
                                                                      engine):
    """250 failures of one plugin (30 of them queued for retry): the counts come from the
    database (failure_counts), the page lists the oldest PARKED_SHOWN and says so."""
    shown = views.PARKED_SHOWN
    store = engine.open()
    with store.transaction():
        for i in range(shown + 50):
            store.register(Report("token", username=f"u{i}", selector=f"s{i}",
                                  token_msgs=f"token-{i:04}-" + "q" * 20), {"command": "t"}, T0)
        for event in store.events(limit=shown + 50):
            store.park("webhook", event, 3, "HTTP 500", T0, T0 + 1)
        store.park("auditlog", store.events(limit=1)[0], 1, "disk full", T0, T0 + 1)
    with store.transaction():
        assert store.retry("webhook", [str(seq) for seq in range(1, 31)]) == 30
        assert store.retry("auditlog") == 1
    assert store.failure_counts() == {("webhook", "parked"): shown + 20,
                                      ("webhook", "retry"): 30, ("auditlog", "retry"): 1}
    assert [f.event.seq for f in store.failures("webhook", limit=3)] == [1, 2, 3]
    assert len(store.failures()) == shown + 51
    store.close()
    daemon = await start_daemon(engine.tables(console_config(tmp_path)))
    async with logged_in(daemon) as client:
        text = await page(client, "/console/parked")
    main = html_of(text)
    sections = {s.get("data-plugin"): s for s in main.findall(".//section")}
    assert len(sections["webhook"].findall(".//tr[@data-event-id]")) == shown
    assert len(sections["auditlog"].findall(".//tr[@data-event-id]")) == 1
    note = " ".join("".join(sections["webhook"].find("p[@class='muted more']").itertext()).split())
    assert note.startswith(f"The oldest {shown} of {shown + 50} events of webhook are listed "
                           f"({shown + 20} parked, 30 to retry)"), note
    assert sections["auditlog"].find("p[@class='muted more']") is None
    # The retry button counts what it retries: the parked ones, not those queued already.
    button = sections["webhook"].find("form[@class='retry-parked']/button")
    assert button.text == f"Retry {shown + 20} parked events of webhook"
    assert "30 events of webhook already queued" in "".join(sections["webhook"].itertext())
    assert sections["auditlog"].find("form[@class='retry-parked']") is None
    assert "1 event of auditlog already queued" in "".join(sections["auditlog"].itertext())


async def test_search_takes_the_longest_selector_and_call_id_the_daemon_accepts(
        start_daemon, stub, tmp_path):
    """A selector of 4096 characters (the reporter's limit), a call Id as long as a push
    request may carry ([reporter] max_body, 8192 here): each found; one character more than
    the longest: 400 saying why."""
    operators = tmp_path / "operators"
    users.write(operators, {OPERATOR: users.new_user(OPERATOR, "pnbridge", PASSWORD)})
    daemon = await start_daemon(merge(push_config(stub), {
        "server": {"admin_listen": [f"127.0.0.1:{free_port()}"]},
        "reporter": {"max_body": 8192},
        "console": {"enabled": True, "users_file": str(operators)},
    }))
    selector = "s" * 4096
    await report(daemon, selector, username="alice", token=None, msgs=ALICE_MSGS)
    long_id = "c" * 7000
    await api_push(daemon, "NotifyIncomingCall", "alice", id=long_id)
    async with logged_in(daemon) as client:
        await page(client, console_url("call", id=long_id))  # the history has it
        for q, where in ((selector, ("/console/device", {"selector": selector})),
                         (long_id, ("/console/call", {"id": long_id}))):
            answer = await client.get("/console/search", params={"q": q})
            assert answer.status_code == 303, answer.text[:300]
            assert target(answer.headers["location"]) == where
        answer = await client.get("/console/search", params={"q": "x" * 8193})
        assert answer.status_code == 400
        assert ("longer than 8192 characters: no username or selector is (at most 4096), "
                "nor a call Id (a push request is at most 8192 bytes)") in answer.text


async def test_a_nul_in_a_query_finds_nothing_and_asks_no_store(start_daemon, tmp_path, engine,
                                                                caplog):
    """No username, selector or call Id holds a NUL (PostgreSQL cannot store one): each page
    answers "nothing" on both engines, with no storage error or ERROR line."""
    daemon = await start_daemon(engine.tables(console_config(tmp_path)))
    async with logged_in(daemon) as client:
        for path in ["/console/user?username=a%00b", "/console/device?selector=a%00b",
                     "/console/call?id=a%00b"]:
            answer = await client.get(path)
            assert answer.status_code == 404, (path, answer.text)
            assert "storage unavailable" not in answer.text
        answer = await client.get("/console/search?q=a%00b")
        assert answer.status_code == 200 and "Nothing matches" in answer.text
        token = csrf_of((await client.get("/console/")).text)
        for action in ["remove", "test-push"]:
            answer = await client.post(f"/console/devices/{action}",
                                       data={"csrf": token, "selector": "a\x00b", "message": "m"})
            assert answer.status_code == 404, answer.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_an_event_retried_in_memory_shows_on_the_overview_and_parked_page(
        start_daemon, tmp_path):
    """A plugin failing an event it retries in memory (not parked yet, so not in the
    store): the overview's plugin row and the parked page say which event, how many
    attempts failed, the last error and the next try; not "nothing parked"."""
    directory = install_plugins(tmp_path / "plugins", "delivery/picky")
    daemon = await start_daemon(console_config(tmp_path, plugins={
        "enabled": ["picky"], "paths": [str(directory)],
        "picky": {"path": str(tmp_path / "out"), "healed": str(tmp_path / "healed"),
                  "delivery": {"backoff": 300.0, "max_backoff": 300.0, "max_attempts": 8}},
    }))
    await phone_report(daemon, "ERR")
    async with logged_in(daemon) as client:
        with trio.fail_after(10):
            while "retrying-now" not in (text := await page(client, "/console/parked")):
                await trio.sleep(0.05)
        assert "No plugin has" not in text
        (section,) = html_of(text).findall(".//section[@data-plugin='picky']")
        note = " ".join("".join(section.find("p[@class='retrying-now']").itertext()).split())
        assert note.startswith("Retrying now (in memory, not parked yet): event 1 ("), note
        assert "1 attempt failed, next try " in note and "bad field" in note, note
        assert "next try 1970" not in note
        row = html_of(await page(client, "/console/")).find(".//tr[@data-plugin='picky']")
        cell = " ".join("".join(row.find("td[@class='wrap retrying-now']").itertext()).split())
        assert cell.startswith("event 1: 1 attempt failed, next "), cell
    assert daemon.store().failures() == []  # not parked: the store knows nothing of it
