"""The console in a ``pnbridge serve`` child: the operators file read again on SIGHUP, and
sessions that end at a restart unless ``[console] secret`` is set; and the password
checks' bound in the daemon in the test's loop."""

from __future__ import annotations

import signal

import httpx
import pytest
import trio
from configs import config_toml
from conftest import cli
from consoletools import KEY, admin_url, console_config, csrf_of, login, login_sync

SECRET = "a-console-secret-of-40-characters-000000"


def test_the_operators_file_is_read_again_on_sighup(spawn, tmp_path):
    config = console_config(tmp_path)
    process = spawn(config)
    process.url()
    admin = f"http://{config['server']['admin_listen'][0]}"
    added = cli("users", "add", "--console", "bob", "--password-stdin", "--config",
                str(tmp_path / "pnbridge.toml"), input="bob's password\n")
    assert added.returncode == 0, added.stderr
    with httpx.Client(base_url=admin) as client:
        assert login_sync(client, username="bob", password="bob's password").status_code == 401
        process.popen.send_signal(signal.SIGHUP)
        process.wait_for("config reloaded")
        assert login_sync(client, username="bob", password="bob's password").status_code == 303
        assert client.get("/console/").status_code == 200
    assert process.stop() == 0


def test_a_removed_operator_loses_the_session_on_sighup(spawn, tmp_path):
    """``users remove --console`` + SIGHUP: the operator's open session is refused at once
    (pages and actions), not at the end of its lifetime."""
    config = console_config(tmp_path)
    process = spawn(config)
    process.url()
    with httpx.Client(base_url=f"http://{config['server']['admin_listen'][0]}") as client:
        assert login_sync(client).status_code == 303
        token = csrf_of(client.get("/console/").text)
        removed = cli("users", "remove", "--console", "ops", "--config",
                      str(tmp_path / "pnbridge.toml"))
        assert removed.returncode == 0, removed.stderr
        process.popen.send_signal(signal.SIGHUP)
        process.wait_for("config reloaded")
        _assert_refused(client, token)
    assert process.stop() == 0


def test_a_removed_api_key_loses_the_session_on_sighup(spawn, tmp_path):
    """A session logged in with a push API key ends when ``[api] keys`` no longer holds
    the key (SIGHUP), though another key is added; one of a key still there goes on."""
    config = console_config(tmp_path, api={"keys": [KEY, "m" * 24]})
    process = spawn(config)
    process.url()
    admin = f"http://{config['server']['admin_listen'][0]}"
    with httpx.Client(base_url=admin) as gone, httpx.Client(base_url=admin) as kept:
        assert login_sync(gone, key=KEY).status_code == 303
        assert login_sync(kept, key="m" * 24).status_code == 303
        token = csrf_of(gone.get("/console/").text)
        config["api"]["keys"] = ["m" * 24, "n" * 24]
        (tmp_path / "pnbridge.toml").write_text(config_toml(tmp_path, config))
        process.popen.send_signal(signal.SIGHUP)
        process.wait_for("config reloaded")
        _assert_refused(gone, token)
        assert kept.get("/console/").status_code == 200
    assert process.stop() == 0


def _assert_refused(client: httpx.Client, token: str) -> None:
    """The session's pages and actions answer 303 to the login page."""
    for answer in [client.get("/console/"), client.get("/console/user?username=x"),
                   client.post("/console/devices/remove", data={"csrf": token, "selector": "s"}),
                   client.post("/console/devices/test-push",
                               data={"csrf": token, "selector": "s", "message": "m"})]:
        assert answer.status_code == 303, answer.request.url
        assert answer.headers["location"].endswith("/console/login")


@pytest.mark.parametrize("secret", ["", SECRET])
def test_sessions_outlive_a_restart_only_with_a_secret(spawn, tmp_path, secret):
    config = console_config(tmp_path, console={"secret": secret})
    admin = f"http://{config['server']['admin_listen'][0]}"
    process = spawn(config)
    process.url()
    with httpx.Client(base_url=admin) as client:
        assert login_sync(client).status_code == 303
        cookies = dict(client.cookies)
    assert process.stop() == 0
    process = spawn(config)
    process.url()
    with httpx.Client(base_url=admin, cookies=cookies) as client:
        answer = client.get("/console/")
        assert answer.status_code == (200 if secret else 303)
    assert not secret or secret not in process.log
    assert process.stop() == 0


async def test_password_checks_are_bounded(start_daemon, tmp_path):
    """One scrypt check at once and none waiting ([auth] basic_checks = 1, basic_queue =
    0): logins beyond it are answered 503 at once, never queued without bound."""
    daemon = await start_daemon(console_config(
        tmp_path, auth={"basic_checks": 1, "basic_queue": 0},
        console={"login_burst": 100}))
    answers: list[int] = []

    async def one() -> None:
        async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
            answers.append((await login(client)).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(one)
    assert 303 in answers and 503 in answers, answers
    assert set(answers) == {303, 503}
