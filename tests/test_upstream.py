"""What the push upstream answers, tried from a real HTTP server (tests/pnmediator_stub.py)
against a real daemon: only pnmediator's own JSON code 404 clears a token; a 404 from a wrong
url or a proxy is a configuration error that clears nothing and shows in /readyz."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from conftest import Daemon
from pnmediator_stub import (
    BODY_404,
    CODE_200_404,
    CODE_404_HTTP_500,
    CODE_404_STRING,
    EMPTY_404,
    HTML_404,
    HTTP_404,
    OTHER_JSON_404,
    Answer,
    Stub,
)

KEY = "test-key-0123456789abcdef"
MSG = "NotifyTextMessage"


@pytest.fixture
async def stub(nursery: trio.Nursery) -> Stub:
    return await nursery.start(Stub().serve)


def config(url: str, **more: Any) -> dict[str, Any]:
    return {
        "api": {"keys": [KEY], "deadlines": {MSG: 2.0}},
        "plugins": {"enabled": ["pnmediator"], "pnmediator": {"url": url, "timeout": 1.0}},
        **more,
    }


async def report(daemon: Daemon, selector: str, token: str, username: str = "alice") -> None:
    answer = await daemon.client.get("/token", params={
        "username": username, "selector": selector, "pushTokenOther": token,
        "pushappid_other": "com.app"})
    assert answer.status_code == 200


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
    await report(daemon, "DEV", "tok-1")
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
    await report(daemon, "DEV", "tok-1")
    await report(daemon, "OTHER", "tok-2")
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
        await report(daemon, f"DEV{n}", f"tok-{n}", username=f"user{n}")
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
    await report(daemon, "DEV", "tok-1")
    stub.answer("tok-1", HTML_404, EMPTY_404, HTML_404)
    for _ in range(3):
        assert (await push(daemon))["DEV"]["outcome"] == "failed"
    assert (await daemon.client.get("/readyz")).status_code == 503
    assert (await push(daemon))["DEV"]["outcome"] == "sent"
    assert (await daemon.client.get("/readyz")).status_code == 200


async def test_a_failure_that_is_not_a_config_error_does_not_count(start_daemon, stub):
    daemon = await start_daemon(config(stub.url))
    await report(daemon, "DEV", "tok-1")
    stub.answer("tok-1", *[Answer(400, {"code": 400, "response": "no AppId"})] * 3)
    for _ in range(3):
        assert (await push(daemon))["DEV"]["outcome"] == "failed"
    assert (await daemon.client.get("/readyz")).status_code == 200
    assert await metric(daemon, "pnbridge_push_config_errors_total") == 0
