"""The reporter routes over real HTTP: every request shape, the alias table, the null-ish
rule, tokens with "+" and "/", removal, and every error status."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio
from reports import report

SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN_MSGS = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
TOKEN_CALLS = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
FULL = {
    "username": "johndow",
    "selector": SEL,
    "token_msgs": TOKEN_MSGS,
    "appid_msgs": "com.cloudsoftphone.app",
    "token_calls": TOKEN_CALLS,
    "appid_calls": "com.cloudsoftphone.app.pushkit",
}

PATH_ROUTES = {
    "reporter": {
        "routes": [
            {"path": "/pushToken/{username}/{selector}/{pushToken}&appid={pushappid}",
             "kind": "token"},
            {"path": "/removePushToken/{username}/{selector}/{pushToken}&appid={pushappid}",
             "kind": "removal"},
        ]
    }
}


def only_device(daemon):
    devices = daemon.store().devices()
    assert len(devices) == 1, devices
    return devices[0]


def events(daemon):
    return daemon.store().events()


def assert_pairs(device, **expected):
    for name, value in expected.items():
        assert getattr(device, name) == value, name


async def test_get_query_stores_both_pairs_and_answers_empty_200(start_daemon):
    daemon = await start_daemon()
    r = await daemon.client.get("/token/", params={**FULL, "password": "12345678"})
    assert (r.status_code, r.content) == (200, b"")
    assert "content-type" not in r.headers
    device = only_device(daemon)
    assert_pairs(device, **FULL)
    assert device.extras == {}


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_form_body(start_daemon, method):
    daemon = await start_daemon()
    r = await daemon.client.request(method, "/token", data=FULL)
    assert r.status_code == 200
    assert_pairs(only_device(daemon), **FULL)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/x-www-form-urlencoded",  # wrong declared type, JSON content
        "text/plain",
        None,
    ],
)
async def test_json_body_whatever_its_declared_type(start_daemon, content_type):
    daemon = await start_daemon()
    body = json.dumps({k: v for k, v in FULL.items() if k != "username"}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    r = await daemon.client.post("/token/johndow/", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert_pairs(only_device(daemon), **FULL)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
async def test_form_body_whatever_its_declared_type(start_daemon, content_type):
    daemon = await start_daemon()
    body = "&".join(f"{k}={v}" for k, v in FULL.items()).encode()  # not encoded, like the app
    headers = {"Content-Type": content_type} if content_type else {}
    r = await daemon.client.post("/token", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert_pairs(only_device(daemon), **FULL)


async def test_json_numbers_are_text(start_daemon):
    daemon = await start_daemon()
    r = await daemon.client.post(
        "/token", json={"username": 1001, "selector": SEL, "token_msgs": TOKEN_MSGS}
    )
    assert r.status_code == 200
    assert only_device(daemon).username == "1001"


async def test_json_in_other_charset(start_daemon):
    daemon = await start_daemon()
    body = json.dumps({**FULL, "username": "jürgen"}, ensure_ascii=False).encode("latin-1")
    r = await daemon.client.post(
        "/token", content=body, headers={"Content-Type": "application/json; charset=iso-8859-1"}
    )
    assert r.status_code == 200
    assert only_device(daemon).username == "jürgen"


async def test_path_template_with_unencoded_token(start_daemon):
    """The seed's path-style URL: the token (with "/", "+", "=") sits in the path."""
    daemon = await start_daemon(PATH_ROUTES)
    token = "ab+c/d/e=="
    r = await daemon.client.get(f"/pushToken/johndow/{SEL}/{token}&appid=com.cloudsoftphone.app")
    assert r.status_code == 200, r.text
    assert_pairs(only_device(daemon), username="johndow", selector=SEL, token_msgs=token,
                 appid_msgs="com.cloudsoftphone.app", token_calls=None)
    r = await daemon.client.get(f"/removePushToken/johndow/{SEL}/{token}&appid=com.x")
    assert r.status_code == 200
    assert daemon.store().devices() == []


async def test_path_template_percent_encoded_values(start_daemon):
    daemon = await start_daemon(PATH_ROUTES)
    r = await daemon.client.get(f"/pushToken/john%20doe/{SEL}/ab%2Bc%2Fd%3D&appid=com.x")
    assert r.status_code == 200
    assert_pairs(only_device(daemon), username="john doe", token_msgs="ab+c/d=")


async def test_configured_route_methods(start_daemon):
    daemon = await start_daemon(
        {"reporter": {"routes": [{"path": "/r/{username}", "kind": "token", "methods": ["PUT"]}]}}
    )
    assert (await daemon.client.put("/r/bob", data={"selector": "S", "token": "t"})).status_code == 200
    r = await daemon.client.get("/r/bob", params={"selector": "S", "token": "t"})
    assert r.status_code == 405
    assert r.headers["allow"] == "PUT"


async def test_default_routes_can_be_turned_off(start_daemon):
    daemon = await start_daemon(
        {"reporter": {"default_routes": False,
                      "routes": [{"path": "/only", "kind": "token"}]}}
    )
    assert (await daemon.client.get("/token", params=FULL)).status_code == 404
    assert (await daemon.client.get("/only", params=FULL)).status_code == 200


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("pushToken", "token_msgs"), ("pushTokenOther", "token_msgs"),
        ("token_msgs", "token_msgs"), ("PUSHTOKEN", "token_msgs"),
        ("pushTokenIncomingCall", "token_calls"), ("token_calls", "token_calls"),
        ("pushappid", "appid_msgs"), ("pushappid_other", "appid_msgs"),
        ("appid_msgs", "appid_msgs"), ("appId_msgs", "appid_msgs"), ("app_id_msgs", "appid_msgs"),
        ("pushappid_incoming_call", "appid_calls"), ("appid_calls", "appid_calls"),
        ("appId_calls", "appid_calls"), ("app_id_calls", "appid_calls"),
    ],
)
async def test_alias_table(start_daemon, name, field):
    daemon = await start_daemon()
    params = {"Username": "u", "SELECTOR": "S", "token_msgs": "m", "token_calls": "c", name: "VALUE"}
    r = await daemon.client.get("/token", params=params)
    assert r.status_code == 200
    assert getattr(only_device(daemon), field) == "VALUE"


async def test_operator_aliases(start_daemon):
    daemon = await start_daemon(
        {"reporter": {"fields": {"username": ["ext"], "token_msgs": ["devtoken"]}}}
    )
    r = await daemon.client.post("/token", json={"ext": "200", "selector": "S", "devtoken": "t"})
    assert r.status_code == 200
    assert_pairs(only_device(daemon), username="200", token_msgs="t")


@pytest.mark.parametrize("pair", [("token_msgs", "appid_msgs"), ("token_calls", "appid_calls")])
@pytest.mark.parametrize("nullish", ["", "null", "(null)", "<null>", "nil", "NULL", "%pushTokenOther%"])
async def test_nullish_never_erases(start_daemon, nullish, pair):
    daemon = await start_daemon()
    assert (await daemon.client.get("/token", params=FULL)).status_code == 200
    later = {**FULL, **dict.fromkeys(pair, nullish)}
    assert (await daemon.client.get("/token", params=later)).status_code == 200
    assert_pairs(only_device(daemon), **FULL)
    assert len(events(daemon)) == 1  # nothing changed: no second event
    omitted = {k: v for k, v in FULL.items() if k not in pair}
    assert (await daemon.client.post("/token", json=omitted)).status_code == 200
    assert_pairs(only_device(daemon), **FULL)


async def test_ios_late_other_token(start_daemon):
    """iOS reports the PushKit pair first, the other token a moment later."""
    daemon = await start_daemon()
    first = {**FULL, "token_msgs": "(null)"}
    assert (await daemon.client.post("/token", data=first)).status_code == 200
    assert only_device(daemon).token_msgs is None
    assert (await daemon.client.post("/token", data=FULL)).status_code == 200
    assert_pairs(only_device(daemon), **FULL)
    kinds = [(e.kind, e.reason) for e in events(daemon)]
    assert kinds == [("registered", "new"), ("registered", "changed")]
    changed = events(daemon)[1]
    assert changed.before.token_msgs is None and changed.after.token_msgs == TOKEN_MSGS


async def test_unencoded_plus_in_query_and_form(start_daemon):
    daemon = await start_daemon()
    raw = "username=u&selector=S&token_calls=a+b/c=&token_msgs=x%2By+z"
    assert (await daemon.client.get("/token?" + raw)).status_code == 200
    assert_pairs(only_device(daemon), token_calls="a+b/c=", token_msgs="x+y+z")
    raw = raw.replace("a+b", "q+r")
    r = await daemon.client.post("/token", content=raw, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert only_device(daemon).token_calls == "q+r/c="


async def test_unchanged_report_only_refreshes_last_seen(start_daemon):
    daemon = await start_daemon()
    await daemon.client.get("/token", params=FULL)
    first = only_device(daemon)
    await trio.sleep(0.01)
    await daemon.client.get("/token", params=FULL)
    second = only_device(daemon)
    assert second.last_seen > first.last_seen
    assert second.updated_at == first.updated_at
    assert len(events(daemon)) == 1


async def test_change_writes_event_with_before_and_after(start_daemon):
    daemon = await start_daemon()
    await daemon.client.get("/token", params=FULL)
    await daemon.client.get("/token", params={**FULL, "username": "jane", "token_calls": "new"})
    new, changed = events(daemon)
    assert (new.kind, new.reason, new.before, new.after.username) == ("registered", "new", None, "johndow")
    assert (changed.kind, changed.reason) == ("registered", "changed")
    assert (changed.before.username, changed.after.username) == ("johndow", "jane")
    assert changed.after.token_calls == "new" and changed.source["route"] == "/token"
    assert new.id != changed.id and new.seq < changed.seq


async def test_extras_kept_credentials_never_stored(start_daemon):
    daemon = await start_daemon({"reporter": {"credential_fields": ["pin"]}})
    params = {**FULL, "password": "s3cr3t-pw-1", "pin": "s3cr3t-pin-2", "installid": "abc", "ver": "1.5"}
    assert (await daemon.client.get("/token", params=params)).status_code == 200
    assert only_device(daemon).extras == {"installid": "abc", "ver": "1.5"}
    await daemon.client.get("/removeToken", params=params)
    for suffix in ("", "-wal"):
        data = Path(daemon.db_path + suffix).read_bytes()
        assert b"s3cr3t" not in data


async def test_multiple_devices_per_user_and_accounts_per_device(start_daemon):
    daemon = await start_daemon()
    for selector, user in [("A:1", "alice"), ("A:2", "alice"), ("B:1", "bob")]:
        # The same app install (same token) holds alice twice and bob once.
        r = await daemon.client.get("/token", params={"username": user, "selector": selector, "token_msgs": "same"})
        assert r.status_code == 200
    store = daemon.store()
    assert [d.selector for d in store.devices("alice")] == ["A:1", "A:2"]
    assert [d.selector for d in store.devices("bob")] == ["B:1"]


async def test_removal_by_selector(start_daemon):
    daemon = await start_daemon()
    await daemon.client.get("/token", params=FULL)
    await daemon.client.get("/token", params={**FULL, "selector": "other"})
    r = await daemon.client.post("/removeToken/johndow/", json={"selector": SEL})
    assert (r.status_code, r.content) == (200, b"")
    assert [d.selector for d in daemon.store().devices()] == ["other"]
    removed = events(daemon)[-1]
    assert (removed.kind, removed.reason, removed.after) == ("removed", "app", None)
    assert removed.before.selector == SEL


async def test_removal_without_selector_removes_devices_with_that_token(start_daemon):
    daemon = await start_daemon()
    await daemon.client.get("/token", params={"username": "u", "selector": "S1", "token_msgs": "t1"})
    await daemon.client.get("/token", params={"username": "u", "selector": "S2", "token_calls": "t2"})
    await daemon.client.get("/token", params={"username": "v", "selector": "S3", "token_msgs": "t1"})
    r = await daemon.client.delete("/removeToken", params={"username": "u", "token_calls": "t1"})
    assert r.status_code == 200
    assert [d.selector for d in daemon.store().devices()] == ["S2", "S3"]


async def test_removal_of_unknown_or_foreign_device_is_200_and_changes_nothing(start_daemon):
    daemon = await start_daemon()
    await daemon.client.get("/token", params=FULL)
    assert (await daemon.client.get("/removeToken", params={"selector": "nope"})).status_code == 200
    r = await daemon.client.get("/removeToken", params={"selector": SEL, "username": "mallory"})
    assert r.status_code == 200
    assert only_device(daemon).selector == SEL


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({k: v for k, v in FULL.items() if k != "selector"}, "missing selector"),
        ({k: v for k, v in FULL.items() if k != "username"}, "missing username"),
        ({"username": "u", "selector": "S", "token_msgs": "(null)"}, "no push token"),
        ({"username": "u", "selector": "S", "token_msgs": "t\x01"}, "control characters"),
        ({"username": "u", "selector": "S", "token_msgs": "t" * 5000}, "longer than"),
    ],
)
async def test_bad_reports_are_400_with_reason(start_daemon, params, reason):
    daemon = await start_daemon()
    r = await daemon.client.get("/token", params=params)
    assert r.status_code == 400
    assert reason in r.text and r.text.count("\n") == 1
    assert daemon.store().devices() == []


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"\xff\xfe\x00garbage", "application/json", "not valid utf-8"),
        (b'{"selector": "S", ', "application/json", "not valid JSON"),
        (b'["selector"]', "application/json", "must be an object"),
        (b"just some words", "text/plain", "neither form fields nor a JSON object"),
        (b"selector=%FF%FE&username=u", None, "not valid UTF-8"),
        (b'{"username": "u", "selector": {"a": 1}, "token": "t"}', "application/json", "must be a string"),
        (b"[" * 100000 + b"]" * 100000, "application/json", "must be an object"),
        (b"{" + b'"a":[' * 50000 + b"]" * 50000 + b"}", "application/json", "not valid JSON"),
    ],
)
async def test_undecodable_bodies_are_400(start_daemon, body, content_type, reason):
    daemon = await start_daemon({"reporter": {"max_body": 1024 * 1024}})
    headers = {"Content-Type": content_type} if content_type else {}
    r = await daemon.client.post("/token", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert reason in r.text


async def test_removal_needs_selector_or_username_and_token(start_daemon):
    daemon = await start_daemon()
    r = await daemon.client.get("/removeToken", params={"username": "u"})
    assert r.status_code == 400 and "missing selector" in r.text


async def test_body_over_64_kib_is_413(start_daemon):
    daemon = await start_daemon()
    body = json.dumps({**FULL, "pad": "x" * 70_000})
    r = await daemon.client.post("/token", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert daemon.store().devices() == []

    async def chunks():
        yield b'{"pad": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    r = await daemon.client.post("/token", content=chunks())  # chunked: no Content-Length
    assert r.status_code == 413


async def test_unknown_path_404_wrong_method_405(start_daemon):
    daemon = await start_daemon()
    assert (await daemon.client.get("/nothing/here")).status_code == 404
    assert (await daemon.client.get("/")).status_code == 404
    r = await daemon.client.delete("/token", params=FULL)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST, PUT"
    assert (await daemon.client.request("PATCH", "/token/")).status_code == 405


async def test_invalid_percent_encoding_in_path_is_400(start_daemon):
    daemon = await start_daemon(PATH_ROUTES)
    r = await daemon.client.get(f"/pushToken/%FF%FE/{SEL}/tok&appid=x")
    assert r.status_code == 400


async def test_storage_failure_is_503_then_recovers(start_daemon):
    daemon = await start_daemon({"storage": {"busy_timeout": 0.2}})
    locker = sqlite3.connect(daemon.db_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    r = await daemon.client.get("/token", params=FULL)
    assert r.status_code == 503 and "storage" in r.text
    assert r.headers["Retry-After"] == "1"
    locker.execute("ROLLBACK")
    locker.close()
    assert (await daemon.client.get("/token", params=FULL)).status_code == 200
    assert_pairs(only_device(daemon), **FULL)


async def test_concurrent_reports_are_all_stored_with_their_events(start_daemon):
    daemon = await start_daemon()
    statuses = []

    async def report_one(i):
        r = await report(daemon, f"S{i}", path="/token", status=None, username=f"u{i % 10}",
                         token=None, token_msgs=f"t{i}")
        statuses.append(r.status_code)

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(report_one, i)
    assert statuses == [200] * 200
    store = daemon.store()
    assert len(store.devices()) == 200
    assert sorted(e.selector for e in store.events()) == sorted(f"S{i}" for i in range(200))


async def test_head_is_a_method_the_app_may_use(start_daemon):
    daemon = await start_daemon()
    r = await daemon.client.head("/token/", params=FULL)
    assert (r.status_code, r.content) == (200, b"")
    assert_pairs(only_device(daemon), **FULL)
    assert (await daemon.client.head("/removeToken/", params={"selector": SEL})).status_code == 200
    assert daemon.store().devices() == []


async def test_line_breaks_of_a_pasted_post_data_template(start_daemon):
    daemon = await start_daemon()
    body = "username=johndow&\r\nselector=" + SEL + "&\ntoken_msgs=" + TOKEN_MSGS + "+\n"
    r = await daemon.client.post("/token", content=body)
    assert r.status_code == 200, r.text
    assert_pairs(only_device(daemon), username="johndow", selector=SEL, token_msgs=TOKEN_MSGS + "+")
    body = json.dumps({"username": "johndow\n", "selector": SEL + "\t", "token_msgs": "abc"}, indent=2) + "\n"
    r = await daemon.client.post("/token", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert_pairs(only_device(daemon), username="johndow", selector=SEL, token_msgs="abc")
