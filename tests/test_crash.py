"""kill -9 under load: a client thread reports steadily while the daemon is killed at random
moments and restarted. Every answered report is in the database, no row is duplicated or
half-written, and every journal event reaches each plugin (the webhook receiver, which
de-duplicates by event id, and the recorder plugin, which counts every call). On each store
engine (the ``engine`` fixture); with PostgreSQL, the server itself is killed too."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path

import httpx
from conftest import cli
from engines import StoreEngine
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
        self.statuses: list[int] = []

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
                    self.statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        self.acked[selector] = self.n
                self.n += 1


def test_kill_9_under_load_loses_no_answered_report(engine, spawn, tmp_path):
    receiver = Receiver()
    toml = _toml(engine, tmp_path, receiver)
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
        _check_delivered(engine, tmp_path, receiver, acked)
        assert daemon.stop() == 0
    finally:
        receiver.close()


def test_postgresql_killed_under_load_loses_no_answered_report(postgresql_engine, spawn,
                                                               tmp_path):
    """PostgreSQL itself killed (-9: a crash, recovered from its WAL) or stopped mid-load,
    pnbridge left running: reports answer 503 while it is down and 200 again once it is
    back, without restarting pnbridge; every answered report is stored, every event
    delivered."""
    engine, server = postgresql_engine, postgresql_engine.server
    assert server is not None
    receiver = Receiver()
    acked: dict[str, int] = {}
    rng = random.Random()
    try:
        daemon = spawn(_toml(engine, tmp_path, receiver))
        client = SteadyClient(daemon.url(), 0, acked)
        client.start()
        try:
            for stop in (server.kill, server.stop, server.kill):
                time.sleep(rng.uniform(0.3, 1.0))
                stop()
                down = len(client.statuses)
                wait_until_sync(lambda down=down: len(client.statuses) > down + 3)  # not hung
                server.start()
                wait_until_sync(lambda: client.statuses[-1:] == [200], timeout=15)
        finally:
            client.stop.set()
            client.join(10)
        assert 503 in client.statuses and set(client.statuses) <= {200, 503}
        assert len(acked) >= SELECTORS // 2, acked  # the load was real
        _check_delivered(engine, tmp_path, receiver, acked)
        assert daemon.popen.poll() is None and "Traceback" not in daemon.log, daemon.log
        assert server.password not in daemon.log
        assert daemon.stop() == 0
    finally:
        receiver.close()


def _toml(engine: StoreEngine, tmp_path: Path, receiver: Receiver) -> str:
    return daemon_toml(tmp_path, Path(engine.path), url=engine.storage.get("url"),
                       enabled=("recorder", "webhook"), extra=f"""\
[plugins.webhook]
urls = ["{receiver.url}"]
secret = "{SECRET}"
[plugins.webhook.delivery]
backoff = 0.05
max_backoff = 0.5
""")


def _check_delivered(engine: StoreEngine, tmp_path: Path, receiver: Receiver,
                     acked: dict[str, int]) -> None:
    """Every answered report stored, every journal event delivered to both plugins."""
    devices, events = _check_database(engine, tmp_path)
    for selector, n in acked.items():
        # The answered token, or one sent later whose answer the kill cut off.
        assert int(devices[selector]["token_msgs"].removeprefix("tok-")) >= n
    wait_until_sync(lambda: set(recorded_ids(tmp_path)) >= set(events), timeout=20)
    wait_until_sync(lambda: set(receiver.accepted) >= set(events), timeout=20)
    assert len(recorded_ids(tmp_path)) >= len(events)
    assert receiver.forged == 0


def _check_database(engine: StoreEngine, tmp_path: Path
                    ) -> tuple[dict[str, dict], list[str]]:
    """Integrity, no duplicate rows or events; the devices (by ``pnbridge devices list``)
    and the journal's event ids."""
    _, events = engine.stored()
    assert engine.rows("SELECT selector FROM devices GROUP BY selector "
                       "HAVING count(*) > 1") == []
    assert engine.rows("SELECT count(*) FROM devices WHERE username IS NULL OR "
                       "token_msgs IS NULL OR appid_msgs IS NULL")[0][0] == 0
    assert len(events) == len(set(events))
    config = tmp_path / "cli.toml"
    config.write_text(engine.toml())
    listed = cli("devices", "list", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    devices = {d["selector"]: d for d in json.loads(listed.stdout)}
    return devices, events
