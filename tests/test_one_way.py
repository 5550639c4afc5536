"""One way to do each thing: each rule that used to be written in several places is one
function now, and these tests put the same inputs through every place that uses it."""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from dataclasses import fields
from email.utils import formatdate
from pathlib import Path
from typing import get_args

import pytest
import trio
from click.testing import CliRunner
from pnbridge import PAIR_FIELDS
from pnbridge.cli import main
from pnbridge.config.tables import parse_config
from pnbridge.config.typed import parse_duration
from pnbridge.errors import ConfigError
from pnbridge.ingest.transfer import Row, import_row
from pnbridge.model import (
    DeliveryOutcome,
    Device,
    DeviceOutcome,
    Push,
    PushContent,
    Report,
    ReportOutcome,
    isotime,
)
from pnbridge.push.fanout import RETRY_FIRST, RETRY_MAX
from pnbridge.push.request import PushRequest, parse_request
from pnbridge.retry import LONGEST_WAIT, parse_retry_after
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import Answer, Stub

KEY = "test-key-0123456789abcdef"
DEADLINE = 0.5  # the push's; the webhook's delivery max_age is MAX_AGE
MAX_AGE = 3600.0


def _date(offset: float) -> str:
    return formatdate(time.time() + offset, usegmt=True)


# (Retry-After, the seconds it asks for: None when it cannot be read). Made at call time:
# a date is relative to now.
def retry_after_table() -> list[tuple[str, float | None]]:
    return [
        ("1", 1.0),
        ("1.5", 1.5),
        ("-1", None),
        ("9" * 40, LONGEST_WAIT),
        (_date(-3600), 0.0),
        (_date(600), 600.0),
        ("soon", None),
    ]


IDS = ["1", "1.5", "-1", "huge", "date-past", "date-future", "garbage"]


@pytest.mark.parametrize("row", range(len(IDS)), ids=IDS)
def test_parse_retry_after(row):
    value, expected = retry_after_table()[row]
    seconds = parse_retry_after(value)
    assert seconds == pytest.approx(expected, abs=2) if expected is not None else seconds is None


@pytest.fixture
async def stub(nursery: trio.Nursery) -> Stub:
    return await nursery.start(Stub().serve)


def _webhook_wait(caplog: pytest.LogCaptureFixture) -> float | str | None:
    """What delivery made of the webhook's first failed attempt: the wait before the next,
    "parked", or None while there is no such line yet."""
    for record in caplog.records:
        text = record.getMessage()
        if record.name == "pnbridge.dispatch" and "plugin webhook" in text:
            if "parked" in text:
                return "parked"
            if found := re.search(r"attempt 1 failed: .*; next in ([\d.]+)s", text):
                return float(found.group(1))
    return None


@pytest.mark.parametrize("row", range(len(IDS)), ids=IDS)
async def test_retry_after_reads_the_same_in_both_plugins(start_daemon, stub, caplog, row):
    """The same Retry-After, answered by one stand-in server to the webhook plugin (event
    delivery) and to the pnmediator plugin (a push), is the same wait in both."""
    caplog.set_level(logging.WARNING, "pnbridge.dispatch")
    value, expected = retry_after_table()[row]
    # The webhook's POSTs carry no DeviceToken: the stub scripts them under "".
    stub.answer("", Answer(503, {}, headers={"Retry-After": value}))
    stub.answer("tok", *[Answer(503, {"code": 503}, headers={"Retry-After": value})] * 20)
    daemon = await start_daemon({
        "api": {"keys": [KEY], "deadlines": {"NotifyTextMessage": DEADLINE}},
        "plugins": {
            "enabled": ["pnmediator", "webhook"],
            "pnmediator": {"url": stub.url, "timeout": 0.5},
            "webhook": {"urls": [stub.url], "secret": "s" * 16, "delivery": {
                "backoff": 60, "max_backoff": 60, "max_age": MAX_AGE}},
        },
    })
    answer = await daemon.client.get("/token", params={
        "username": "alice", "selector": "A", "pushToken": "tok", "pushappid": "app"})
    assert answer.status_code == 200
    answer = await daemon.client.post(
        "/api/v1/push", json={"username": "alice", "verb": "NotifyTextMessage"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    (device,) = answer.json()["devices"]
    with trio.fail_after(5):
        while (waited := _webhook_wait(caplog)) is None:
            await trio.sleep(0.01)

    pushed = re.search(r"a retry in ([\d.e+]+) s would miss the deadline", device["reason"])
    if expected is None or expected == 0:  # each goes by its own backoff
        assert device["attempts"] > 1, device
        assert waited == 0 if expected == 0 else 30 <= waited <= 60  # type: ignore[operator]
    else:
        assert pushed and device["attempts"] == 1, device
        assert float(pushed.group(1)) == pytest.approx(expected, abs=2)
        assert waited == "parked" if expected > MAX_AGE else waited == pytest.approx(expected,
                                                                                     abs=2)
    assert device["outcome"] == "failed"


def _bounds(attempt: int, first: float, cap: float) -> tuple[float, float]:
    """What retry.backoff may wait after failed attempt ``attempt``."""
    top = min(cap, first * 2 ** (attempt - 1))
    return top / 2, top


async def test_one_backoff_for_pushes_and_deliveries(start_daemon, stub, caplog):
    """Without a Retry-After, a push (push.RETRY_FIRST, RETRY_MAX) and an event delivery
    (the plugin's backoff, max_backoff) wait the same way: doubling, capped, jittered."""

    caplog.set_level(logging.WARNING, "pnbridge.dispatch")
    failing = Answer(503, {"code": 503})
    stub.answer("", *[failing] * 4)
    stub.answer("tok", *[failing] * 4)
    daemon = await start_daemon({
        "api": {"keys": [KEY], "deadlines": {"NotifyTextMessage": 5.0}},
        "plugins": {
            "enabled": ["pnmediator", "webhook"],
            "pnmediator": {"url": stub.url, "timeout": 0.5},
            "webhook": {"urls": [stub.url], "secret": "s" * 16,
                        "delivery": {"backoff": 0.05, "max_backoff": 0.15}},
        },
    })
    await daemon.client.get("/token", params={
        "username": "alice", "selector": "A", "pushToken": "tok", "pushappid": "app"})
    answer = await daemon.client.post(
        "/api/v1/push", json={"username": "alice", "verb": "NotifyTextMessage"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.json()["devices"][0]["attempts"] == 5
    times = [t for t, r in zip(stub.times, stub.requests, strict=True)
             if r.get("DeviceToken") == "tok"]
    for attempt, gap in enumerate([b - a for a, b in itertools.pairwise(times)], start=1):
        low, high = _bounds(attempt, RETRY_FIRST, RETRY_MAX)
        assert low <= gap <= high + 0.1, (attempt, gap)
    with trio.fail_after(5):
        while len(waits := re.findall(r"next in ([\d.]+)s", caplog.text)) < 4:
            await trio.sleep(0.01)
    for attempt, wait in enumerate(map(float, waits), start=1):
        low, high = _bounds(attempt, 0.05, 0.15)
        assert low - 0.005 <= wait <= high + 0.005, (attempt, wait)


STORED = {"username": "alice", "token_calls": "voip-1", "appid_calls": "app.voip",
          "token_msgs": "apns-1", "appid_msgs": "app", "extras": {"ua": "1"}}
# What later reports know (left out: not known yet), and whether that changes the device.
KNOWN = [
    ({"username": "alice", "token_msgs": "apns-1"}, False),
    ({"username": "alice", "token_calls": "voip-1", "appid_msgs": "app"}, False),
    ({"username": "alice", "token_msgs": "apns-2"}, True),
    ({"username": "alice", "appid_calls": "app.voip2", "token_msgs": "apns-1"}, True),
    ({"username": "bob", "token_msgs": "apns-1"}, True),
    ({"username": "alice", "token_msgs": "apns-2", "extras": {"ua": "2"}}, True),
]


@pytest.mark.parametrize(("known", "changes"), KNOWN)
def test_a_value_not_known_yet_keeps_the_stored_one_everywhere(tmp_path, known, changes):
    """A report (from an app: register; from a file: devices import) that leaves values
    out keeps the stored ones, and changes nothing when what it knows is stored."""

    report = Report("token", selector="S", **known)  # the rest None: not known yet
    expected = {**STORED, **known}
    for site in ("report", "import"):
        store = SQLiteStore(tmp_path / f"{site}.db")
        with store.transaction():
            store.register(Report("token", selector="S", **STORED), {}, 1.0)
            if site == "report":
                outcome = store.register(report, {}, 2.0).outcome
            else:
                outcome = import_row(store, Row(1, report, {}), {}, 2.0)
        device = store.device("S")
        assert device is not None
        assert {k: getattr(device, k) for k in STORED} == expected, site
        assert (outcome != "unchanged") == changes, site
        store.close()


def test_the_pair_fields_are_written_once():
    """PAIR_FIELDS is the pair fields of Device and Report; no module of pnbridge or its
    plugins spells two of them out in a row again (the first schema migration aside: it
    is history)."""


    for cls in (Device, Report):
        names = [f.name for f in fields(cls) if f.name.startswith(("token_", "appid_"))]
        assert tuple(names) == PAIR_FIELDS
    root = Path(__file__).parent.parent
    spelled = re.compile(r"""["'](token|appid)_(calls|msgs)["'],\s*["'](token|appid)_""")
    for path in [*root.glob("daemon/**/*.py"), *root.glob("plugins/**/*.py")]:
        text = path.read_text()
        if "def _create_devices_and_journal" in text:
            text = text.split("def _create_devices_and_journal", 1)[1].split("\ndef ", 1)[1]
        assert not spelled.search(text), path


DURATIONS = [("90d", 7776000), ("1h30m", 5400), ("1d 12h", 129600), ("0.5s", 0.5),
             ("2x", None), ("0d", None), ("-1d", None), ("90", None), ("1.d", None)]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_one_duration_for_the_config_and_the_cli(tmp_path, text, seconds):
    """``[storage] expire_after`` and ``--since`` read a duration alike, and refuse a bad
    one with the same words (each naming its key or option)."""

    log = tmp_path / "audit.jsonl"
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[plugins]\nenabled = ["auditlog"]\n[plugins.auditlog]\npath = "{log}"\n')
    # One line from twice the duration ago, one from half of it ago: --since keeps the latter.
    log.write_text("".join(
        json.dumps({"time": isotime(time.time() - ago * (seconds or 1)), "id": id_,
                    "kind": "registered", "reason": "new", "username": "u", "selector": id_})
        + "\n" for id_, ago in (("old", 2), ("new", 0.5))))
    result = CliRunner().invoke(
        main, ["audit", "--config", str(config), "--since", text, "--json"])
    if seconds is None:
        with pytest.raises(ValueError) as problem:
            parse_duration(text)
        with pytest.raises(ConfigError) as error:
            parse_config({"storage": {"expire_after": text}})
        assert error.value.errors == [f"storage.expire_after: {problem.value}"]
        assert result.exit_code == 2
        assert f"Invalid value for '--since': {problem.value}" in result.output
    else:
        expire = parse_config({"storage": {"expire_after": text}}).storage.expire_seconds
        assert expire == seconds
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["id"] for line in result.output.splitlines()] == ["new"]


def test_a_push_carries_the_request_content_written_once():
    """The PBX's request and the push a transport gets share one definition of the verb
    and its fields: what the request may hold is that and whom it goes to."""

    content = [f.name for f in fields(PushContent)]
    assert [f.name for f in fields(PushRequest)] == [*content, "username", "selector"]
    assert [f.name for f in fields(Push)][:len(content)] == content
    body = {"username": "u", "verb": "NotifyTextMessage", "message": "hi", "badge": 2,
            "sound": "s", "display_name": "D", "thread_id": "t", "id": "i"}
    request = parse_request(body)
    device = Device("S", "u", None, None, "tok", "app", {}, 0.0, 0.0, 0.0)
    push = Push(**request.content(), device=device, pair="msgs", token="tok", appid="app")
    assert push.content() == {k: v for k, v in body.items() if k != "username"}


async def test_one_word_for_each_outcome(start_daemon, stub):
    """Every outcome label the daemon counts is a word of the vocabulary in events.py, which
    the metrics' help and docs/install.md list exactly."""


    vocabulary = {"pnbridge_reports_total": ReportOutcome,
                  "pnbridge_deliveries_total": DeliveryOutcome,
                  "pnbridge_pushes_total": DeviceOutcome}
    stub.answer("tok", Answer(503, {"code": 503}))
    daemon = await start_daemon({
        "api": {"keys": [KEY]},
        "reporter": {"client_rate": 1, "client_burst": 4},
        "plugins": {"enabled": ["pnmediator", "webhook"],
                    "pnmediator": {"url": stub.url, "timeout": 0.5},
                    "webhook": {"urls": [stub.url], "secret": "s" * 16,
                                "delivery": {"backoff": 0.01}}},
    })
    for params in ({"username": "a", "selector": "A", "pushToken": "tok"},
                   {"username": "a", "selector": "A", "pushToken": "tok"},
                   {"username": "a"}, {"username": "a", "selector": "A", "pushToken": "t2"},
                   {"username": "a", "selector": "B", "pushToken": "t3"}):
        await daemon.client.get("/token", params=params)
    await daemon.client.get("/remove", params={"selector": "NONE"})
    await daemon.client.post("/api/v1/push", json={"username": "a", "verb": "NotifyTextMessage"},
                             headers={"Authorization": f"Bearer {KEY}"})
    metrics = (await daemon.client.get("/metrics")).text
    docs = (Path(__file__).parent.parent / "docs" / "install.md").read_text()
    for metric, words in vocabulary.items():
        listed = ", ".join(get_args(words))
        assert f"outcome ({listed})" in metrics
        used = set(re.findall(metric + r'{.*outcome="([^"]+)"', metrics))
        assert used and used <= set(get_args(words)), (metric, used)
        documented = docs.split(f"`{metric.removesuffix('_total')}_total{{", 1)[1]
        documented = documented.split(")", 1)[0]
        assert re.findall(r"`(\w+)`", documented) == list(get_args(words)), metric
