"""A plugin's failure stays with that plugin: the auditlog plugin writing to a FIFO or to a
full device, and a plugin raising in every hook (BaseException subclasses, exception groups,
MemoryError, a RecursionError, an exception whose repr raises), against ``pnbridge serve``:
the daemon stays up, reports are answered 200, each failure is logged, counted and (for
events) parked, visible in ``pnbridge events --failed``."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import httpx
import pytest
from conftest import cli, pnbridge
from plugintools import install_plugins, wait_until_sync
from reports import report

KEY = "containment-key-00000000"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: |  ")

def toml(tmp_path: Path, plugins: str) -> str:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    return f'''
[server]
listen = ["127.0.0.1:0"]
[storage]
path = "{tmp_path / "pnbridge.db"}"
max_devices_per_user = 0
[reporter]
client_rate = 0
username_rate = 0
[plugins]
paths = ["{tmp_path / "plugins"}"]
{plugins}
'''


def failed(config: Path) -> list[str]:
    """The rows of ``pnbridge events --failed``."""
    result = cli("events", "--failed", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[1:]


def assert_log_lines(log: str) -> None:
    stray = [line for line in log.splitlines() if not LOG_LINE.match(line)]
    assert not stray, "\n".join(stray)


def test_a_plugin_raising_in_every_hook_stops_nothing(spawn, tmp_path):
    install_plugins(tmp_path / "plugins", "containment/boom")
    daemon = spawn(toml(tmp_path, f'''enabled = ["boom"]
[api]
keys = ["{KEY}"]
[plugins.boom.delivery]
max_attempts = 2
backoff = 0.01
max_backoff = 0.02
'''))
    url = daemon.url()
    config = tmp_path / "pnbridge.toml"
    with httpx.Client(base_url=url) as client:
        for selector in ("THREAD", "RECURSE", "MEMORY", "REPR"):
            report(client, selector, token=f"tok-{selector}", pushappid="app")
        report(client, "THREAD", path="/removeToken/", token="tok-THREAD", pushappid="app")
        daemon.wait_for("plugin boom: task failed: background task")
        daemon.wait_for("plugin boom: task failed: Input/output error")
        rows = wait_until_sync(lambda: len(rows := failed(config)) == 5 and rows)
        answer = client.post("/api/v1/push", json={"username": "u", "verb": "NotifyTextMessage"},
                             headers={"Authorization": f"Bearer {KEY}"})
        assert answer.status_code == 200
        assert {d["reason"] for d in answer.json()["devices"]} == {"transport error: push"}
        daemon.popen.send_signal(signal.SIGHUP)
        daemon.wait_for("plugin boom: reload failed: reload")
        daemon.wait_for("config reloaded")
        report(client, "AFTER", token="tok-AFTER", pushappid="app")
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
    assert daemon.popen.poll() is None
    errors = {line.split()[-1] for line in metrics.splitlines()
              if line.startswith("pnbridge_plugin_errors_total{")}
    assert 'pnbridge_plugin_errors_total{plugin="boom",where="task"} 2.0' in metrics, errors
    assert 'pnbridge_plugin_errors_total{plugin="boom",where="reload"} 1.0' in metrics
    problems = "\n".join(rows)
    for shown in ("in a thread", "RecursionError: maximum recursion depth", "MemoryError",
                  "BadRepr", "in a group"):
        assert shown in problems, problems
    assert daemon.stop() == 0  # the shutdown hook raised too
    log = daemon.log
    assert "plugin boom: shutdown failed: shutdown" in log
    assert "background task\\nFORGED line" in log
    assert_log_lines(log)


def drain(fifo: Path, into: list[bytes], stop: threading.Event) -> None:
    """A reader of the FIFO, as a log shipper: it opens it again after each writer closed
    it (a reopen on SIGHUP), until ``stop``."""
    while not stop.is_set():
        with open(fifo, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                into.append(chunk)


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_the_audit_log_on_a_fifo(spawn, tmp_path, fsync):
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(fifo, got, stop), daemon=True)
    reader.start()
    daemon = spawn(toml(tmp_path, f'''enabled = ["auditlog"]
[plugins.auditlog]
path = "{fifo}"
fsync = "{fsync}"
fsync_interval = 0.05
'''))
    with httpx.Client(base_url=daemon.url()) as client:
        for i in range(20):
            report(client, f"S{i}", token=f"tok-S{i}", pushappid="app")
        wait_until_sync(lambda: b"".join(got).count(b"\n") == 20)
        daemon.popen.send_signal(signal.SIGHUP)  # reopens the file: fsync on close
        daemon.wait_for("config reloaded")
        for i in range(20, 25):
            report(client, f"S{i}", token=f"tok-S{i}", pushappid="app")
        wait_until_sync(lambda: b"".join(got).count(b"\n") == 25)
        assert client.get("/readyz").status_code == 200
    assert daemon.popen.poll() is None
    assert failed(tmp_path / "pnbridge.toml") == []
    stop.set()
    assert daemon.stop() == 0
    assert " ERROR " not in daemon.log and "Traceback" not in daemon.log, daemon.log


def test_the_audit_log_on_a_full_device(spawn, tmp_path):
    """Every write fails (ENOSPC, as a full or failing disk): each event is retried, then
    parked; the daemon serves on."""
    daemon = spawn(toml(tmp_path, '''enabled = ["auditlog"]
[plugins.auditlog]
path = "/dev/full"
fsync = "interval"
fsync_interval = 0.05
[plugins.auditlog.delivery]
max_attempts = 2
backoff = 0.01
max_backoff = 0.02
'''))
    with httpx.Client(base_url=daemon.url()) as client:
        for i in range(3):
            report(client, f"S{i}", token=f"tok-S{i}", pushappid="app")
        rows = wait_until_sync(lambda: len(rows := failed(tmp_path / "pnbridge.toml")) == 3
                               and rows)
        report(client, "S3", token="tok-S3", pushappid="app")
    assert all("No space left on device" in row for row in rows), rows
    assert daemon.popen.poll() is None
    assert daemon.stop() == 0


@pytest.mark.parametrize("code", ["generator_exit", "base_exception", "recursion",
                                  "settings_class"])
def test_a_plugin_failing_to_load_is_named(tmp_path, code):
    install_plugins(tmp_path / "plugins", broken=f"containment/broken_{code}")
    config = tmp_path / "pnbridge.toml"
    config.write_text(toml(tmp_path, 'enabled = ["broken"]'))
    # A process of its own: the plugin lowers the recursion limit of whoever imports it.
    result = pnbridge("check-config", "--config", str(config))
    assert result.returncode == 1
    assert "plugin broken" in result.stderr or "plugins.broken" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_an_optional_plugin_failing_at_startup_is_left_out_and_counted(spawn, tmp_path):
    install_plugins(tmp_path / "plugins", "containment/start_boom")
    daemon = spawn(toml(tmp_path, 'enabled = ["start_boom"]\noptional = ["start_boom"]'))
    with httpx.Client(base_url=daemon.url()) as client:
        report(client, "S1", token="tok-S1", pushappid="app")
        metrics = client.get("/metrics").text
    assert 'pnbridge_plugin_errors_total{plugin="start_boom",where="startup"} 1.0' in metrics
    assert daemon.stop() == 0
    assert "plugin start_boom: startup failed: no CRM; running without it" in daemon.log


def test_an_auth_hook_raising_a_base_exception_is_a_503(spawn, tmp_path):
    install_plugins(tmp_path / "plugins", "containment/pbxsync", "containment/pbxasync")
    daemon = spawn(toml(tmp_path, 'enabled = ["pbxsync", "pbxasync"]')
                   + '[auth]\nreporter = "hook"\n')
    with httpx.Client(base_url=daemon.url()) as client:
        for user in ("thread", "group", "thread"):
            answer = client.get("/token/", params={"username": user, "selector": "S",
                                                   "pushToken": "t", "password": "pw"})
            assert answer.status_code == 503, answer.text
        answer = client.get("/token/", params={"username": "ok", "selector": "S",
                                               "pushToken": "t", "password": "pw"})
        assert answer.status_code == 200
    assert daemon.stop() == 0
    assert "plugin pbxsync: authenticate_report failed: Boom" in daemon.log
    assert "plugin pbxasync: authenticate_report failed: BaseExceptionGroup" in daemon.log
