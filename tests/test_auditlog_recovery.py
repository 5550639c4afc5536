"""The audit log recovers by itself: after a rotation, a file the daemon cannot write at the
log's path (a file root created, made immutable here since root ignores modes; or a
directory) makes every delivery attempt fail with an error naming the path, and /readyz name
the plugin; once the path is fixed, the retried events arrive and /readyz is ok again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from configs import config_toml
from conftest import pnbridge
from plugintools import wait_until_sync
from pnbridge.storage.sqlite.store import SQLiteStore
from reports import report


def auditlog(log: Path, *enabled: str) -> dict:
    """The auditlog plugin (and ``enabled``) writing to ``log``, retried quickly."""
    return {"plugins": {"enabled": ["auditlog", *enabled], "auditlog": {
        "path": str(log), "fsync": "always",
        "delivery": {"backoff": 0.05, "max_backoff": 0.2, "max_attempts": 1000}}}}


def ids(path: Path) -> list[str]:
    return [json.loads(line)["selector"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("blocker", ["immutable file", "directory"])
def test_the_audit_log_recovers_after_an_unwritable_path(spawn, tmp_path, blocker):
    log = tmp_path / "audit.jsonl"
    daemon = spawn(auditlog(log))
    with httpx.Client(base_url=daemon.url()) as client:
        report(client, "S1", token="tok-S1", pushappid="app")
        wait_until_sync(lambda: log.exists() and ids(log) == ["S1"])
        log.rename(tmp_path / "audit.jsonl.1")  # logrotate
        if blocker == "directory":
            log.mkdir()
        else:
            log.write_text("")
            log.chmod(0o640)
            assert subprocess.run(["chattr", "+i", str(log)]).returncode == 0
        try:
            report(client, "S2", token="tok-S2", pushappid="app")
            report(client, "S3", token="tok-S3", pushappid="app")
            kind = "IsADirectoryError" if blocker == "directory" else "PermissionError"
            daemon.wait_for(rf"plugin auditlog: event \S+ \(seq 2\) attempt 3 failed: "
                            rf"{kind}: {log}: ")
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "plugin auditlog: the last" in ready.text and str(log) in ready.text
            assert "closed" not in daemon.log
        finally:
            if blocker == "directory":
                log.rmdir()
            else:
                subprocess.run(["chattr", "-i", str(log)], check=True)
                log.unlink()
        wait_until_sync(lambda: log.is_file() and ids(log) == ["S2", "S3"])
        wait_until_sync(lambda: client.get("/readyz").status_code == 200)
        assert "plugin auditlog: ok" in client.get("/readyz").text
    assert ids(tmp_path / "audit.jsonl.1") == ["S1"]
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log, daemon.log


def test_a_command_run_as_root_never_creates_the_log(tmp_path):
    """``pnbridge push`` starts only the push transports: an auditlog started by it would
    create the log as root 0640 (after a rotation, say), locking the service user out."""
    log = tmp_path / "audit.jsonl"
    config = tmp_path / "pnbridge.toml"
    config.write_text(config_toml(tmp_path, auditlog(log, "pnmediator")))
    SQLiteStore(str(tmp_path / "pnbridge.db")).conn.close()
    result = pnbridge("push", "NotifyTextMessage", "--username", "nobody", "--message", "hi",
                      "--config", str(config))
    assert result.returncode == 1 and "no device of user nobody" in result.stderr
    assert not log.exists()

