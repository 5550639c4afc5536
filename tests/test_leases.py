"""Leases (docs/cluster.md): the store's lease rows, the instance's identity, and several
``pnbridge serve`` on one database: exactly one delivers each plugin and runs maintenance,
a peer takes over when the holder dies (kill -9: within the lease time) or stops (SIGTERM:
at once), and no event is lost or reordered; on PostgreSQL the server's clock decides a
lease's expiry (an instance whose clock is off cannot take a live lease), and a locked
journal neither delays a report's 503 past busy_timeout nor costs the leases.

Over 400 lines: the scenarios share one set of instance fixtures and helpers (serve,
instance_config, Load, two_instances).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from configs import base_config, merge, toml_text
from conftest import Process, cli
from plugintools import install_plugins, lines, wait_until_sync
from pnbridge.config.tables import StorageConfig, parse_config
from pnbridge.errors import ConfigError, StoreError
from pnbridge.ops.instance import Instance, gone, holder_name
from pnbridge.storage.engines import engine
from pnbridge.storage.sqlite.store import SQLiteStore
from reports import report as send_report
from webhook_receiver import SECRET, Receiver

TTL = 3.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """``[storage]`` of a new database: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return StorageConfig(path=str(tmp_path / "pnbridge.db"))
    return StorageConfig(url=request.getfixturevalue("pg_database_url"))


def test_a_lease_goes_to_one_holder_until_it_runs_out_or_is_released(tmp_path):
    storage = StorageConfig(path=str(tmp_path / "pnbridge.db"))  # one host: callers' clock
    one, two = engine(storage).open(), engine(storage).open()
    with one.transaction():
        assert one.take_lease("delivery:webhook", "a", 100.0, TTL)
    with two.transaction():
        assert not two.take_lease("delivery:webhook", "b", 102.9, TTL)  # a's until 103
        assert two.take_lease("maintenance", "b", 102.9, TTL)  # another name: free
        assert not two.renew_lease("delivery:webhook", "b", 102.9, TTL)
    with one.transaction():
        assert one.renew_lease("delivery:webhook", "a", 102.0, TTL)  # now until 105
        assert one.take_lease("delivery:webhook", "a", 102.5, TTL)  # its own: kept
    with two.transaction():
        assert not two.take_lease("delivery:webhook", "b", 104.0, TTL)
        assert two.take_lease("delivery:webhook", "b", 105.6, TTL)  # ran out: taken over
    with one.transaction():
        assert not one.renew_lease("delivery:webhook", "a", 106.0, TTL)  # lost, and says so
        assert not one.release_lease("delivery:webhook", "a")  # not a's to release
    shown = {lease.name: lease for lease in one.leases()}
    assert (shown["delivery:webhook"].holder, shown["delivery:webhook"].expires_at,
            shown["delivery:webhook"].taken_at) == ("b", 108.6, 105.6)
    with two.transaction():
        assert two.release_lease("delivery:webhook", "b")
    with one.transaction():
        assert one.take_lease("delivery:webhook", "a", 106.0, TTL)  # released: free at once
    assert [lease.name for lease in one.leases()] == ["delivery:webhook", "maintenance"]
    one.close()
    two.close()


@pytest.mark.postgresql
def test_on_postgresql_the_server_s_clock_decides_expiry_not_the_caller_s(pg_database_url):
    one, two = (engine(StorageConfig(url=pg_database_url)).open() for _ in range(2))
    with one.transaction():
        assert one.take_lease("delivery:webhook", "a", time.time(), 1.0)
    server = one.clock()
    assert abs(server - time.time()) < 1  # the test's server runs on this host
    (row,) = one.leases()
    assert row.renewed_at <= server < row.expires_at <= server + 1.0
    with two.transaction():  # b's clock an hour ahead: a's lease is still live
        assert not two.take_lease("delivery:webhook", "b", time.time() + 3600, 1.0)
    with one.transaction():  # a's clock an hour behind: renewed for a second all the same
        assert one.renew_lease("delivery:webhook", "a", time.time() - 3600, 1.0)
    assert one.leases()[0].expires_at > server + 0.5
    time.sleep(1.2)
    with two.transaction():  # ran out by the server's clock, whatever b's says
        assert two.take_lease("delivery:webhook", "b", time.time() - 3600, 1.0)
    one.close()
    two.close()


def test_an_instance_is_named_and_its_holder_id_is_its_own():
    named = Instance.create("pbx-a")
    assert named.name == "pbx-a" and holder_name(named.holder) == "pbx-a"
    assert Instance.create("pbx-a").holder != named.holder  # two processes of one name
    default = Instance.create()
    assert default.name.endswith(f":{os.getpid()}") and default.name.startswith(
        os.uname().nodename)
    # One of this machine whose process is gone is known as such; a live one, one of this
    # process (another daemon in it) and one of another machine are not.
    child = subprocess.run([sys.executable, "-c", "from pnbridge.ops.instance import Instance;"
                            " print(Instance.create('x').holder)"],
                           capture_output=True, text=True, check=True)
    assert gone(child.stdout.strip())
    assert not gone(named.holder)
    assert not gone("x#0123456789ab.1.cafe") and not gone("not one of ours")


@pytest.mark.parametrize(("table", "bad", "said"), [
    ("server", {"instance": "x" * 65}, "server.instance: must be 1 to 64 printable"),
    ("server", {"instance": "a\nb"}, "server.instance: must be 1 to 64 printable"),
    ("plugins", {"lease_time": 2.5}, "plugins.lease_time: must be 3 or more"),
    ("plugins", {"poll_interval": 0}, "plugins.poll_interval: must be greater than 0"),
])
def test_bad_instance_lease_and_poll_settings_are_refused(table, bad, said):
    with pytest.raises(ConfigError) as error:
        parse_config({table: bad})
    assert any(said in line for line in error.value.errors), error.value.errors
    assert parse_config({}).plugins.lease_time == 15.0
    assert parse_config({}).plugins.poll_interval == 0.5


# -- several `pnbridge serve` on one database ----------------------------------------------


@pytest.fixture
def serve(tmp_path: Path):
    """Start ``pnbridge serve --config PATH`` (several at once); kill what is left after
    the test."""
    started: list[Process] = []

    def start(config: Path, skew: float = 0.0) -> Process:
        """``skew``: the process's ``time.time`` runs that many seconds ahead (its host's
        clock is off: the environment, set before pnbridge is imported)."""
        program = ["-m", "pnbridge"]
        if skew:
            wrapper = tmp_path / "skewed.py"
            wrapper.write_text(
                "import sys, time\n_real = time.time\n"
                f"time.time = lambda: _real() + {skew!r}\n"
                "from pnbridge.cli import main\nsys.argv[0] = 'pnbridge'\nmain()\n")
            program = [str(wrapper)]
        popen = subprocess.Popen(
            [sys.executable, *program, "serve", "--config", str(config)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path)
        started.append(Process(popen))
        return started[-1]

    yield start
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()


def instance_config(tmp_path: Path, name: str, receiver: Receiver, url: str | None = None,
                    **plugins: Any) -> Path:
    """Instance ``name``'s config: the shared database (SQLite; PostgreSQL at ``url``), the
    webhook to ``receiver`` and a
    recorder of its own (tmp_path/NAME/recorded: what this instance delivered), leases of
    TTL seconds, devices expiring after an hour (the sweep logs that it runs)."""
    directory = tmp_path / name
    directory.mkdir()
    install_plugins(tmp_path / "plugins", "recorder")
    fast = {"backoff": 0.05, "max_backoff": 0.5}
    tables = merge(base_config(tmp_path), {
        "server": {"instance": name, "grace_period": 2},
        "storage": {"busy_timeout": 1, "expire_after": "1h", **({"url": url} if url else {})},
        "plugins": {
            "enabled": ["recorder", "webhook"], "paths": [str(tmp_path / "plugins")],
            "lease_time": TTL, **plugins,
            "recorder": {"path": str(directory / "recorded"), "delivery": fast},
            "webhook": {"urls": [receiver.url], "secret": SECRET, "delivery": fast},
        },
    })
    path = directory / "pnbridge.toml"
    path.write_text(toml_text(tables))
    return path


def ready(process: Process) -> dict[str, Any]:
    """The instance's /readyz as JSON."""
    return httpx.get(process.url() + "/readyz?format=json", timeout=5).json()


class Load(threading.Thread):
    """Reports to the instances in turn, device ``sel-(n % DEVICES)`` a new token each time,
    until stopped; keeps the answered reports (selector, n)."""

    DEVICES = 12

    def __init__(self, urls: list[str]):
        super().__init__(daemon=True)
        self.urls, self.n, self.answered = urls, 0, []
        self.stop = threading.Event()

    def run(self) -> None:
        clients = [httpx.Client(base_url=url, timeout=3) for url in self.urls]
        while not self.stop.is_set():
            selector = f"sel-{self.n % self.DEVICES}"
            client = clients[self.n % len(clients)]
            if report(client, selector, token=f"tok-{self.n:06d}", pushappid="app.id",
                      status=None).status_code == 200:
                self.answered.append((selector, self.n))
            self.n += 1
            time.sleep(0.005)
        for client in clients:
            client.close()


def report(client: httpx.Client, selector: str, **fields: Any) -> httpx.Response:
    try:
        return send_report(client, selector, **fields)
    except httpx.HTTPError:
        return httpx.Response(0)  # the instance is gone: the report goes unanswered


def delivered_in_order(receiver: Receiver, answered: list[tuple[str, int]]) -> None:
    """Every answered report reached the receiver, and each device's events arrived in
    journal order (counting each event where it first arrived)."""
    tokens = {(p["selector"], p["after"]["token_msgs"]) for p in receiver.accepted.values()}
    missing = [a for a in answered if (a[0], f"tok-{a[1]:06d}") not in tokens]
    assert not missing, missing[:5]
    seqs: dict[str, list[int]] = {}
    for payload in receiver.accepted.values():
        seqs.setdefault(payload["selector"], []).append(payload["seq"])
    assert all(s == sorted(s) for s in seqs.values()), seqs


def recorded(tmp_path: Path, name: str) -> list[str]:
    """The event ids instance ``name``'s recorder plugin received, in order."""
    return [line.split()[3] for line in lines(tmp_path / name / "recorded")]


def logged_at(process: Process, pattern: str, timeout: float = 15.0) -> float:
    """When ``process`` logged a line matching ``pattern`` (the line's time stamp, epoch
    seconds), waiting for it at most ``timeout`` seconds."""
    stamp = process.wait_for(rf"^(\S+ \S+) .*{pattern}", timeout=timeout).group(1)
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def two_instances(serve, tmp_path: Path, receiver: Receiver, url: str | None = None,
                  **plugins: Any) -> tuple[Process, Process]:
    """Instances a (holding every lease) and b (waiting), both serving."""
    a = serve(instance_config(tmp_path, "a", receiver, url, **plugins))
    a.wait_for("lease delivery:webhook: held by this instance")
    a.wait_for("lease maintenance: held by this instance")
    b = serve(instance_config(tmp_path, "b", receiver, url, **plugins))
    b.url()
    shown = wait_until_sync(lambda: (r := ready(b))["leases"].get("delivery:webhook", "")
                            .startswith("a until") and r, timeout=5)
    assert shown["delivers"] == [] and shown["instance"] == "b" and shown["ready"]
    assert set(shown["leases"]) == {"delivery:recorder", "delivery:webhook", "maintenance"}
    assert all(v.startswith("a until ") for v in shown["leases"].values()), shown
    assert sorted(ready(a)["delivers"]) == ["recorder", "webhook"]
    assert delivered_by(tmp_path, "b") == {"recorder": "a", "webhook": "a"}
    for process, held in ((a, 1), (b, 0)):
        page = httpx.get(process.url() + "/metrics", timeout=5).text
        name = "a" if held else "b"
        assert f'pnbridge_instance_info{{instance="{name}"}} 1.0' in page
        for lease in ("delivery:recorder", "delivery:webhook", "maintenance"):
            assert f'pnbridge_lease_held{{lease="{lease}"}} {held}.0' in page, page
    return a, b


def delivered_by(tmp_path: Path, name: str) -> dict[str, str]:
    """Who delivers each plugin, as `pnbridge plugins` (--json, and the table) and `pnbridge
    events` show it with instance ``name``'s config."""
    config = str(tmp_path / name / "pnbridge.toml")
    listed = json.loads(cli("plugins", "--config", config, "--json").stdout)
    shown = {p["name"]: p["delivery"]["instance"] for p in listed if p["delivery"]}
    assert not any(p["delivery"]["expired"] for p in listed if p["delivery"])
    text = cli("plugins", "--config", config).stdout
    for plugin, holder in shown.items():
        assert re.search(rf"^{plugin} .* {holder} until \S+Z ", text, re.M), text
    assert re.search(r"^maintenance \(expiry, pruning\): \S+ until ", text, re.M), text
    notes = cli("events", "--config", config).stderr
    assert all(f"{p} delivered by {h} until " in notes for p, h in shown.items()), notes
    return shown


def test_kill_9_of_the_holder_mid_load_a_peer_delivers_everything_in_order(
        serve, tmp_path, receivers, storage):
    receiver = receivers()
    a, b = two_instances(serve, tmp_path, receiver, storage.url)
    load = Load([a.url(), b.url()])
    load.start()
    wait_until_sync(lambda: len(load.answered) >= 150)
    # One instance delivers (a: every event so far is in its recorder, none in b's) and
    # runs maintenance (only a's expiry sweep runs).
    assert recorded(tmp_path, "a") and not recorded(tmp_path, "b")
    assert "removing devices not seen" in a.log and "removing devices not seen" not in b.log
    killed = time.time()
    a.popen.kill()
    a.popen.wait()
    took = logged_at(b, "lease delivery:webhook: held by this instance", TTL + 3) - killed
    b.wait_for("lease maintenance: held by this instance")
    b.wait_for("removing devices not seen")
    at_kill = len(load.answered)
    wait_until_sync(lambda: len(load.answered) >= at_kill + 150)
    load.stop.set()
    load.join()
    wait_until_sync(lambda: len(receiver.accepted) >= len(load.answered), timeout=20)
    delivered_in_order(receiver, load.answered)
    twice = len(receiver.requests) - len(receiver.accepted)  # sent again at the takeover
    print(f"kill -9 ({'PostgreSQL' if storage.url else 'SQLite'}): b took over in "
          f"{took:.2f} s; {twice} event(s) sent twice; {len(load.answered)} reports")
    assert twice <= 100 and receiver.forged == 0
    assert b.stop() == 0


def test_sigterm_hands_over_at_once_and_maintenance_moves_with_it(serve, tmp_path, receivers):
    """retention 0: the journal is pruned as soon as both plugins passed an event, by the
    instance holding maintenance only."""
    receiver = receivers()
    a, b = two_instances(serve, tmp_path, receiver, retention=0, prune_interval=0.2)
    with httpx.Client(base_url=b.url()) as client:
        for n in range(20):
            report(client, f"s{n}", username=f"u{n}", token=f"tok-{n:06d}", pushappid="app.id")
    wait_until_sync(lambda: len(receiver.accepted) == 20)
    a.wait_for("pruned [0-9]+ journal event")
    assert "pruned" not in b.log
    assert a.stop(signal.SIGTERM) == 0
    released = logged_at(a, "lease delivery:webhook: released", 5)
    took = logged_at(b, "lease delivery:webhook: held by this instance", 3) - released
    with httpx.Client(base_url=b.url()) as client:
        for n in range(20, 40):
            report(client, f"s{n}", username=f"u{n}", token=f"tok-{n:06d}", pushappid="app.id")
    wait_until_sync(lambda: len(receiver.accepted) == 40)
    b.wait_for("pruned [0-9]+ journal event")
    assert len(receiver.requests) == 40  # handed over with the cursor saved: none twice
    assert sorted(ready(b)["delivers"]) == ["recorder", "webhook"]
    assert delivered_by(tmp_path, "a") == {"recorder": "b", "webhook": "b"}
    print(f"SIGTERM: b took over {took:.2f} s after a released its lease")
    assert took <= 1.5
    assert b.stop() == 0


def test_a_frozen_holder_is_taken_over_as_its_lease_runs_out_and_stops_as_it_wakes(
        serve, tmp_path, receivers):
    """SIGSTOP: a holder alive but not renewing (as one behind a network partition, or on
    another host: the lease time is what a peer waits, not ``gone``'s shortcut)."""
    receiver = receivers()
    a, b = two_instances(serve, tmp_path, receiver)

    def send(process: Process, first: int, count: int) -> None:
        with httpx.Client(base_url=process.url()) as client:
            for n in range(first, first + count):
                report(client, f"s{n}", username=f"u{n}", token=f"tok-{n:06d}",
                       pushappid="app.id")

    send(b, 0, 5)
    store = SQLiteStore(tmp_path / "pnbridge.db", reading=True)
    wait_until_sync(lambda: store.cursors() == {"recorder": 5, "webhook": 5})  # a saved them
    store.close()
    frozen = time.time()
    os.kill(a.popen.pid, signal.SIGSTOP)
    try:
        took = logged_at(b, "lease delivery:webhook: held by this instance", TTL + 3) - frozen
        send(b, 5, 5)
        wait_until_sync(lambda: len(recorded(tmp_path, "b")) == 5)
    finally:
        os.kill(a.popen.pid, signal.SIGCONT)
    a.wait_for("lease delivery:webhook: (taken by another instance|not renewed in time)")
    send(a, 10, 5)  # a still takes reports; b delivers them
    wait_until_sync(lambda: len(receiver.accepted) == 15)
    assert len(recorded(tmp_path, "a")) == 5 and len(recorded(tmp_path, "b")) == 10
    assert len(receiver.requests) == 15
    shown = wait_until_sync(lambda: (r := ready(a))["leases"]["delivery:webhook"]
                            .startswith("b until ") and r, timeout=5)
    assert shown["delivers"] == [] and shown["ready"], shown
    print(f"frozen holder: b took over {took:.2f} s after a stopped (lease time {TTL:g} s)")
    assert took <= TTL + 1
    assert a.stop() == 0 and b.stop() == 0


@pytest.mark.postgresql
def test_on_postgresql_a_peer_s_event_wakes_the_holder_at_once(
        serve, tmp_path, receivers, pg_database_url):
    """LISTEN/NOTIFY: with polling a minute apart, an event another instance journals is
    delivered by the holder at once."""
    receiver = receivers()
    a, b = two_instances(serve, tmp_path, receiver, pg_database_url, poll_interval=60)
    time.sleep(1)  # a's delivery waits (a minute) for its next look at the journal
    with httpx.Client(base_url=b.url()) as client:
        sent = time.monotonic()
        report(client, "s1", token="tok-000001", pushappid="app.id")
    wait_until_sync(lambda: len(receiver.accepted) == 1, timeout=10)
    took = time.monotonic() - sent
    assert recorded(tmp_path, "a") and not recorded(tmp_path, "b")
    print(f"PostgreSQL: b's event reached the receiver through a in {took:.3f} s")
    assert took < 2
    assert a.stop() == 0 and b.stop() == 0


@pytest.mark.postgresql
def test_on_postgresql_an_instance_30_s_ahead_cannot_take_a_live_holder_s_lease(
        serve, tmp_path, receivers, pg_database_url):
    receiver = receivers()
    a = serve(instance_config(tmp_path, "a", receiver, pg_database_url))
    a.wait_for("lease delivery:webhook: held by this instance")
    a.wait_for("lease maintenance: held by this instance")
    c = serve(instance_config(tmp_path, "c", receiver, pg_database_url), skew=30.0)
    c.wait_for(r"clock is \+(29\.9|30\.\d) s off the store's")
    shown = wait_until_sync(lambda: (r := ready(c))["leases"].get("delivery:webhook", "")
                            .startswith("a until") and r, timeout=5)
    assert 29 < shown["clock_offset"] < 31 and shown["delivers"] == [], shown
    assert abs(ready(a)["clock_offset"]) < 1
    load = Load([a.url(), c.url()])
    load.start()
    time.sleep(3 * TTL)  # c tries to take every lease again and again meanwhile
    load.stop.set()
    load.join()
    assert len(load.answered) > 100
    wait_until_sync(lambda: len(receiver.accepted) >= len(load.answered), timeout=20)
    delivered_in_order(receiver, load.answered)
    ids = [payload["id"] for _, payload in receiver.requests]
    assert len(ids) == len(set(ids)), "an event delivered twice"
    assert recorded(tmp_path, "a") and not recorded(tmp_path, "c")
    assert "held by this instance" not in c.log and "taken by another" not in a.log
    print(f"clock +30 s: c's offset {shown['clock_offset']} s; {len(ids)} events, "
          f"each delivered once, all by a")
    assert c.stop() == 0 and a.stop() == 0


@pytest.mark.postgresql
def test_on_postgresql_a_locked_journal_answers_503_in_busy_timeout_and_keeps_the_leases(
        serve, tmp_path, receivers, pg_database_url):
    import psycopg

    receiver = receivers()
    a, b = two_instances(serve, tmp_path, receiver, pg_database_url)  # busy_timeout = 1 s
    clients = [httpx.Client(base_url=p.url(), timeout=10) for p in (a, b)]
    for n in range(20):  # events for a to deliver: its cursor saves go on
        assert report(clients[0], f"sel-{n}", token=f"tok-{n:06d}", pushappid="app.id",
                      status=None).status_code == 200
    took: list[float] = []
    with psycopg.connect(pg_database_url, autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        locked = time.monotonic()
        n = 100
        while time.monotonic() - locked < 3 * TTL:  # longer than a lease lasts
            for client in clients:
                start = time.monotonic()
                answer = report(client, f"sel-{n % 12}", token=f"tok-{n:06d}",
                                pushappid="app.id", status=None)
                took.append(time.monotonic() - start)
                assert answer.status_code == 503, answer.text
                n += 1
        other.execute("ROLLBACK")
    assert max(took) < 1 + 1, took  # busy_timeout + 1 s
    answered = [(f"sel-{n % 12}", n) for n in range(n, n + 12)]
    for selector, m in answered:
        assert report(clients[0], selector, token=f"tok-{m:06d}", pushappid="app.id",
                      status=None).status_code == 200
    for client in clients:
        client.close()
    wait_until_sync(lambda: len(receiver.accepted) >= 32, timeout=20)
    delivered_in_order(receiver, answered)
    assert "not renewed in time" not in a.log + b.log
    assert "held by this instance" not in b.log and "taken by another" not in a.log
    assert sorted(ready(a)["delivers"]) == ["recorder", "webhook"]
    print(f"journal locked {3 * TTL:g} s: {len(took)} reports, 503 in "
          f"{min(took):.2f} to {max(took):.2f} s (busy_timeout 1 s); leases kept")
    assert a.stop() == 0 and b.stop() == 0


async def test_a_report_queued_behind_a_locked_batch_fails_within_busy_timeout(engine):
    from operator import methodcaller

    from pnbridge.storage.writer import open_writer

    engine.open().close()  # created
    if engine.server is None:
        import sqlite3
        other: Any = sqlite3.connect(engine.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    else:
        import psycopg
        other = psycopg.connect(engine.storage["url"], autocommit=True)
        other.execute("BEGIN")
        other.execute("LOCK TABLE devices, events IN ACCESS EXCLUSIVE MODE")
    took: list[float] = []

    async def probe(after: float) -> None:
        await trio.sleep(after)
        start = time.monotonic()
        with pytest.raises(StoreError):
            await writer.call(methodcaller("probe_write"))
        took.append(time.monotonic() - start)

    try:
        async with open_writer(engine.config(busy_timeout=1)) as writer, \
                trio.open_nursery() as nursery:
            nursery.start_soon(probe, 0.0)
            nursery.start_soon(probe, 0.5)  # waits for the first batch, then its own
    finally:
        other.execute("ROLLBACK")
        other.close()
    # Each within busy_timeout (+ a margin), the second not 1.5 s (its wait, then a full one).
    assert len(took) == 2 and all(0.9 < t < 1.0 + 0.3 for t in took), took
