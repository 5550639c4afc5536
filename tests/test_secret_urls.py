"""URLs with credentials in them (``http://user:password@crm/hook``): the password is in no
log line, no row of the database and no output of the CLI; the URL is shown as
``http://***@crm/hook``."""

from __future__ import annotations

import socket

import httpx
from configs import config_toml
from conftest import cli
from plugintools import wait_until_sync
from webhook_receiver import SECRET, Receiver

PASSWORD = "hook-Passw0rd-zq81"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tables(urls: list[str]) -> dict:
    return {"server": {"log_level": "debug"}, "plugins": {
        "enabled": ["webhook"],
        "webhook": {"urls": urls, "secret": SECRET,
                    "delivery": {"max_attempts": 2, "backoff": 0.01, "max_backoff": 0.05}}}}


def test_webhook_credentials_are_nowhere(spawn, tmp_path):
    # One receiver refuses (400: parked at once), one fails (500: retried, then parked),
    # one does not listen (connection refused); each URL carries a user and the password.
    refusing = Receiver(answer=lambda payload: 400)
    failing = Receiver(answer=lambda payload: 500)
    closed = f"http://127.0.0.1:{free_port()}/hook"
    urls = [url.replace("http://", f"http://hookuser:{PASSWORD}@")
            for url in (refusing.url, failing.url, closed)]
    try:
        daemon = spawn(tables(urls))
        with httpx.Client(base_url=daemon.url()) as client:
            for selector in ("S1", "S2"):
                answer = client.get("/token/", params={
                    "username": "u", "selector": selector, "pushToken": "tok", "pushappid": "a"})
                assert answer.status_code == 200
        config = str(tmp_path / "pnbridge.toml")
        failed = wait_until_sync(lambda: (r := cli("events", "--failed", "--config", config))
                                 and len(r.stdout.splitlines()) == 3 and r)
        assert failing.requests and refusing.requests  # it did reach them, with the URL
        assert daemon.stop() == 0
    finally:
        refusing.close()
        failing.close()
    as_json = cli("events", "--failed", "--json", "--config", config)
    shown = {
        "daemon log": daemon.log,
        "events --failed": failed.stdout + failed.stderr,
        "events --failed --json": as_json.stdout + as_json.stderr,
        **{f.name: f.read_bytes().decode("latin-1") for f in tmp_path.glob("pnbridge.db*")},
    }
    for what, text in shown.items():
        assert PASSWORD not in text and "hookuser" not in text, (what, text)
    assert f"http://***@127.0.0.1:{closed.split(':')[2]}" in failed.stdout
    assert "http://***@" in daemon.log


def test_check_config_does_not_print_them(tmp_path):
    config = tmp_path / "pnbridge.toml"
    for urls in ([f"ftp://hookuser:{PASSWORD}@crm/hook"], [f"http://hookuser:{PASSWORD}@"],
                 [f"http://hookuser:{PASSWORD}@crm:x/hook"]):
        config.write_text(config_toml(tmp_path, tables(urls)))
        result = cli("check-config", "--config", str(config))
        assert result.returncode == 1
        assert "plugins.webhook.urls" in result.stderr
        assert PASSWORD not in result.stdout + result.stderr, result.stderr
