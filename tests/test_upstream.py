"""What the push upstream answers, tried from a real HTTP server (tests/pnmediator_stub.py)
against a real daemon: only pnmediator's own JSON code 404 clears a token; a 404 from a wrong
url or a proxy is a configuration error that clears nothing and shows in /readyz."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
from conftest import Daemon
from faults import rss_kib
from pnmediator_stub import (
    BODY_404,
    CODE_200_404,
    CODE_404_HTTP_500,
    CODE_404_STRING,
    EMPTY_404,
    HTML_404,
    HTTP_404,
    KEY,
    OTHER_JSON_404,
    Answer,
)
from reports import report

MSG = "NotifyTextMessage"


def config(url: str, **more: Any) -> dict[str, Any]:
    return {
        "api": {"keys": [KEY], "deadlines": {MSG: 2.0}},
        "plugins": {"enabled": ["pnmediator"], "pnmediator": {"url": url, "timeout": 1.0}},
        **more,
    }


async def push(daemon: Daemon, username: str = "alice") -> dict[str, Any]:
    answer = await daemon.client.post(
        "/api/v1/push", json={"username": username, "verb": MSG, "message": "hi"},
        headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return {d["selector"]: d for d in answer.json()["devices"]}


def tokens(daemon: Daemon) -> dict[str, str | None]:
    store = daemon.store()
    try:
        return {d.selector: d.token_msgs for d in store.devices()}
    finally:
        store.close()


async def metric(daemon: Daemon, name: str) -> float:
    for line in (await daemon.client.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


NOT_PNMEDIATOR = [HTML_404, EMPTY_404, OTHER_JSON_404, CODE_200_404]


@pytest.mark.parametrize("answer", NOT_PNMEDIATOR,
                         ids=["nginx-html", "empty", "other-json", "json-code-200"])
async def test_a_404_that_is_not_pnmediators_keeps_the_token(start_daemon, stub, answer, caplog):
    daemon = await start_daemon(config(stub.url))
    await report(daemon, "DEV", username="alice", token=None, msgs="tok-1")
    stub.answer("tok-1", answer)
    result = (await push(daemon))["DEV"]
    assert result["outcome"] == "failed"
    assert "likely a configuration error" in result["reason"]
    assert f"[plugins.pnmediator] url = {stub.url}" in result["reason"]
    assert tokens(daemon) == {"DEV": "tok-1"}
    assert await metric(daemon, "pnbridge_push_config_errors_total") == 1
    assert [r for r in caplog.records if r.levelno == logging.ERROR
            and "likely a configuration error" in r.getMessage()]
    assert (await push(daemon))["DEV"]["outcome"] == "sent"  # the token still works


@pytest.mark.parametrize("answer", [BODY_404, HTTP_404, CODE_404_STRING, CODE_404_HTTP_500],
                         ids=["http-200", "http-404", "string-code", "http-500"])
async def test_pnmediators_json_code_404_clears_the_token(start_daemon, stub, answer):
    daemon = await start_daemon(config(stub.url))
    await report(daemon, "DEV", username="alice", token=None, msgs="tok-1")
    await report(daemon, "OTHER", username="alice", token=None, msgs="tok-2")
    stub.answer("tok-1", answer)
    results = await push(daemon)
    assert results["DEV"]["outcome"] == "removed"
    assert "pnmediator code 404" in results["DEV"]["reason"]
    assert tokens(daemon) == {"OTHER": "tok-2"}
    assert await metric(daemon, "pnbridge_push_config_errors_total") == 0


async def test_a_typo_in_the_url_wipes_nothing_and_readyz_names_it(start_daemon, stub, caplog):
    """The stub answers nginx's HTML 404 at any path but its own, as a web server does."""
    daemon = await start_daemon(config(stub.url + "x"))
    for n in range(5):
        await report(daemon, f"DEV{n}", username=f"user{n}", token=None, msgs=f"tok-{n}")
    for n in range(5):
        result = (await push(daemon, f"user{n}"))[f"DEV{n}"]
        assert result["outcome"] == "failed", result
        ready = await daemon.client.get("/readyz")
        if n < 2:
            assert ready.status_code == 200, ready.text
        else:
            assert ready.status_code == 503
            assert f"push transport: the last {n + 1} pushes failed" in ready.text
            assert "[plugins.pnmediator] url" in ready.text
    assert tokens(daemon) == {f"DEV{n}": f"tok-{n}" for n in range(5)}
    assert await metric(daemon, "pnbridge_push_config_errors_total") == 5
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and r.name == "pnbridge.push"]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # not one per push


async def test_an_answer_from_pnmediator_clears_readyz(start_daemon, stub):
    daemon = await start_daemon(config(stub.url))
    await report(daemon, "DEV", username="alice", token=None, msgs="tok-1")
    stub.answer("tok-1", HTML_404, EMPTY_404, HTML_404)
    for _ in range(3):
        assert (await push(daemon))["DEV"]["outcome"] == "failed"
    assert (await daemon.client.get("/readyz")).status_code == 503
    assert (await push(daemon))["DEV"]["outcome"] == "sent"
    assert (await daemon.client.get("/readyz")).status_code == 200


async def test_a_failure_that_is_not_a_config_error_does_not_count(start_daemon, stub):
    daemon = await start_daemon(config(stub.url))
    await report(daemon, "DEV", username="alice", token=None, msgs="tok-1")
    stub.answer("tok-1", *[Answer(400, {"code": 400, "response": "no AppId"})] * 3)
    for _ in range(3):
        assert (await push(daemon))["DEV"]["outcome"] == "failed"
    assert (await daemon.client.get("/readyz")).status_code == 200
    assert await metric(daemon, "pnbridge_push_config_errors_total") == 0


# -- the push API's device lookup: a read-only connection, inside the verb's deadline -------

CALL = "NotifyIncomingCall"


async def call_push(daemon: Daemon) -> tuple[float, Any]:
    """Push a call to alice; the seconds the answer took, and the answer."""
    started = trio.current_time()
    answer = await daemon.client.post(
        "/api/v1/push", json={"username": "alice", "verb": CALL, "id": "call-1"},
        headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    return trio.current_time() - started, answer


@contextlib.contextmanager
def holding(db: str, *statements: str) -> Iterator[None]:
    """Another connection runs ``statements`` and keeps its locks while the block runs."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def locked_config(url: str) -> dict[str, Any]:
    """A call deadline of 1 s, and a busy_timeout far longer (the writer waits 8 s for a lock)."""
    return config(url, storage={"busy_timeout": 8.0}) | {
        "api": {"keys": [KEY], "deadlines": {CALL: 1.0}}}


async def test_a_push_is_sent_within_its_deadline_while_another_process_writes(
        start_daemon, stub):
    daemon = await start_daemon(locked_config(stub.url))
    await report(daemon, "DEV", username="alice", token=None, msgs="tok-1")
    with holding(daemon.db_path, "BEGIN EXCLUSIVE", "DELETE FROM events"):
        took, answer = await call_push(daemon)
    assert answer.status_code == 200, answer.text
    assert answer.json()["devices"][0]["outcome"] == "sent"
    # Wall clock: SQLite waits for the lock in a worker thread, in real time.
    assert took < 1.0 + 0.5, took  # on main: after the 8 s busy_timeout


@contextlib.contextmanager
def wal_locks_held(db: str) -> Iterator[None]:
    """Another process holds every WAL lock of ``db`` (its -shm bytes 120-127): a reader
    there retries for about 10 s whatever its busy_timeout, then fails."""
    holder = subprocess.Popen([sys.executable, "-c", """if True:
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX, 8, 120)
        print("locked", flush=True)
        sys.stdin.read()
        """, f"{db}-shm"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)


async def test_a_push_whose_devices_cannot_be_read_is_503_at_its_deadline(start_daemon, stub):
    daemon = await start_daemon(locked_config(stub.url))
    await report(daemon, "DEV", username="alice", token=None, msgs="tok-1")
    with wal_locks_held(daemon.db_path):
        took, answer = await call_push(daemon)
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        assert answer.json() == {"error": "storage unavailable, try again later"}
        assert 1.0 <= took < 1.0 + 0.5, took  # on main: 8 s, or 10 s
        assert stub.requests == []
    took, answer = await call_push(daemon)  # the locks are gone: the next one goes out
    assert answer.json()["devices"][0]["outcome"] == "sent"
    assert took < 1.0, took


# -- answers of any size: at most 64 KiB of one is read -----------------------------------

BIG = 300 * 1024 * 1024


def big(status: int, content_type: str = "application/json") -> Answer:
    """An answer with a 300 MB body, generated as it is sent (``.sent`` counts it)."""
    return Answer(status, content_type=content_type, endless=BIG)


async def test_300_mb_answers_are_not_read_and_count_by_their_status(spawn, tmp_path, stub):
    """pnmediator and the webhook receiver answer 300 MB bodies: the spawned daemon's memory
    stays put, and each answer counts by its status alone."""
    answers = {"tok-sent": big(200), "tok-html": big(404, "text/html"), "tok-busy": big(503)}
    for token, answer in answers.items():
        stub.answer(token, answer)
    hooks = [big(503), big(200), big(200), big(200)]
    stub.answer("", *hooks)  # the webhook's requests carry no DeviceToken
    daemon = spawn({
        "api": {"keys": [KEY], "deadlines": {MSG: 5.0}},
        "plugins": {"enabled": ["pnmediator", "webhook"],
                    "pnmediator": {"url": stub.url, "timeout": 2.0},
                    "webhook": {"urls": [stub.url], "secret": "s3cret",
                                "delivery": {"backoff": 0.05, "max_backoff": 0.2}}},
    })
    url = daemon.url()
    pid = daemon.popen.pid
    base = most = rss_kib(pid)

    async def sample() -> None:
        nonlocal most
        while True:
            most = max(most, rss_kib(pid))
            await trio.sleep(0.01)

    async with httpx.AsyncClient(base_url=url, timeout=30) as client, \
            trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        for n, token in enumerate(answers):
            answer = await client.get("/token", params={
                "username": f"user{n}", "selector": f"DEV{n}", "pushTokenOther": token,
                "pushappid_other": "com.app"})
            assert answer.status_code == 200
        outcomes = {}
        for n, token in enumerate(answers):
            answer = await client.post(
                "/api/v1/push", json={"username": f"user{n}", "verb": MSG},
                headers={"Authorization": f"Bearer {KEY}"})
            assert answer.status_code == 200, answer.text
            outcomes[token] = answer.json()["devices"][0]
        for _ in range(500):
            if sum(1 for r in stub.requests if "DeviceToken" not in r) == len(hooks):
                break
            await trio.sleep(0.02)
        await trio.sleep(0.3)  # the last delivery recorded as such
        metrics = (await client.get("/metrics")).text
        nursery.cancel_scope.cancel()
    assert outcomes["tok-sent"]["outcome"] == "sent"
    assert outcomes["tok-html"]["outcome"] == "failed"
    assert "likely a configuration error" in outcomes["tok-html"]["reason"]
    assert (outcomes["tok-busy"]["outcome"], outcomes["tok-busy"]["attempts"]) == ("sent", 2)
    assert 'pnbridge_deliveries_total{outcome="delivered",plugin="webhook"} 3.0' in metrics
    assert 'pnbridge_deliveries_total{outcome="retried",plugin="webhook"} 1.0' in metrics
    assert "pnbridge_push_config_errors_total 1.0" in metrics
    for answer in [*answers.values(), *hooks]:
        assert answer.sent < BIG // 10, answer.sent  # given up on early: not read
    assert most - base < 64 * 1024, (base, most)  # KiB; reading one whole took 750 MB
    assert daemon.popen.poll() is None and "Traceback" not in daemon.log, daemon.log
