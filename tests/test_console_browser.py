"""The operator console in a real browser: Debian's headless Chromium (tests/browser.py) on a
``pnbridge serve`` child with the console on its admin listener, an operators file, the push
API, the pnmediator stand-in (tests/pnmediator_stub.py) and a webhook receiver that refuses
one event once, so that it is parked. The tests run in order in one browser session, as an
operator would: refused without login, log in, search, a user, a device, a call, the parked
events; the actions; what every page showed. Only the console's markup contract (docs/
console.md) is relied on. Screenshots go to a temp directory, or to ``PNBRIDGE_SCREENSHOTS``
(``docs/console`` refreshes the docs' pictures). Skipped without Chromium unless ``CI`` is set.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from browser import PHONE, ROOT, TIMEZONE, Browser, open_browser, require_browser, screenshot_dir
from configs import config_toml, free_port
from conftest import Process
from pnbridge.access import users
from pnbridge.ops.log import shorten
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import KEY, Answer, Stub, StubThread
from reports import report
from selenium.webdriver.common.by import By
from webhook_receiver import SECRET, Receiver

OPERATOR, PASSWORD = "opal", "opal-Console-pw-3kT9"
ALICE = "alice"
PLUS = "+4930123456"  # a phone number as username: its "+" must survive the URLs
CALL_ID = "call/7f3a@pbx.example"  # a call Id with a slash
PARKED = "parked-device"  # its registration is refused once by the receiver: parked
# alice's devices, reported in this order.
SELECTORS = ("alice-b", "alice-c", "alice-a")


def token(name: str) -> str:
    """A push token as the apps report them: 64 hex digits (made from ``name``)."""
    return hashlib.sha256(name.encode()).hexdigest()


TOKENS = {s: (token(f"calls {s}"), token(f"msgs {s}")) for s in SELECTORS}
PLUS_TOKEN = token("plus")
ALICE2_TOKEN = token("alice2")  # alice2: a search for alice finds two users
PARKED_TOKEN = token("parked")
ANSWER = "Accepted by the stand-in"  # pnmediator's answer to alice-a's call push
MESSAGE = "Test push from the console"
WRONG_PASSWORD = "not-the-Password-8Hq2"
# What no page may show and the daemon may not log.
SECRETS = (*(t for pair in TOKENS.values() for t in pair), PLUS_TOKEN, ALICE2_TOKEN,
           PARKED_TOKEN, PASSWORD, WRONG_PASSWORD, KEY)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return result


@dataclass
class Site:
    """The daemon, its stand-ins and the browser, for the module."""

    browser: Browser
    api: str  # the main listener: reports and the push API
    console: str  # the admin listener's console
    stub: Stub
    receiver: Receiver
    db: Path
    daemon: Process

    def devices_of(self, username: str) -> list[str]:
        """The selectors the database holds for ``username``."""
        store = SQLiteStore(str(self.db))
        try:
            return sorted(device.selector for device in store.devices(username))
        finally:
            store.close()


def _refuse_parked_once() -> Callable[[dict], int]:
    """The receiver's answer: 500 to the parked device's first registration, else 200."""
    refused = False

    def answer(payload: dict) -> int:
        nonlocal refused
        if payload.get("selector") == PARKED and not refused:
            refused = True
            return 500
        return 200
    return answer


def _report_devices(api: str) -> None:
    with httpx.Client(base_url=api, timeout=10) as client:
        for selector in SELECTORS:
            calls, msgs = TOKENS[selector]
            report(client, selector, username=ALICE, token=None, calls=calls, msgs=msgs)
        report(client, "plus-1", username=PLUS, token=PLUS_TOKEN)
        report(client, "alice2-1", username="alice2", token=ALICE2_TOKEN)
        report(client, PARKED, username="carol", token=PARKED_TOKEN)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_browser()
    workdir = tmp_path_factory.mktemp("console-browser")
    operators = workdir / "operators"
    users.write(operators, {OPERATOR: users.new_user(OPERATOR, "pnbridge", PASSWORD)})
    stand_in = StubThread()
    stub = stand_in.start()
    stub.answer(TOKENS["alice-a"][0], Answer(200, {"code": 200, "response": ANSWER}))
    receiver = Receiver(answer=_refuse_parked_once())
    api, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = workdir / "pnbridge.toml"
    config.write_text(config_toml(workdir, {
        "server": {"listen": [api], "admin_listen": [admin]},
        "storage": {"path": "pnbridge.db"},  # in workdir: the overview shows a short path
        "api": {"keys": [KEY]},
        "plugins": {"enabled": ["pnmediator", "webhook"],
                    "pnmediator": {"url": stub.url, "timeout": 1.0},
                    "webhook": {"urls": [receiver.url], "secret": SECRET,
                                "delivery": {"max_attempts": 1}}},
        "console": {"enabled": True, "users_file": str(operators)},
    }))
    daemon = Process(subprocess.Popen(
        [sys.executable, "-m", "pnbridge", "serve", "--config", str(config)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=workdir))
    try:
        daemon.url()
        _report_devices(f"http://{api}")
        shots = screenshot_dir(workdir / "screenshots")
        with open_browser(f"http://{admin}", shots) as browser:
            yield Site(browser, f"http://{api}", f"http://{admin}/console", stub, receiver,
                       workdir / "pnbridge.db", daemon)
    finally:
        daemon.stop()
        receiver.close()
        stand_in.stop()


# Each page of one user, device or call, and the query field naming it.
PAGES = {"users": ("user", "username"), "devices": ("device", "selector"),
         "calls": ("call", "id")}


def console_path(kind: str, value: str | None = None) -> str:
    """A console page's path: ``/console/parked``, or the page of one user, device or call
    with the value percent-encoded in the query (``/console/user?username=%2B49...``)."""
    if value is None:
        return f"/console/{kind}"
    page, name = PAGES[kind]
    return f"/console/{page}?" + urllib.parse.urlencode({name: value},
                                                         quote_via=urllib.parse.quote)


def at(browser: Browser, kind: str, value: str) -> bool:
    """Whether the browser shows the page of this user, device or call (compared decoded)."""
    page, name = PAGES[kind]
    url = urllib.parse.urlsplit(browser.path)
    return (url.path == f"/console/{page}"
            and urllib.parse.parse_qs(url.query).get(name) == [value])


def on_login_page(browser: Browser) -> bool:
    return browser.path.startswith("/console/login") and bool(browser.all("form#login"))


def log_in(browser: Browser) -> str:
    """Log in as the operator (once per session); the page after it."""
    if browser.all("form#logout"):
        return browser.driver.page_source
    if not on_login_page(browser):
        browser.go("/console/login")
    return browser.submit("form#login", username=OPERATOR, password=PASSWORD)


@pytest.fixture
def operator(site: Site) -> Browser:
    """The browser, logged in."""
    log_in(site.browser)
    return site.browser


def test_every_page_is_refused_without_login(site: Site) -> None:
    browser = site.browser
    for path in ("/console/", f"/console/search?q={ALICE}", console_path("users", ALICE),
                 console_path("devices", "alice-a"), console_path("calls", CALL_ID),
                 console_path("parked"), console_path("users", PLUS)):
        html = browser.go(path)
        assert on_login_page(browser), (path, browser.path)
        for data in (*SELECTORS, PLUS, PARKED, "carol", shorten(TOKENS["alice-a"][1])):
            assert data not in html, (path, data)
    browser.screenshot("login")
    # An action without a session does nothing.
    with httpx.Client(base_url=site.console, timeout=10) as client:
        answer = client.post("/devices/remove", data={"csrf": "x", "selector": "alice-a"})
    assert answer.status_code == 303, answer.status_code
    assert answer.headers["location"].endswith("/console/login")
    assert "alice-a" in site.devices_of(ALICE)


def test_a_wrong_password_is_refused(site: Site) -> None:
    browser = site.browser
    browser.go("/console/login")
    browser.submit("form#login", username=OPERATOR, password=WRONG_PASSWORD)
    assert on_login_page(browser)
    assert browser.all(".flash")
    assert not browser.all("form#logout")


def test_log_in_shows_the_overview(site: Site) -> None:
    browser = site.browser
    log_in(browser)
    assert browser.path == "/console/"
    assert browser.all("form#logout") and browser.all("form#search")
    assert browser.all("svg.plot")
    browser.screenshot("overview")


def test_search_finds_a_user_and_lists_their_devices(operator: Browser) -> None:
    for username, selectors in ((PLUS, {"plus-1"}), (ALICE, set(SELECTORS))):
        operator.submit("form#search", q=username)
        if operator.path.startswith("/console/search"):  # alice and alice2: a list
            operator.follow(operator.one(f'main a[href$="?username={username}"]'))
        assert at(operator, "users", username), operator.path
        shown = {row.get_attribute("data-selector") for row in operator.all("tr[data-selector]")}
        assert shown == selectors
    operator.screenshot("user")


def test_a_device_page_shows_the_device_with_its_tokens_shortened(operator: Browser) -> None:
    operator.go(console_path("users", ALICE))
    operator.follow(operator.one('tr[data-selector="alice-a"] a'))
    assert at(operator, "devices", "alice-a"), operator.path
    text = operator.one("main").text
    assert "alice-a" in text and ALICE in text
    for token in TOKENS["alice-a"]:
        assert shorten(token) in text


def test_tables_sort_when_a_header_is_clicked(operator: Browser) -> None:
    operator.go(console_path("users", ALICE))
    table = next(t for t in operator.all("table.sortable")
                 if t.find_elements(By.CSS_SELECTOR, "tr[data-selector]"))
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    # The column that holds each row's selector. The two clicks order it both ways, so at
    # least one of them changed the order the server sent.
    column = next(i for i in range(len(rows[0].find_elements(By.CSS_SELECTOR, "td")))
                  if operator.text_of_column(table, i) ==
                  [row.get_attribute("data-selector") for row in rows])
    header = table.find_elements(By.CSS_SELECTOR, "thead th")[column]
    header.click()
    assert operator.text_of_column(table, column) == sorted(SELECTORS)
    header.click()
    assert operator.text_of_column(table, column) == sorted(SELECTORS, reverse=True)


def test_times_are_shown_in_the_viewers_local_time(operator: Browser) -> None:
    assert operator.driver.execute_script(
        "return Intl.DateTimeFormat().resolvedOptions().timeZone") == TIMEZONE
    operator.go(console_path("users", ALICE))
    times = operator.all("time[datetime]")
    assert times
    zone = ZoneInfo(TIMEZONE)
    for element in times:
        at = datetime.fromisoformat(element.get_attribute("datetime"))
        assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 0, at
        local, utc = at.astimezone(zone).strftime("%H:%M:%S"), at.strftime("%H:%M:%S")
        assert local in element.text and utc not in element.text, (element.text, at)


def _push(site: Site, verb: str) -> dict[str, Any]:
    with httpx.Client(base_url=site.api, timeout=10) as client:
        answer = client.post("/api/v1/push", json={"username": ALICE, "verb": verb,
                                                   "id": CALL_ID},
                             headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_call_id_is_followed_from_a_push_through_the_api(site: Site, operator: Browser
                                                          ) -> None:
    pushed = _push(site, "NotifyIncomingCall")
    assert sorted(d["selector"] for d in pushed["devices"]) == sorted(SELECTORS)
    _push(site, "NotifyIncomingCallMissed")  # a follow-up verb of the same call
    device = console_path("devices", "alice-a")
    row = f'tr[data-call-id="{CALL_ID}"]'
    wait_until(lambda: operator.go(device) and operator.all(row), "the push on the device page")
    operator.follow(operator.one(f"{row} a[href*='/console/call?']"))
    assert at(operator, "calls", CALL_ID), operator.path
    text = operator.one("main").text
    for selector in SELECTORS:
        assert selector in text
    assert ANSWER in text  # pnmediator's answer to alice-a
    assert "NotifyIncomingCallMissed" in text
    assert len(operator.all(row)) >= 2 * len(SELECTORS)
    operator.screenshot("call")
    # The search finds the call by its Id.
    operator.submit("form#search", q=CALL_ID)
    if operator.path.startswith("/console/search"):
        operator.follow(operator.one("main a[href*='/console/call?']"))
    assert at(operator, "calls", CALL_ID) and operator.all(row), operator.path


def test_a_test_push_is_sent_and_shows_in_the_history(site: Site, operator: Browser) -> None:
    device = console_path("devices", "alice-b")
    operator.go(device)
    operator.submit("form.test-push", message=MESSAGE)
    assert operator.all(".flash")
    msgs = TOKENS["alice-b"][1]
    sent = wait_until(lambda: [r for r in site.stub.to(msgs)
                               if r.get("verb") == "NotifyGenericTextMessage"], "the test push")
    assert sent[0]["Message"] == MESSAGE

    def listed() -> bool:
        operator.go(device)
        return any("NotifyGenericTextMessage" in row.text and OPERATOR in row.text
                   for row in operator.all("tr[data-call-id]"))
    wait_until(listed, "the test push in the device's history")
    operator.screenshot("device")  # with the call's pushes and the test push


def test_a_parked_event_is_retried_and_delivered(site: Site, operator: Browser) -> None:
    wait_until(lambda: PARKED in operator.go("/console/parked"), "the parked event listed")
    assert "500" in operator.one("main").text  # its error
    operator.screenshot("parked")
    operator.submit("form.retry-parked")
    assert operator.all(".flash")
    wait_until(lambda: any(p.get("selector") == PARKED for p in site.receiver.accepted.values()),
               "the retried event delivered")
    wait_until(lambda: PARKED not in operator.go("/console/parked"), "the parked page emptied")


def test_a_phone_shows_pages_without_horizontal_overflow(operator: Browser) -> None:
    with operator.size(*PHONE):
        for path in ("/console/", console_path("users", ALICE),
                     console_path("devices", "alice-a"), "/console/parked"):
            operator.go(path)
            width, page, body = operator.driver.execute_script(
                "return [window.innerWidth, document.documentElement.scrollWidth,"
                " document.body.scrollWidth]")
            assert width == PHONE[0] and page <= width and body <= width, (path, page, body)
        operator.go(console_path("users", ALICE))
        operator.screenshot("phone")


def test_a_device_is_removed(site: Site, operator: Browser) -> None:
    operator.go(console_path("devices", "alice-c"))
    operator.submit("form.remove-device")
    assert operator.all(".flash")
    assert site.devices_of(ALICE) == ["alice-a", "alice-b"]
    operator.go(console_path("users", ALICE))
    assert not operator.all('tr[data-selector="alice-c"]')
    assert any("alice-c" in row.text and "remov" in row.text.lower()
               for row in operator.all("tr")), "no removal in the user's journal"


def test_no_page_shows_a_full_token_or_the_password(operator: Browser) -> None:
    """Every page this module's browser showed (each kind at least once, seen here when no
    test before showed it), with its devices, pushes and events."""
    for path in ("/console/", "/console/search?q=alice", console_path("users", ALICE),
                 console_path("devices", "alice-a"), console_path("calls", CALL_ID),
                 console_path("parked")):
        operator.go(path)
    visited = {urllib.parse.urlsplit(url).path.split("/")[2] or "overview"
               for url, _ in operator.sources}
    assert {"login", "overview", "search", "user", "device", "call", "parked"} <= visited
    for url, html in operator.sources:
        for secret in SECRETS:
            assert secret not in html, (url, secret[:8])


def test_the_daemon_logged_no_token_password_or_key(site: Site) -> None:
    log = site.daemon.log
    assert "pnbridge.console" in log  # the logins and actions are logged ...
    assert [secret[:8] for secret in SECRETS if secret in log] == []  # ... without these


SHOTS = ("login", "overview", "user", "device", "call", "parked", "phone")


def test_the_docs_show_every_screenshot_and_each_exists() -> None:
    docs = ROOT / "docs" / "console.md"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", docs.read_text())
    assert [image for image in images if not (docs.parent / image).is_file()] == []
    assert sorted(Path(image).name for image in images) == sorted(
        f"console-{name}.png" for name in SHOTS)
