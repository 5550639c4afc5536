"""kill -9 under load: a client thread reports steadily while the daemon is killed at random
moments and restarted. Every answered report is in the database, no row is duplicated or
half-written, and every journal event reaches each plugin (the webhook receiver, which
de-duplicates by event id, and the recorder plugin, which counts every call)."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
from conftest import cli
from faults import daemon_toml, recorded_ids
from plugintools import wait_until_sync
from webhook_receiver import SECRET, Receiver

ROUNDS = 4
SELECTORS = 40


class SteadyClient(threading.Thread):
    """Reports token n to selector n % SELECTORS, one after another, until stopped;
    remembers the answered ones."""

    def __init__(self, url: str, start_at: int, acked: dict[str, int]):
        super().__init__(daemon=True)
        self.url, self.n, self.acked = url, start_at, acked
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while not self.stop.is_set():
                selector = f"sel-{self.n % SELECTORS}"
                try:
                    answer = client.post("/token/", data={
                        "username": f"u{self.n % 7}", "selector": selector,
                        "pushToken": f"tok-{self.n:06d}", "pushappid": "app.id",
                    })
                except httpx.HTTPError:
                    time.sleep(0.01)  # the daemon is gone: keep trying until stopped
                else:
                    if answer.status_code == 200:
                        self.acked[selector] = self.n
                self.n += 1


def test_kill_9_under_load_loses_no_answered_report(spawn, tmp_path):
    receiver = Receiver()
    db = tmp_path / "pnbridge.db"
    toml = daemon_toml(tmp_path, db, enabled=("recorder", "webhook"), extra=f"""\
[plugins.webhook]
urls = ["{receiver.url}"]
secret = "{SECRET}"
[plugins.webhook.delivery]
backoff = 0.05
max_backoff = 0.5
""")
    rng = random.Random()
    acked: dict[str, int] = {}
    sent = 0
    try:
        for _ in range(ROUNDS):
            daemon = spawn(toml)
            client = SteadyClient(daemon.url(), sent, acked)
            client.start()
            time.sleep(rng.uniform(0.3, 1.2))
            daemon.popen.send_signal(signal.SIGKILL)
            daemon.popen.wait(10)
            client.stop.set()
            client.join(10)
            sent = client.n
        assert len(acked) >= SELECTORS // 2, acked  # the load was real
        daemon = spawn(toml)
        daemon.url()
        devices, events = _check_database(db, tmp_path)
        for selector, n in acked.items():
            # The answered token, or one sent later whose answer the kill cut off.
            assert int(devices[selector]["token_msgs"].removeprefix("tok-")) >= n
        wait_until_sync(lambda: set(recorded_ids(tmp_path)) >= set(events), timeout=20)
        wait_until_sync(lambda: set(receiver.accepted) >= set(events), timeout=20)
        assert len(recorded_ids(tmp_path)) >= len(events)
        assert receiver.forged == 0
        assert daemon.stop() == 0
    finally:
        receiver.close()


def _check_database(db: Path, tmp_path: Path) -> tuple[dict[str, dict], list[str]]:
    """Integrity, no duplicate rows or events; the devices (by ``pnbridge devices list``)
    and the journal's event ids."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT selector FROM devices GROUP BY selector "
                            "HAVING count(*) > 1").fetchall() == []
        assert conn.execute("SELECT count(*) FROM devices WHERE username IS NULL OR "
                            "token_msgs IS NULL OR appid_msgs IS NULL").fetchone()[0] == 0
        events = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY seq")]
    finally:
        conn.close()
    assert len(events) == len(set(events))
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{db}"\n')
    listed = cli("devices", "list", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    devices = {d["selector"]: d for d in json.loads(listed.stdout)}
    return devices, events
