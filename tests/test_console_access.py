"""The operator console's access and actions on a real daemon (admin listener on loopback,
httpx): login with the operators file or an API key, never a phone's account; the session
cookie, its end and logout; CSRF; the security headers; each action; where the console is
served; its config."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
import trio
from configs import free_port
from conftest import cli
from consoletools import (
    CSP,
    KEY,
    OPERATOR,
    PASSWORD,
    PHONE,
    PHONE_PASSWORD,
    admin_url,
    console_config,
    console_url,
    csrf_of,
    flash_of,
    forms_of,
    hrefs_of,
    logged_in,
    login,
    phone_report,
    target,
    token_of,
)
from plugintools import install_plugins, lines, wait_until
from pnbridge.access import users
from pnbridge.config.tables import parse_config
from pnbridge.errors import ConfigError
from pnbridge.model import PushRecord, Report
from pnmediator_stub import push_config

TEMPLATES = Path(__file__).parent.parent / "daemon" / "console" / "templates"


@pytest.fixture
async def console(start_daemon, tmp_path):
    """A daemon with the console, and a client of its admin listener (not logged in)."""
    daemon = await start_daemon(console_config(tmp_path))
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
        yield daemon, client


@pytest.fixture
async def on_engine(start_daemon, tmp_path, engine):
    """``console`` on each store engine (SQLite, PostgreSQL): for what the actions store."""
    daemon = await start_daemon(engine.tables(console_config(tmp_path)))
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
        yield daemon, client


# -- logging in -----------------------------------------------------------------------------

async def test_pages_redirect_to_login_without_a_session(console):
    _, client = console
    for path in ["/console", "/console/", "/console/search?q=x", "/console/user?username=alice",
                 "/console/device?selector=abc", "/console/call?id=x%2Fy", "/console/parked"]:
        answer = await client.get(path)
        assert answer.status_code in (303, 308), path
        if answer.status_code == 303:
            assert answer.headers["location"].endswith("/console/login"), path
    for path in ["/console/parked/retry", "/console/devices/remove",
                 "/console/devices/test-push", "/console/logout"]:
        answer = await client.post(path, data={"csrf": "x"})
        assert answer.status_code == 303, path
        assert answer.headers["location"].endswith("/console/login"), path
    static = await client.get("/console/static/console.css")
    assert static.status_code == 200 and "table" in static.text


async def test_operator_logs_in_and_out(console):
    _, client = console
    answer = await login(client)
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/console/")
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "expires=" in cookie.lower() and "Secure" not in cookie  # plain HTTP here
    page = await client.get("/console/")
    assert page.status_code == 200
    assert 'id="logout"' in page.text and 'id="search"' in page.text
    assert PASSWORD not in page.text
    kept = dict(client.cookies)
    out = await client.post("/console/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"].endswith("/console/login")
    assert (await client.get("/console/")).status_code == 303
    # The cookie of the session logged out no longer opens it.
    async with httpx.AsyncClient(base_url=str(client.base_url), cookies=kept) as other:
        assert (await other.get("/console/")).status_code == 303


@pytest.mark.parametrize("form", [
    {"password": "wrong"},
    {"username": "nobody"},
    {"username": "", "password": ""},
    {"username": PHONE, "password": PHONE_PASSWORD},  # a phone's account, [auth] users_file
    {"key": "not-the-key-0000000000"},
    {"key": KEY[:-1]},
])
async def test_wrong_credentials_are_refused(console, form, caplog):
    _, client = console
    answer = await login(client, **form)
    assert answer.status_code == 401
    assert "wrong username and password, or key" in answer.text
    assert 'id="login"' in answer.text
    assert (await client.get("/console/")).status_code == 303
    assert PHONE_PASSWORD not in caplog.text and PASSWORD not in caplog.text


async def test_an_unknown_user_takes_as_long_as_a_wrong_password(start_daemon, tmp_path):
    """Both are checked against a scrypt hash (a dummy one for an unknown name), and so is
    a key: the time does not tell which operators exist, nor a key from a password."""
    daemon = await start_daemon(console_config(tmp_path, console={"login_burst": 100}))
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
        async def took(**form: str) -> float:
            started = time.perf_counter()
            assert (await login(client, **form)).status_code == 401
            return time.perf_counter() - started

        known = sorted([await took(password="wrong") for _ in range(3)])
        unknown = sorted([await took(username="nobody") for _ in range(3)])
        phone = sorted([await took(username=PHONE, password=PHONE_PASSWORD)
                        for _ in range(3)])
        key = sorted([await took(username="", password="", key="not-the-key-0000000000")
                      for _ in range(3)])
    # A name looked up, or a key matched, without a hash to check answers in well under a
    # tenth of the time.
    assert unknown[0] > known[1] / 3 and phone[0] > known[1] / 3, (known, unknown, phone)
    assert key[0] > known[1] / 3, (known, key)


async def test_an_api_key_logs_in(start_daemon, tmp_path, caplog):
    named = "n" * 30
    digest = hashlib.sha256(named.encode()).hexdigest()
    daemon = await start_daemon(console_config(
        tmp_path, api={"key_hashes": [f"pbx1:sha256:{digest}"]}))
    for key, operator in [(KEY, f"key:{hashlib.sha256(KEY.encode()).hexdigest()[:12]}"),
                          (named, "key:pbx1")]:
        async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
            answer = await login(client, username="", password="", key=key)
            assert answer.status_code == 303
            page = await client.get("/console/")
            assert page.status_code == 200 and f'title="Log out {operator}"' in page.text
            assert f"login operator={operator} client=127.0.0.1" in caplog.text
            assert key not in page.text and key not in caplog.text


async def test_login_attempts_are_limited_per_peer_and_per_username(start_daemon, tmp_path):
    daemon = await start_daemon(console_config(
        tmp_path, console={"login_rate": 0.001, "login_burst": 2}))
    headers = iter({"X-Forwarded-For": f"192.0.2.{i}"} for i in range(1, 100))
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
        # Per socket peer: X-Forwarded-For (believed from loopback, a trusted proxy) does
        # not make another bucket, nor does another username.
        for name in ("a", "b"):
            answer = await login(client, next(headers), username=name, password="wrong")
            assert answer.status_code == 401
        limited = await login(client, next(headers))  # the right password, too late
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "too many login attempts from this address" in limited.text
        assert (await client.get("/console/")).status_code == 303
        assert [(await login(client, next(headers), username=f"u{i}")).status_code
                for i in range(20)] == [429] * 20

    def from_(address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=admin_url(daemon), transport=httpx.AsyncHTTPTransport(
            local_address=address))

    # Per username tried: the operator's from two peers, then theirs from a third is late.
    for address in ("127.0.0.2", "127.0.0.3"):
        async with from_(address) as client:
            assert (await login(client, password="wrong")).status_code == 401
    async with from_("127.0.0.4") as client:
        limited = await login(client)
        assert limited.status_code == 429
        assert "too many login attempts for this username" in limited.text
        assert (await login(client, username="someone-else")).status_code == 401
    # Every key tried: one bucket.
    for address in ("127.0.0.5", "127.0.0.6"):
        async with from_(address) as client:
            assert (await login(client, key="not-the-key-0000000000")).status_code == 401
    async with from_("127.0.0.7") as client:
        limited = await login(client, username="", password="", key=KEY)
        assert limited.status_code == 429 and "with a key" in limited.text
    async with from_("127.0.0.8") as client:  # a fresh peer, a fresh name: in
        assert (await login(client, username=OPERATOR)).status_code == 429  # ... not this one
        assert (await login(client, username="nobody")).status_code == 401


async def test_a_session_ends_after_its_lifetime(start_daemon, tmp_path):
    daemon = await start_daemon(console_config(tmp_path, console={"session_lifetime": "1s"}))
    async with logged_in(daemon) as client:
        assert (await client.get("/console/")).status_code == 200
        await trio.sleep(1.1)
        answer = await client.get("/console/")
        assert answer.status_code == 303
        assert answer.headers["location"].endswith("/console/login")


async def test_a_forged_cookie_is_refused(console):
    _, client = console
    await login(client)
    ((name, value),) = client.cookies.items()
    assert (await client.get("/console/")).status_code == 200
    payload, _, signature = value.rpartition(".")
    forged = {"Cookie": f"{name}={payload}.{'A' * len(signature)}"}
    async with httpx.AsyncClient(base_url=str(client.base_url), headers=forged) as other:
        assert (await other.get("/console/")).status_code == 303


# -- CSRF ------------------------------------------------------------------------------------

async def test_posts_without_the_right_csrf_token_or_from_elsewhere_are_refused(on_engine):
    daemon, client = on_engine
    await phone_report(daemon, "SEL1")
    await login(client)
    token = await token_of(client)
    refused = [
        ({}, {}, "no CSRF token"),
        ({"csrf": "x" + token}, {}, "CSRF token is wrong"),
        ({"csrf": token}, {"Origin": "http://evil.example"}, "another site"),
        ({"csrf": token}, {"Referer": "http://evil.example/page"}, "another site"),
    ]
    for form, headers, why in refused:
        for path in ["/console/devices/remove", "/console/devices/test-push",
                     "/console/parked/retry", "/console/logout"]:
            answer = await client.post(path, data={**form, "selector": "SEL1"},
                                       headers=headers)
            assert answer.status_code == 403, (path, why)
            assert why in answer.text and answer.headers["content-type"].startswith("text/html")
    assert daemon.store().device("SEL1") is not None
    assert [e.kind for e in daemon.store().events()] == ["registered"]
    assert (await client.get("/console/")).status_code == 200  # still logged in
    # Let through (a 404 for the unknown plugin, past the checks): the same host over
    # HTTPS (a TLS proxy in front), "null" (a form under no-referrer), a trusted proxy's
    # X-Forwarded-Host.
    host = client.base_url.netloc.decode()
    for headers in [{"Origin": f"https://{host}"}, {"Origin": "null"},
                    {"Referer": f"http://{host}/console/parked"},
                    {"Origin": "https://ops.example", "X-Forwarded-Host": "ops.example"}]:
        answer = await client.post("/console/parked/retry", headers=headers,
                                   data={"csrf": token, "plugin": "none"})
        assert answer.status_code == 404, headers
    # The login form's token too.
    fresh = httpx.AsyncClient(base_url=str(client.base_url))
    async with fresh:
        await fresh.get("/console/login")
        answer = await fresh.post("/console/login",
                                  data={"username": OPERATOR, "password": PASSWORD})
        assert answer.status_code == 403
        assert (await fresh.get("/console/")).status_code == 303


async def test_behind_a_tls_proxy_the_cookie_is_secure(console):
    _, client = console
    answer = await login(client, _headers={"X-Forwarded-Proto": "https"})
    assert answer.status_code == 303 and "Secure" in answer.headers["set-cookie"]


async def test_forwarded_host_is_believed_from_trusted_proxies_only(start_daemon, tmp_path):
    daemon = await start_daemon(console_config(tmp_path, server={"trusted_proxies": []}))
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
        answer = await login(client, _headers={"X-Forwarded-Proto": "https"})
        assert answer.status_code == 303 and "Secure" not in answer.headers["set-cookie"]
    async with logged_in(daemon) as client:
        answer = await client.post(
            "/console/parked/retry", data={"csrf": await token_of(client), "plugin": "none"},
            headers={"Origin": "https://ops.example", "X-Forwarded-Host": "ops.example"})
        assert answer.status_code == 403 and "another site" in answer.text


# -- the actions -----------------------------------------------------------------------------

async def test_retry_parked_delivers_at_once(start_daemon, tmp_path, engine):
    """Parked by a plugin that fails BAD until healed; the console's retry is delivered by
    the running dispatcher at once (its poll is an hour here: only the wake-up can)."""
    out, healed = tmp_path / "out", tmp_path / "healed"
    directory = install_plugins(tmp_path / "plugins", "delivery/picky")
    daemon = await start_daemon(engine.tables(console_config(tmp_path, plugins={
        "enabled": ["picky"], "paths": [str(directory)], "poll_interval": 3600.0,
        "picky": {"path": str(out), "healed": str(healed),
                  "delivery": {"backoff": 0.01, "max_backoff": 0.05, "max_attempts": 1}},
    })))
    await phone_report(daemon, "BAD")
    await wait_until(lambda: [f.status for f in daemon.store().failures()] == ["parked"])
    healed.touch()
    async with logged_in(daemon) as client:
        token = await token_of(client)
        unknown = await client.post("/console/parked/retry",
                                    data={"csrf": token, "plugin": "nosuch"})
        assert unknown.status_code == 404 and "no plugin &#39;nosuch&#39;" in unknown.text
        none = await client.post("/console/parked/retry",
                                 data={"csrf": token, "plugin": "picky", "event": "999"})
        assert none.status_code == 303
        assert "no parked event of picky matches 999" in flash_of(
            (await client.get(none.headers["location"])).text)
        # Many ids: bounded, and what the banner (in the cookie) echoes is summarised.
        many = await client.post("/console/parked/retry", data={
            "csrf": token, "plugin": "picky", "event": [str(n) for n in range(1000, 1800)]})
        assert many.status_code == 400
        assert "800 events named: at most 100 at once" in many.text
        assert daemon.store().failures()[0].status == "parked"
        hundred = await client.post("/console/parked/retry", data={
            "csrf": token, "plugin": "picky",
            "event": " ".join(f"{n}-{'e' * 40}" for n in range(100))})
        assert hundred.status_code == 303 and len(hundred.headers["set-cookie"]) < 1500
        assert flash_of((await client.get(hundred.headers["location"])).text) == (
            "no parked event of picky matches "
            + " ".join(f"{n}-{'e' * 37}…" for n in range(5)) + " and 95 more")
        # Some ids match, some not: the banner names those that matched nothing.
        seq = daemon.store().failures()[0].event.seq
        answer = await client.post("/console/parked/retry",
                                   data={"csrf": token, "plugin": "picky",
                                         "event": f"{seq} 999 998"})
        assert answer.status_code == 303
        assert answer.headers["location"].endswith("/console/parked")
        with trio.fail_after(5):
            await wait_until(lambda: lines(out))
        assert "BAD" in lines(out)[0]
        assert daemon.store().failures() == []
        page = await client.get(answer.headers["location"])
        assert flash_of(page.text) == ("1 parked event of picky sent again; no parked event "
                                       "matches 999 998")


async def test_test_push_reaches_the_device(start_daemon, tmp_path, stub, caplog, engine):
    daemon = await start_daemon(engine.tables(console_config(tmp_path, **push_config(stub))))
    await phone_report(daemon, "SEL1", token="tok-one-9876543210")
    await phone_report(daemon, "SEL2", token="tok-two-9876543210")
    async with logged_in(daemon) as client:
        token = await token_of(client)
        answer = await client.post("/console/devices/test-push",
                                   data={"csrf": token, "selector": "SEL1",
                                         "message": "Hello <b>there</b>"})
        assert answer.status_code == 303
        assert target(answer.headers["location"]) == ("/console/device", {"selector": "SEL1"})
        (sent,) = stub.requests
        assert sent["DeviceToken"] == "tok-one-9876543210"
        assert sent["verb"] == "NotifyGenericTextMessage"
        assert sent["Message"] == "Hello <b>there</b>"
        page = await client.get(answer.headers["location"])
        # The selector in full (not a secret: the audit trail names the device).
        assert flash_of(page.text) == f"test push to SEL1 of {PHONE}: sent"
        assert f"test push operator=ops selector=SEL1 username={PHONE} outcome=sent" in \
            caplog.text
        # In the push history, as asked by the operator (written off the push's path).
        (record,) = await wait_until(lambda: daemon.store().pushes(selector="SEL1"))
        assert (record.verb, record.outcome, record.requester, record.username) == (
            "NotifyGenericTextMessage", "sent", f"console:{OPERATOR}", PHONE)
        empty = await client.post("/console/devices/test-push",
                                  data={"csrf": token, "selector": "SEL1", "message": "  "})
        assert empty.status_code == 303
        shown = (await client.get(empty.headers["location"])).text
        assert "no test push sent: message: required" in flash_of(shown)
        assert 'class="flash error"' in shown
        assert len(stub.requests) == 1
        unknown = await client.post("/console/devices/test-push",
                                    data={"csrf": token, "selector": "NOPE", "message": "hi"})
        assert unknown.status_code == 404 and "no device with selector NOPE" in unknown.text


async def test_a_long_selector_is_logged_whole_and_cut_in_the_banner(console, caplog):
    """The banner rides in the session cookie: a 4000-character selector would push it past
    the 4 KB a browser keeps."""
    daemon, client = console
    selector = "L" * 3990 + "-end"
    await phone_report(daemon, selector)
    await login(client)
    answer = await client.post("/console/devices/remove",
                               data={"csrf": await token_of(client), "selector": selector})
    assert answer.status_code == 303 and len(answer.headers["set-cookie"]) < 1500
    shown = flash_of((await client.get(answer.headers["location"])).text)
    assert shown.startswith("removed device LLL") and shown.endswith("…") and len(shown) == 500
    assert f"remove device operator=ops selector={selector} username={PHONE}" in caplog.text
    assert daemon.store().device(selector) is None


async def test_an_oversized_form_gets_the_consoles_413_page(start_daemon, tmp_path):
    daemon = await start_daemon(console_config(tmp_path, reporter={"max_body": 2048}))
    await phone_report(daemon, "SEL1")
    async with logged_in(daemon) as client:
        token = await token_of(client)
        for path in ("/console/devices/remove", "/console/devices/test-push",
                     "/console/parked/retry", "/console/login", "/console/logout"):
            answer = await client.post(path, data={"csrf": token, "selector": "SEL1",
                                                   "message": "x" * 5000})
            assert answer.status_code == 413, path
            assert answer.headers["content-type"].startswith("text/html"), path
            assert "the form is larger than 2048 bytes" in answer.text, path
            assert answer.headers["content-security-policy"] == CSP
            assert answer.headers["cache-control"] == "no-store"
        assert daemon.store().device("SEL1") is not None
        assert (await client.get("/console/")).status_code == 200  # still logged in


async def test_test_push_without_a_transport_says_so(console):
    daemon, client = console
    await phone_report(daemon, "SEL1")
    await login(client)
    answer = await client.post("/console/devices/test-push",
                               data={"csrf": await token_of(client), "selector": "SEL1",
                                     "message": "hi"})
    assert answer.status_code == 303
    assert "no push transport" in flash_of((await client.get(answer.headers["location"])).text)


async def test_remove_journals_an_operator_removal(on_engine, caplog):
    daemon, client = on_engine
    await phone_report(daemon, "SEL1")
    await phone_report(daemon, "SEL2")
    await login(client)
    token = await token_of(client)
    answer = await client.post("/console/devices/remove",
                               data={"csrf": token, "selector": "SEL1"})
    assert answer.status_code == 303
    assert target(answer.headers["location"]) == ("/console/user", {"username": PHONE})
    store = daemon.store()
    assert store.device("SEL1") is None and store.device("SEL2") is not None
    removal = store.events()[-1]
    assert (removal.kind, removal.reason, removal.selector) == ("removed", "operator", "SEL1")
    assert removal.source == {"console": OPERATOR, "requester": f"console:{OPERATOR}"}
    page = await client.get(answer.headers["location"])
    assert flash_of(page.text) == f"removed device SEL1 of {PHONE}"
    assert f"remove device operator=ops selector=SEL1 username={PHONE}" in caplog.text
    again = await client.post("/console/devices/remove",
                              data={"csrf": token, "selector": "SEL1"})
    assert again.status_code == 404 and "no device with selector SEL1" in again.text


# What a selector, username or call Id may be that a URL's path would read otherwise: dot
# segments (a browser resolves "zz/../SELBOB1" and "%2e%2e" away), a path, query or fragment.
HAZARDS = (".", "..", "a/../b", "%2e%2e", "%2E./b", "/", "?", "#", "?x=1#f", "ü/..",
           "zz/../SELBOB1", "./SELBOB1")


async def test_hazardous_selectors_reach_their_own_device_and_no_other(start_daemon, tmp_path,
                                                                        caplog):
    """Each device's page, its links and its forms name the device itself, as a browser
    resolves them (urljoin), and through httpx: removing "zz/../SELBOB1" leaves SELBOB1."""
    daemon = await start_daemon(console_config(tmp_path))
    for selector in ("SELBOB1", "b", *HAZARDS):
        await phone_report(daemon, selector)
    async with logged_in(daemon) as client:
        base = str(client.base_url)
        user_url = urljoin(base, console_url("user", username=PHONE))
        shown = (await client.get(user_url)).text
        linked = {query["selector"] for path, query in
                  (target(href, user_url) for href in hrefs_of(shown))
                  if path == "/console/device"}
        assert linked == {"SELBOB1", "b", *HAZARDS}
        for selector in HAZARDS:
            url = urljoin(base, console_url("device", selector=selector))
            answer = await client.get(url)
            assert answer.status_code == 200, selector
            forms = {f["class"]: f for f in forms_of(answer.text)}
            for name, action in (("test-push", "/console/devices/test-push"),
                                 ("remove-device", "/console/devices/remove")):
                assert target(forms[name]["action"], url) == (action, {}), (selector, name)
                assert forms[name]["selector"] == selector, (selector, name)
        # Remove "zz/../SELBOB1" as its page's form does: SELBOB1 stays.
        url = urljoin(base, console_url("device", selector="zz/../SELBOB1"))
        form = {f["class"]: f for f in forms_of((await client.get(url)).text)}["remove-device"]
        answer = await client.post(urljoin(url, form["action"]),
                                   data={k: v for k, v in form.items()
                                         if k not in ("class", "action")})
        assert answer.status_code == 303
        assert target(answer.headers["location"]) == ("/console/user", {"username": PHONE})
        assert flash_of((await client.get(answer.headers["location"])).text) == \
            f"removed device zz/../SELBOB1 of {PHONE}"
        assert f"remove device operator=ops selector=zz/../SELBOB1 username={PHONE}" in \
            caplog.text
        store = daemon.store()
        assert store.device("zz/../SELBOB1") is None
        assert store.device("SELBOB1") is not None and store.device("b") is not None
        # A test push to ".." comes back to ".."'s page.
        answer = await client.post("/console/devices/test-push", data={
            "csrf": await token_of(client), "selector": "..", "message": "hi"})
        assert target(answer.headers["location"]) == ("/console/device", {"selector": ".."})
        # Without a selector: a page saying so.
        answer = await client.post("/console/devices/remove",
                                   data={"csrf": await token_of(client)})
        assert answer.status_code == 400 and "names no selector" in answer.text
        for page in ("user", "device", "call"):
            answer = await client.get(f"/console/{page}")
            assert answer.status_code == 400 and "names no" in answer.text, page


async def test_hazardous_usernames_and_call_ids_reach_their_own_pages(console):
    daemon, client = console
    store = daemon.store()
    with store.transaction():
        for i, name in enumerate(HAZARDS):
            store.register(Report("token", username=name, selector=f"h{i}", token_msgs="t" * 20),
                           {"command": "test"}, time.time())
        store.record_pushes([PushRecord(time.time(), "NotifyIncomingCall", name, PHONE, "h0",
                                        "msgs", "tttttt…tt", None, "sent", 200, "OK", 1, 0.01,
                                        "cli") for name in HAZARDS])
    store.close()
    await login(client)
    base = str(client.base_url)
    for i, name in enumerate(HAZARDS):
        for page, field, check in (("user", "username", f"h{i}"), ("call", "id", "h0")):
            found = await client.get("/console/search", params={"q": name})
            url = urljoin(base, console_url(page, **{field: name}))
            answer = await client.get(url)
            assert answer.status_code == 200 and check in answer.text, (page, name)
            if found.status_code == 303:  # one match: where it leads
                assert target(found.headers["location"])[1] in ({"username": name}, {"id": name})
        # The user's page links to the device, the call's page to the user and the device.
        page_url = urljoin(base, console_url("call", id=name))
        links = [target(href, page_url) for href in hrefs_of((await client.get(page_url)).text)]
        assert ("/console/user", {"username": PHONE}) in links
        assert ("/console/device", {"selector": "h0"}) in links
        assert ("/console/call", {"id": name}) in links


async def test_an_action_the_store_cannot_do_is_a_503_and_changes_nothing(
        start_daemon, tmp_path, engine):
    daemon = await start_daemon(engine.tables(console_config(
        tmp_path, storage={"busy_timeout": 0.3})))
    await phone_report(daemon, "SEL1")
    async with logged_in(daemon) as client:
        token = await token_of(client)
        with engine.locked():
            answer = await client.post("/console/devices/remove",
                                       data={"csrf": token, "selector": "SEL1"})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "storage unavailable, try again in a moment" in answer.text
        assert daemon.store().device("SEL1") is not None
        assert (await client.post("/console/devices/remove",
                                  data={"csrf": token, "selector": "SEL1"})).status_code == 303


# -- headers, where it is served, the config ----------------------------------------------------

async def test_security_headers_on_every_console_answer(console):
    daemon, client = console
    await phone_report(daemon, "SEL1")
    answers = [await client.get("/console/login"), await client.get("/console/")]
    await login(client)
    token = await token_of(client)
    for path in ["/console/", "/console/search?q=SEL", console_url("user", username=PHONE),
                 "/console/device?selector=SEL1", "/console/call?id=x", "/console/parked",
                 "/console/no-such-page"]:
        answers.append(await client.get(path))
    answers.append(await client.post("/console/parked/retry", data={}))  # 403
    answers.append(await client.post("/console/parked/retry",
                                     data={"csrf": token, "plugin": "x"}))  # 404
    for answer in answers:
        where = answer.request.url.path
        assert answer.headers["content-security-policy"] == CSP, where
        assert answer.headers["x-frame-options"] == "DENY", where
        assert answer.headers["x-content-type-options"] == "nosniff", where
        assert answer.headers["referrer-policy"] == "no-referrer", where
        assert answer.headers["cache-control"] == "no-store", where
    static = await client.get("/console/static/console.js")
    assert static.headers["content-security-policy"] == CSP
    assert "no-store" not in static.headers.get("cache-control", "")


def test_no_inline_script_or_style_in_the_templates():
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert "<style" not in text and "style=" not in text, template.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\son[a-z]+=", text), template.name  # onclick= and the like


async def test_console_is_off_by_default(start_daemon, tmp_path):
    daemon = await start_daemon({"server": {"admin_listen": [f"127.0.0.1:{free_port()}"]}})
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as admin:
        assert (await admin.get("/console/login")).status_code == 404
        assert (await admin.get("/console/")).status_code == 404
    assert (await daemon.client.get("/console/login")).status_code == 404


@pytest.mark.parametrize("on_listen", [False, True])
async def test_console_on_listen_only_when_asked(start_daemon, tmp_path, on_listen):
    daemon = await start_daemon(console_config(tmp_path, console={"on_listen": on_listen}))
    answer = await daemon.client.get("/console/login")
    assert answer.status_code == (200 if on_listen else 404)
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as admin:
        assert (await admin.get("/console/login")).status_code == 200
    if on_listen:  # and logging in there works
        assert (await login(daemon.client)).status_code == 303


@pytest.mark.parametrize(("table", "error"), [
    ({"console": {"enabled": True, "users_file": "ops"}},
     "console.enabled: the console is served on [server] admin_listen, which is empty"),
    ({"console": {"enabled": True}, "server": {"admin_listen": ["127.0.0.1:9"]}},
     "console.users_file: nobody could log in"),
    ({"console": {"enabled": True, "users_file": "same"}, "auth": {"users_file": "./same"},
      "server": {"admin_listen": ["127.0.0.1:9"]}},
     "console.users_file: is [auth] users_file"),
    ({"console": {"secret": "short"}}, "console.secret: must be at least 32 characters"),
    ({"console": {"session_lifetime": "8 hours"}}, "console.session_lifetime:"),
    ({"console": {"session_lifetime": ""}}, "console.session_lifetime: is empty"),
    ({"console": {"login_rate": 0}}, "console.login_rate: must be greater than 0"),
    ({"console": {"nosuch": 1}}, "console.nosuch"),
])
def test_config_errors_name_the_key(table, error):
    with pytest.raises(ConfigError) as raised:
        parse_config(table)
    assert any(line.startswith(error) for line in raised.value.errors), raised.value.errors


def test_the_secret_is_never_shown_by_check_config(tmp_path):
    secret = "s" * 40
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[server]\nadmin_listen = ["127.0.0.1:9"]\n[api]\nkeys = ["{KEY}"]\n'
                      f'[console]\nenabled = true\nsecret = "{secret}"\n')
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    config.write_text(config.read_text().replace(secret, "too-short-secret-1"))
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 1
    assert "console.secret: must be at least 32 characters" in result.stderr
    assert "too-short-secret-1" not in result.stdout + result.stderr


@pytest.mark.parametrize(("listen", "warned"), [
    ("0.0.0.0:8080", True), ("127.0.0.1:8080", False), ("unix:/run/p.sock", False)])
def test_check_config_warns_of_the_console_on_a_public_listen(tmp_path, listen, warned):
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[server]\nlisten = ["{listen}"]\n[api]\nkeys = ["{KEY}"]\n'
                      '[console]\nenabled = true\non_listen = true\n')
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert ("[console] on_listen serves the operator console on 0.0.0.0:8080"
            in result.stderr) == warned, result.stderr


def test_operators_are_managed_with_users_console(tmp_path):
    operators, phones = tmp_path / "operators", tmp_path / "phones"
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[auth]\nusers_file = "{phones}"\n'
                      f'[console]\nusers_file = "{operators}"\n')
    add = cli("users", "add", "--console", OPERATOR, "--password-stdin", "--config",
              str(config), input=PASSWORD + "\n")
    assert add.returncode == 0, add.stderr
    assert not phones.exists()
    (user,) = users.read(operators).values()
    assert user.name == OPERATOR and users.scrypt_verify(user.scrypt, PASSWORD)
    listed = cli("users", "list", "--console", "--config", str(config))
    assert listed.stdout.split() == ["OPERATOR", OPERATOR]
    assert cli("users", "remove", "--console", OPERATOR, "--config", str(config)).returncode == 0
    assert users.read(operators) == {}
    missing = cli("users", "add", "--console", "x", "--password-stdin",
                  "--config", str(tmp_path / "none.toml"), input="p\n")
    assert missing.returncode != 0
