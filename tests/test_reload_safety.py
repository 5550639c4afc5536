"""A reload never kills the daemon and does what it says: every way a config file can be
broken on SIGHUP keeps the running config (logged, in the systemd STATUS), and
``check-config`` and ``serve`` name such a file in one line; a plugin that only takes events
restarts with its new settings (its cursor kept), the keys that only apply at the next start
are named, and ``pnbridge plugins``/``events``/``check-config`` show what runs."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Process, cli, pnbridge
from notify import NotifySocket
from plugintools import wait_until_sync
from reports import report
from webhook_receiver import SECRET, TOKEN, Receiver

OLD_SECRET = "reload-old-secret-0123"
NEW_SECRET = "reload-new-secret-4567"
SERVICE_USER = "pnbreload"

GOOD = """\
[server]
listen = ["127.0.0.1:0"]
grace_period = 5
[storage]
path = "{db}"
[auth]
reporter = "secret"
secret = "{secret}"
secret_param = ""
"""

# Each way a config can be broken: (name, how to break it, what the log and check-config say).
BREAKS: list[tuple[str, Callable[[Path, str], None], str]] = [
    ("not UTF-8", lambda p, good: p.write_bytes(good.encode() + b"# caf\xe9\n"), "not UTF-8"),
    ("invalid TOML", lambda p, good: p.write_text(good + "[server\n"), "not valid TOML"),
    ("wrong type", lambda p, good: p.write_text(
        good.replace("grace_period = 5", 'grace_period = "5"')), r"server\.grace_period"),
    ("unknown key", lambda p, good: p.write_text(good + "bogus = 1\n"), r"auth\.bogus"),
    ("unreadable users file", lambda p, good: p.write_text(good.replace(
        'reporter = "secret"', 'reporter = "digest"\nusers_file = "/nonexistent/users"')),
     r"auth\.users_file: /nonexistent/users: cannot read"),
    ("bad plugin setting", lambda p, good: p.write_text(
        good + '[plugins]\nenabled = ["webhook"]\n[plugins.webhook]\nurls = ["ftp://x"]\n'
        f'secret = "{SECRET}"\n'), r"plugins\.webhook\.urls"),
    ("a directory", lambda p, good: (p.unlink(), p.mkdir()), r"pnbridge\.toml: cannot read: Is a directory"),
    ("deleted", lambda p, good: p.unlink(), r"pnbridge\.toml: cannot read: No such file"),
]


def _restore(path: Path, text: str) -> None:
    if path.is_dir():
        path.rmdir()
    path.write_text(text)


def _status(url: str, secret: str, selector: str = "S1") -> int:
    with httpx.Client(base_url=url, headers={"X-Pnbridge-Secret": secret}, timeout=10) as client:
        return report(client, selector, username="1001", token=TOKEN, pushappid="app.id",
                      status=None).status_code


def _webhook(url: str, max_attempts: int = 10) -> str:
    return (f'[plugins]\nenabled = ["webhook"]\n[plugins.webhook]\nurls = ["{url}"]\n'
            f'secret = "{SECRET}"\n[plugins.webhook.delivery]\nbackoff = 0.01\n'
            f"max_backoff = 0.05\nmax_attempts = {max_attempts}\n")


def test_every_broken_config_on_sighup_keeps_the_running_one(spawn, notify, tmp_path):
    good = GOOD.format(db=tmp_path / "pnbridge.db", secret=OLD_SECRET)
    daemon = spawn(good, env={"NOTIFY_SOCKET": notify.address})
    path = tmp_path / "pnbridge.toml"
    notify.wait_for("READY")
    url = daemon.url()
    assert _status(url, OLD_SECRET) == 200
    for name, damage, problem in BREAKS:
        damage(path, good)
        daemon.popen.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        status = notify.wait_for("READY")["STATUS"]
        assert status.startswith("reload failed, running the old config: "), (name, status)
        line = daemon.wait_for(f"ERROR pnbridge.server: reload failed, keeping the running "
                               f"config: .*{problem}").group(0)
        assert "Traceback" not in daemon.log, name
        assert daemon.popen.poll() is None, f"{name}: the daemon died"
        assert _status(url, OLD_SECRET) == 200, name  # the old config still serves
        assert _status(url, NEW_SECRET) == 401, name
        if name in ("not UTF-8", "invalid TOML", "a directory", "deleted"):
            assert str(path) in line and str(path) in status, name
        _restore(path, good)

    path.write_text(GOOD.format(db=tmp_path / "pnbridge.db", secret=NEW_SECRET))
    daemon.popen.send_signal(signal.SIGHUP)
    assert notify.wait_for("READY")["STATUS"] == "config reloaded"
    assert _status(url, NEW_SECRET) == 200
    assert _status(url, OLD_SECRET) == 401
    assert daemon.stop() == 0


@pytest.mark.parametrize(("name", "damage", "problem"), BREAKS, ids=[b[0] for b in BREAKS])
def test_check_config_names_a_broken_file_in_one_line(tmp_path, name, damage, problem):
    path = tmp_path / "pnbridge.toml"
    good = GOOD.format(db=tmp_path / "pnbridge.db", secret=OLD_SECRET)
    path.write_text(good)
    damage(path, good)
    for command, run in (("check-config", cli), ("serve", pnbridge)):  # serve: its own process
        result = run(command, "--config", str(path))
        assert result.returncode == 1, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert lines[0].startswith("pnbridge: error: ")
        assert re.search(problem, lines[0]), (command, lines[0])


def _as_user(user: pwd.struct_passwd) -> str:
    """Code that runs ``pnbridge ARGS`` as ``user``: the interpreter lives under root's 0700
    home, so the child loads pnbridge as root, then drops to the user."""
    return ("import os, sys; from pnbridge.cli import main; import pnbridge.server, encodings.idna; "
            f"os.setgroups([]); os.setgid({user.pw_gid}); os.setuid({user.pw_uid}); "
            "sys.argv = ['pnbridge', *sys.argv[1:]]; main()")


@pytest.fixture
def service_user() -> str:
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("needs root to create a service user and run the daemon as it")
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", SERVICE_USER], check=True)
    return SERVICE_USER


def test_a_config_the_service_user_cannot_read_keeps_the_running_one(service_user):
    home = Path(tempfile.mkdtemp(prefix="pnbreload-"))
    notify = NotifySocket(str(home / "notify.sock"))  # where the service user reaches it
    try:
        home.chmod(0o755)
        entry = pwd.getpwnam(service_user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        path = home / "pnbridge.toml"
        good = GOOD.format(db=home / "pnbridge.db", secret=OLD_SECRET)
        path.write_text(good)
        os.chown(path, 0, 0)
        path.chmod(0o644)
        os.chmod(notify.address, 0o777)
        daemon = Process(subprocess.Popen(
            [sys.executable, "-c", _as_user(entry), "serve", "--config", str(path)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=home,
            env={**os.environ, "NOTIFY_SOCKET": notify.address},
        ))
        try:
            notify.wait_for("READY")
            url = daemon.url()
            path.chmod(0o600)  # root's alone now
            daemon.popen.send_signal(signal.SIGHUP)
            status = notify.wait_for("READY")["STATUS"]
            assert status == (f"reload failed, running the old config: {path}: cannot read: "
                              "Permission denied")
            daemon.wait_for(f"reload failed, keeping the running config: {path}: cannot read")
            assert _status(url, OLD_SECRET) == 200, daemon.log
            result = subprocess.run(
                [sys.executable, "-c", _as_user(entry), "check-config", "--config", str(path)],
                capture_output=True, text=True, timeout=60, cwd=home)
            assert result.returncode == 1
            assert result.stderr == f"pnbridge: error: {path}: cannot read: Permission denied\n"
            path.chmod(0o644)
            daemon.popen.send_signal(signal.SIGHUP)
            assert notify.wait_for("READY")["STATUS"] == "config reloaded"
            assert daemon.stop() == 0
        finally:
            if daemon.popen.poll() is None:
                daemon.popen.kill()
                daemon.popen.wait()
    finally:
        notify.close()
        shutil.rmtree(home)


def _ids(receiver: Receiver) -> list[str]:
    with receiver.lock:
        return [payload["selector"] for payload in receiver.accepted.values()]


def test_changed_plugin_settings_apply_on_reload(spawn, notify, receivers, tmp_path):
    first, second = receivers(), receivers(secret=NEW_SECRET)
    path = tmp_path / "pnbridge.toml"
    base = GOOD.format(db=tmp_path / "pnbridge.db", secret=OLD_SECRET)
    daemon = spawn(base + _webhook(first.url), env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    url = daemon.url()
    assert _status(url, OLD_SECRET, "S1") == 200
    wait_until_sync(lambda: _ids(first) == ["S1"])
    shown = cli("plugins", "--config", str(path))
    assert f"the running daemon (pid {daemon.popen.pid}) delivers to plugin(s): webhook" \
        in shown.stderr
    assert "differs" not in shown.stderr
    assert next(line.split()[:3] for line in shown.stdout.splitlines()
                if line.startswith("webhook")) == ["webhook", "yes", "yes"]

    # Another URL and another secret: the next event goes there, signed with the new secret.
    path.write_text(base + _webhook(second.url).replace(SECRET, NEW_SECRET))
    daemon.popen.send_signal(signal.SIGHUP)
    assert notify.wait_for("READY")["STATUS"] == (
        "config reloaded; plugin webhook restarted with its new settings")
    daemon.wait_for("INFO pnbridge.server: plugin webhook: restarted with its new settings")
    assert _status(url, OLD_SECRET, "S2") == 200
    wait_until_sync(lambda: _ids(second) == ["S2"])  # its cursor kept: S1 not again
    assert _ids(first) == ["S1"] and first.forged == second.forged == 0
    for command in ("plugins", "events", "check-config"):
        result = cli(command, "--config", str(path))
        assert result.returncode == 0, (command, result.stderr)
        assert "differs" not in result.stderr, command
    # The daemon saves the webhook's place just after the receiver took the event.
    wait_until_sync(lambda: [e["plugins"] for e in json.loads(cli(
        "events", "--json", "--config", str(path)).stdout)] == [{"webhook": "delivered"}] * 2)
    assert daemon.stop() == 0
    assert "running daemon" not in cli("plugins", "--config", str(path)).stderr


def _auditlog(path: Path) -> str:
    return f'[plugins]\nenabled = ["auditlog"]\n[plugins.auditlog]\npath = "{path}"\n'


def test_a_plugin_whose_new_settings_fail_keeps_its_old_ones(spawn, notify, tmp_path):
    path = tmp_path / "pnbridge.toml"
    audit, moved = tmp_path / "audit.jsonl", tmp_path / "other.jsonl"
    missing = tmp_path / "missing" / "audit.jsonl"
    base = GOOD.format(db=tmp_path / "pnbridge.db", secret=OLD_SECRET)
    daemon = spawn(base + _auditlog(audit), env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    url = daemon.url()
    path.write_text(base + _auditlog(missing))
    daemon.popen.send_signal(signal.SIGHUP)
    status = notify.wait_for("READY")["STATUS"]
    assert status.startswith("config reloaded; plugin auditlog kept its old settings: "
                             "startup failed: No such file or directory: "), status
    daemon.wait_for("ERROR pnbridge.server: plugin auditlog: startup with its new settings "
                    "failed, running its old settings: No such file or directory: ")
    assert _status(url, OLD_SECRET, "S1") == 200
    wait_until_sync(lambda: audit.exists() and '"S1"' in audit.read_text())
    shown = cli("plugins", "--config", str(path))
    assert ("the config file differs from what the daemon runs, applied only at its next "
            "start: plugins.auditlog.path") in shown.stderr

    path.write_text(base + _auditlog(moved))
    daemon.popen.send_signal(signal.SIGHUP)
    assert notify.wait_for("READY")["STATUS"] == (
        "config reloaded; plugin auditlog restarted with its new settings")
    assert _status(url, OLD_SECRET, "S2") == 200
    wait_until_sync(lambda: moved.exists() and '"S2"' in moved.read_text())
    assert '"S2"' not in audit.read_text()
    assert "differs" not in cli("plugins", "--config", str(path)).stderr
    assert daemon.stop() == 0


def test_settings_of_a_plugin_requests_wait_for_are_named(spawn, notify, tmp_path):
    path = tmp_path / "pnbridge.toml"
    base = GOOD.format(db=tmp_path / "pnbridge.db", secret=OLD_SECRET)
    plugin = '[plugins]\nenabled = ["pnmediator"]\n[plugins.pnmediator]\ntimeout = 3\n'
    daemon = spawn(base + plugin, env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    path.write_text(base + plugin.replace("timeout = 3", "timeout = 5"))
    daemon.popen.send_signal(signal.SIGHUP)
    assert notify.wait_for("READY")["STATUS"] == (
        "config reloaded; changed but only at the next start: plugins.pnmediator.timeout")
    daemon.wait_for("WARNING pnbridge.server: changed but only at the next start: "
                    "plugins.pnmediator.timeout$")
    for command in ("plugins", "events", "check-config"):
        result = cli(command, "--config", str(path))
        assert result.returncode == 0, (command, result.stderr)
        assert ("the config file differs from what the daemon runs, applied only at its next "
                "start: plugins.pnmediator.timeout") in result.stderr, command
    assert daemon.stop() == 0


def test_enabling_a_plugin_is_named_and_plugins_shows_it_is_not_running(spawn, notify,
                                                                        receivers, tmp_path):
    receiver = receivers()
    path = tmp_path / "pnbridge.toml"
    base = GOOD.format(db=tmp_path / "pnbridge.db", secret=OLD_SECRET)
    daemon = spawn(base, env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    path.write_text(base + _webhook(receiver.url))
    daemon.popen.send_signal(signal.SIGHUP)
    assert notify.wait_for("READY")["STATUS"] == (
        "config reloaded; changed but only at the next start: plugins.enabled")
    shown = cli("plugins", "--json", "--config", str(path))
    webhook = next(p for p in json.loads(shown.stdout) if p["name"] == "webhook")
    assert (webhook["enabled"], webhook["running"]) == (True, False)
    assert "delivers to plugin(s): none" in shown.stderr
    assert "applied only at its next start: plugins.enabled" in shown.stderr
    assert _status(daemon.url(), OLD_SECRET, "S1") == 200
    events = cli("events", "--json", "--config", str(path))
    assert [e["plugins"] for e in json.loads(events.stdout)] == [{}]  # what runs: no plugin
    assert daemon.stop() == 0


def test_delivery_limits_apply_on_reload(spawn, notify, receivers, tmp_path):
    receiver = receivers()
    path = tmp_path / "pnbridge.toml"
    base = GOOD.format(db=tmp_path / "pnbridge.db", secret=OLD_SECRET)
    daemon = spawn(base + _webhook(receiver.url, max_attempts=1000),
                   env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    path.write_text(base + _webhook(receiver.url, max_attempts=2))
    daemon.popen.send_signal(signal.SIGHUP)
    assert notify.wait_for("READY")["STATUS"] == "config reloaded"
    receiver.answer = lambda payload: 503
    assert _status(daemon.url(), OLD_SECRET, "S1") == 200
    daemon.wait_for(r"plugin webhook: parked event \S+ \(seq 1\) after 2 attempt\(s\)")
    assert daemon.stop() == 0


def test_a_restart_waits_for_the_event_in_flight(spawn, notify, receivers, tmp_path):
    first, second = receivers(), receivers()
    path = tmp_path / "pnbridge.toml"
    base = GOOD.format(db=tmp_path / "pnbridge.db", secret=OLD_SECRET)
    daemon = spawn(base + _webhook(first.url), env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    url = daemon.url()
    arrived = threading.Event()

    def slow(payload: dict) -> int:
        arrived.set()
        time.sleep(1.5)
        return 200

    first.answer = slow
    assert _status(url, OLD_SECRET, "S1") == 200
    assert arrived.wait(10)
    path.write_text(base + _webhook(second.url))
    daemon.popen.send_signal(signal.SIGHUP)  # while S1's POST waits for its answer
    assert notify.wait_for("READY")["STATUS"] == (
        "config reloaded; plugin webhook restarted with its new settings")
    assert _ids(first) == ["S1"] and len(first.requests) == 1
    assert _status(url, OLD_SECRET, "S2") == 200
    wait_until_sync(lambda: _ids(second) == ["S2"])
    assert "attempt 1 failed" not in daemon.log
    assert daemon.stop() == 0
