"""The auditlog plugin: one JSON line per event, logrotate (moved files, SIGHUP), no secrets,
and ``pnbridge audit``."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import reports
import trio
from configs import config_toml
from conftest import cli, pnbridge
from plugintools import json_lines, lines, wait_until, wait_until_sync

TOKEN = "QVBBOT" + "k" * 58 + "2J"
PASSWORD = "hunter2-very-secret"


def auditlog(path: Path, **settings) -> dict:
    return {"plugins": {"enabled": ["auditlog"], "auditlog": {"path": str(path), **settings}}}


def report_form(daemon, selector: str, token: str = TOKEN, path: str = "/token/"):
    """A POST form report with both tokens and a password."""
    return reports.report(daemon, selector, path=path, form=True, username="1001", token=token,
                          pushTokenIncomingCall=token + "-calls", pushappid="app.msgs",
                          password=PASSWORD)


def assert_no_secrets(path: Path) -> None:
    text = path.read_text()
    assert PASSWORD not in text
    assert "k" * 10 not in text  # no token, whole or in a long piece


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
async def test_every_event_is_one_json_line_without_secrets(start_daemon, tmp_path, fsync):
    log = tmp_path / "audit.jsonl"
    daemon = await start_daemon(auditlog(log, fsync=fsync, fsync_interval=0.05))
    await report_form(daemon, "S1")
    await report_form(daemon, "S1", token=TOKEN + "x")
    await report_form(daemon, "S1", path="/removeToken/")
    await wait_until(lambda: len(lines(log)) == 3)
    journal = daemon.store().events()
    records = json_lines(log)
    assert [r["id"] for r in records] == [e.id for e in journal]
    new, changed, removed = records
    assert (new["kind"], new["reason"]) == ("registered", "new")
    assert (changed["reason"], removed["kind"], removed["reason"]) == \
        ("changed", "removed", "app")
    assert new["time"] == journal[0].to_dict()["time"]
    assert (new["username"], new["selector"], new["appid_msgs"]) == ("1001", "S1", "app.msgs")
    assert new["token_msgs"] == "QVBBOT…2J" and new["token_calls"] == "QVBBOT…ls"
    assert new["source"] == {"route": "/token/", "client": "127.0.0.1"}
    assert "before" not in new and changed["before"]["token_msgs"] == "QVBBOT…2J"
    assert changed["token_msgs"] == "QVBBOT…Jx"
    assert removed["source"]["route"] == "/removeToken/"
    assert_no_secrets(log)
    assert oct(log.stat().st_mode & 0o777) == "0o640"


async def test_operator_removals_name_the_command(start_daemon, tmp_path):
    log = tmp_path / "audit.jsonl"
    daemon = await start_daemon(auditlog(log))
    await report_form(daemon, "S1")
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{daemon.db_path}"\n')
    result = await trio.to_thread.run_sync(
        lambda: cli("devices", "remove", "S1", "--config", str(config)))
    assert result.returncode == 0, result.stderr
    await wait_until(lambda: len(lines(log)) == 2, timeout=5)
    assert json_lines(log)[1]["source"] == {"command": "devices remove"}
    assert json_lines(log)[1]["reason"] == "operator"


async def test_a_file_moved_away_is_written_anew(start_daemon, tmp_path):
    """Without SIGHUP (logrotate without postrotate): the next event notices the move."""
    log = tmp_path / "audit.jsonl"
    daemon = await start_daemon(auditlog(log))
    await report_form(daemon, "S1")
    await wait_until(lambda: len(lines(log)) == 1)
    log.rename(tmp_path / "audit.jsonl.1")
    await report_form(daemon, "S2")
    await wait_until(lambda: len(lines(log)) == 1)
    assert json_lines(log)[0]["selector"] == "S2"
    assert [r["selector"] for r in json_lines(tmp_path / "audit.jsonl.1")] == ["S1"]


def test_hook_reload_reopens_the_log_after_logrotate(spawn, tmp_path):
    """Rename, then SIGHUP (what logrotate does) to a running ``pnbridge serve`` while reports
    keep coming: the daemon goes on in a new file and no line is lost or torn."""
    log = tmp_path / "audit.jsonl"
    daemon = spawn({  # one user reporting as fast as it can: no device cap (nor rate limits)
        "storage": {"max_devices_per_user": 0},
        "plugins": {"enabled": ["auditlog"], "auditlog": {"path": str(log), "fsync": "never"}},
    })
    url = daemon.url()
    stop = threading.Event()
    sent: list[str] = []

    def keep_reporting() -> None:
        with httpx.Client(base_url=url) as client:
            while not stop.is_set():
                selector = f"S{len(sent)}"
                r = client.get("/token/", params={"username": "u", "selector": selector,
                                                  "pushToken": TOKEN, "password": PASSWORD})
                assert r.status_code == 200
                sent.append(selector)

    reporter = threading.Thread(target=keep_reporting)
    reporter.start()
    try:
        wait_until_sync(lambda: len(lines(log)) >= 5)
        log.rename(tmp_path / "audit.jsonl.1")
        daemon.popen.send_signal(signal.SIGHUP)
        daemon.wait_for("config reloaded")
        wait_until_sync(lambda: len(lines(log)) >= 5)
    finally:
        stop.set()
        reporter.join()
    wait_until_sync(lambda: len(lines(tmp_path / "audit.jsonl.1")) + len(lines(log)) == len(sent))
    assert daemon.stop() == 0
    old, new = json_lines(tmp_path / "audit.jsonl.1"), json_lines(log)
    assert old and new
    assert [r["selector"] for r in old + new] == sent
    assert_no_secrets(log)
    assert_no_secrets(tmp_path / "audit.jsonl.1")


def test_hook_reload_runs_on_sighup_even_when_the_config_is_bad(spawn, tmp_path):
    log = tmp_path / "audit.jsonl"
    toml = config_toml(tmp_path, {"plugins": {"enabled": ["auditlog"],
                                              "auditlog": {"path": str(log)}}})
    daemon = spawn(toml)
    daemon.url()
    log.rename(tmp_path / "audit.jsonl.1")
    (tmp_path / "pnbridge.toml").write_text("bogus = 1\n" + toml)
    daemon.popen.send_signal(signal.SIGHUP)
    daemon.wait_for("reload failed")
    wait_until_sync(log.exists)  # reopened at once, before any event
    assert daemon.stop() == 0


def write_log(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def record(n: int, username: str, selector: str, time: str) -> dict:
    return {"time": time, "id": f"e{n}", "kind": "registered", "reason": "new",
            "username": username, "selector": selector, "token_msgs": "QVBBOT…2J",
            "token_calls": None, "source": {"route": "/token/", "client": "192.0.2.7"}}


def test_audit_command_reads_rotated_files_and_filters(tmp_path):
    log = tmp_path / "audit.jsonl"
    now = time.time()
    iso = lambda seconds_ago: time.strftime(  # noqa: E731
        "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - seconds_ago))
    with gzip.open(tmp_path / "audit.jsonl.2.gz", "wt") as old:
        old.write(json.dumps(record(1, "alice", "A1", iso(10 * 86400))) + "\n")
    write_log(tmp_path / "audit.jsonl.1", [record(2, "bob", "B1", iso(3 * 86400)),
                                          record(3, "alice", "A2", iso(3 * 3600))])
    write_log(log, [record(3, "alice", "A2", iso(3 * 3600)),  # delivered twice
                    record(4, "alice", "A1", iso(60))])
    log.open("a").write('{"torn line\n')
    os.utime(tmp_path / "audit.jsonl.2.gz", (now - 200, now - 200))
    os.utime(tmp_path / "audit.jsonl.1", (now - 100, now - 100))
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[plugins]\nenabled = ["auditlog"]\n[plugins.auditlog]\npath = "{log}"\n')

    def audit(*args: str) -> list[str]:
        result = pnbridge("audit", "--config", str(config), "--json", *args)
        assert result.returncode == 0, result.stderr
        assert "1 unreadable line(s) skipped" in result.stderr
        return [json.loads(line)["id"] for line in result.stdout.splitlines()]

    assert audit() == ["e1", "e2", "e3", "e4"]
    assert audit("--username", "alice") == ["e1", "e3", "e4"]
    assert audit("--selector", "A1") == ["e1", "e4"]
    assert audit("--since", "7d") == ["e2", "e3", "e4"]
    assert audit("--since", "2h", "--username", "alice") == ["e4"]
    assert audit("--since", iso(4 * 86400).replace(".000Z", "+00:00")) == ["e2", "e3", "e4"]
    text = pnbridge("audit", "--config", str(config), "--selector", "B1").stdout
    assert text.splitlines()[0].split() == \
        ["TIME", "KIND", "REASON", "SELECTOR", "USERNAME", "TOKENS", "SOURCE"]
    assert "bob" in text and "QVBBOT…2J" in text and "client=192.0.2.7" in text


@pytest.mark.parametrize("since", ["yesterday", "2x", "h", "2026-13-01"])
def test_audit_command_rejects_a_bad_time(tmp_path, since):
    config = tmp_path / "pnbridge.toml"
    config.write_text('[plugins]\nenabled = ["auditlog"]\n[plugins.auditlog]\npath = "x"\n')
    result = pnbridge("audit", "--config", str(config), "--since", since)
    assert result.returncode == 2
    assert "Invalid value for '--since'" in result.stderr


def test_audit_command_needs_the_plugin(tmp_path):
    result = pnbridge("audit")
    assert result.returncode == 1
    assert "the auditlog plugin is not enabled" in result.stderr


def test_audit_command_names_a_missing_log(tmp_path):
    config = tmp_path / "pnbridge.toml"
    log = tmp_path / "nowhere" / "audit.jsonl"
    config.write_text(f'[plugins]\nenabled = ["auditlog"]\n[plugins.auditlog]\npath = "{log}"\n')
    result = pnbridge("audit", "--config", str(config))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"pnbridge: no audit log at {log} (nothing delivered to auditlog " \
        "yet, or [plugins.auditlog] path names another file)\n"


def test_bad_settings_name_the_key(tmp_path):
    config = tmp_path / "pnbridge.toml"
    config.write_text('[plugins]\nenabled = ["auditlog"]\n[plugins.auditlog]\n'
                      'fsync = "sometimes"\nfsync_interval = 0\n')
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 1
    assert "plugins.auditlog.path: required key is missing" in result.stderr
    assert "plugins.auditlog.fsync: expected one of 'always', 'interval', 'never'" \
        in result.stderr
    assert "plugins.auditlog.fsync_interval: must be more than 0" in result.stderr


def test_the_example_config_tables_are_valid(tmp_path):
    """The commented-out built-in plugin tables of config/pnbridge.toml ([plugins.webhook],
    [plugins.auditlog], [plugins.pnmediator]), uncommented and enabled, pass check-config."""
    example = (Path(__file__).parent.parent / "config" / "pnbridge.toml").read_text()
    head, tail = example.split("\n# Built-in plugins", 1)
    uncommented = [
        line[2:] if re.match(r"# (\[plugins\.|\w+ = )", line) else line
        for line in tail.splitlines()
    ]
    text = head.replace("enabled = []", 'enabled = ["webhook", "auditlog", "pnmediator"]', 1)
    config = tmp_path / "pnbridge.toml"
    config.write_text(text + "\n#" + "\n".join(uncommented) + "\n")
    assert "[plugins.webhook]\nurls = " in config.read_text()
    assert "[plugins.pnmediator]\nurl = " in config.read_text()
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr


async def test_two_instances_write_apart(start_daemon, tmp_path):
    """Two instances of the auditlog plugin (``[plugins.archive] plugin = "auditlog"``) each
    keep their own file: both get every event; one's file moved away (its logrotate) makes
    it start a new file while the other goes on writing its own."""
    main, archive = tmp_path / "audit.jsonl", tmp_path / "archive" / "audit.jsonl"
    archive.parent.mkdir()
    daemon = await start_daemon({"plugins": {
        "enabled": ["auditlog", "archive"],
        "auditlog": {"path": str(main), "fsync": "never"},
        "archive": {"plugin": "auditlog", "path": str(archive), "fsync": "always"},
    }})
    await report_form(daemon, "S1")
    await wait_until(lambda: len(lines(main)) == len(lines(archive)) == 1)
    main.rename(tmp_path / "audit.jsonl.1")
    await report_form(daemon, "S2")
    await wait_until(lambda: len(lines(main)) == 1 and len(lines(archive)) == 2)
    journal = [e.id for e in daemon.store().events()]
    assert [r["id"] for r in json_lines(archive)] == journal
    assert [r["id"] for r in json_lines(tmp_path / "audit.jsonl.1")] == journal[:1]
    assert [r["id"] for r in json_lines(main)] == journal[1:]


def test_audit_command_picks_an_instance(tmp_path):
    """``pnbridge audit`` (the auditlog plugin's command) reads the instance named auditlog,
    or the only one, or the one ``--instance`` names; it says which there are when it
    cannot tell."""
    for name in ("main", "archive"):
        write_log(tmp_path / f"{name}.jsonl", [record(1, name, "S1", "2026-01-02T03:04:05.000Z")])
    config = tmp_path / "pnbridge.toml"

    def audit(enabled: dict[str, str], *args: str) -> tuple[int, list[str], str]:
        config.write_text(f"[plugins]\nenabled = {list(enabled)!r}\n".replace("'", '"') + "".join(
            f'[plugins.{name}]\nplugin = "auditlog"\npath = "{tmp_path / log}.jsonl"\n'
            for name, log in enabled.items()))
        result = pnbridge("audit", "--config", str(config), "--json", *args)
        users = [json.loads(line)["username"] for line in result.stdout.splitlines()]
        return result.returncode, users, result.stderr

    assert audit({"archive": "archive"}) == (0, ["archive"], "")
    assert audit({"auditlog": "main", "archive": "archive"}) == (0, ["main"], "")
    assert audit({"auditlog": "main", "archive": "archive"}, "--instance", "archive") == \
        (0, ["archive"], "")
    assert audit({"one": "main", "two": "archive"}) == (
        1, [], "pnbridge: instances of the auditlog plugin: one, two; name one with "
               "--instance\n")
    assert audit({"one": "main"}, "--instance", "two") == (
        1, [], "pnbridge: no enabled instance two of the auditlog plugin in this config "
               "(enabled: one)\n")
