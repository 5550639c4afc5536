"""Two ``pnbridge serve`` on one store under load (tests/clustertools.py), the webhook
plugin on both posting to one receiver, leases of LEASE_TIME seconds: kill -9 of the
instance delivering mid-load, then of the other after a restart (on PostgreSQL, and on
one SQLite file with both on one port through ``reuse_port``); PostgreSQL itself stopped
mid-load. Every report answered 200 is stored once, every event delivered at least once and
each device's events in journal order; delivery resumes within the lease time."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from clustertools import (
    BUSY_TIMEOUT,
    LEASE_TIME,
    MARGIN,
    TIMEOUT,
    Cluster,
    Instance,
    Load,
    check_delivered,
    check_stored,
    separate,
)
from conftest import PASSWORDS
from plugintools import wait_until_sync
from pnbridge.access import users
from pnbridge.storage.interface import Store
from postgres import PostgresServer

pytestmark = pytest.mark.slow

HELD = "lease delivery:webhook: held by this instance"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(storage: dict[str, Any], **kwargs: Any) -> Cluster:
        made.append(Cluster(tmp_path, storage, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


def served(instance: Instance) -> float:
    """The reports ``instance``'s current process answered, from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{instance.admin}/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(
        r'^pnbridge_reports_total\{kind="token"[^}]*\} (\S+)', text, re.M))


def kill_each_holder(cluster: Cluster) -> None:
    """Load on both instances; kill -9 the one delivering, keep loading the other, start the
    killed one again, then kill -9 the other; the checks of the module's docstring."""
    cluster.start()
    load = Load(sorted({i.url for i in cluster.instances.values()}))
    load.start()
    windows: list[tuple[float, float]] = []
    figures: list[str] = []
    try:
        load.wait_answered(100)
        assert all(served(i) > 0 for i in cluster.instances.values())  # spread over both
        first = cluster.holder()
        (other,) = (i for i in cluster.instances.values() if i is not first)
        for victim, survivor in ((first, other), (other, first)):
            assert cluster.holder() is victim
            killed = victim.kill()
            if len(load.urls) > 1:
                load.urls.remove(victim.url)
            taken = survivor.logged_at(HELD, LEASE_TIME + MARGIN) - killed
            resumed = cluster.hook.first_after(killed, LEASE_TIME + MARGIN)
            windows.append((killed, resumed + MARGIN))
            figures.append(f"{victim.name} killed: {survivor.name} took the lease after "
                           f"{taken:.2f} s, delivered again after {resumed - killed:.2f} s")
            assert resumed - killed <= LEASE_TIME + MARGIN, figures
            load.wait_answered(60, url=survivor.url)
            if victim is first:  # back, and loaded again; the lease stays where it is
                victim.start()
                if victim.url not in load.urls:
                    load.urls.append(victim.url)
                wait_until_sync(lambda victim=victim: served(victim) >= 30)
                assert cluster.holder() is survivor
        load.wait_answered(60)
    finally:
        load.stop()
    assert {s.status for s in load.sent} <= {200, 0}  # 0: sent to an instance as it died
    assert max(s.took for s in load.sent) < TIMEOUT
    events = check_stored(cluster, load)
    again = check_delivered(cluster.hook, events, windows)
    print("; ".join(figures) + f"; {again} event(s) delivered twice")


@pytest.mark.postgresql
def test_kill_9_of_each_lease_holder_on_postgresql(cluster, pg_database_url: str):
    """b in a PID namespace of its own where this run may make one: as on another host,
    neither sees the other's process die, and each waits for the dead one's lease to run
    out (on one host a peer sees at once that the holder's process is gone)."""
    print("b apart: " + (" ".join(separate()) or "no (not root)"))
    kill_each_holder(cluster({"url": pg_database_url}, apart=("b",)))


def test_kill_9_of_each_lease_holder_on_sqlite_on_one_port(cluster, tmp_path: Path):
    kill_each_holder(cluster({"path": str(tmp_path / "shared.db")}, reuse_port=True))


@pytest.mark.postgresql
def test_postgresql_restarted_mid_load(cluster, postgres_server: PostgresServer,
                                       pg_database_url: str):
    """PostgreSQL stopped under load for a few seconds (longer than the leases), then
    started: reports answer 503 while it is down (never another error, never later than
    the store's timeouts) and 200 again after, both pnbridge processes the same ones."""
    cluster = cluster({"url": pg_database_url})
    cluster.start()
    load = Load([i.url for i in cluster.instances.values()])
    load.start()
    try:
        load.wait_answered(100)
        stopped = time.time()
        postgres_server.stop()
        try:
            sent = len(load.sent)
            wait_until_sync(lambda: sum(s.status == 503 for s in load.sent[sent:]) >= 10)
            time.sleep(max(0.0, stopped + LEASE_TIME - time.time()))  # the leases lapse
        finally:
            postgres_server.start()
        started = time.time()
        for instance in cluster.instances.values():
            load.wait_answered(30, url=instance.url)
        back = min(s.at for s in load.sent if s.status == 200 and s.at > started) - started
        resumed = cluster.hook.first_after(started, LEASE_TIME + MARGIN)
        load.wait_answered(60)
    finally:
        load.stop()
    statuses = {s.status for s in load.sent}
    assert statuses == {200, 503}, statuses
    slowest = max(s.took for s in load.sent)
    assert slowest < BUSY_TIMEOUT + 3, slowest
    for instance in cluster.instances.values():
        assert len(instance.processes) == 1 and instance.process.popen.poll() is None
        log = instance.process.log  # a failed batch is its reports' 503, no bug's traceback
        assert "store batch failed" not in log and "Traceback" not in log, log
        assert postgres_server.password not in instance.process.log
    events = check_stored(cluster, load)
    again = check_delivered(cluster.hook, events, [(stopped, resumed + MARGIN)])
    print(f"PostgreSQL down {started - stopped:.2f} s: {sum(s.status == 503 for s in load.sent)}"
          f" reports answered 503 (slowest answer {slowest:.2f} s), 200 again {back:.2f} s "
          f"after its start, delivery again {resumed - started:.2f} s after the start; "
          f"{again} event(s) delivered twice")
    assert cluster.holder() in cluster.instances.values()


def digest(nonce: str, nc: int, uri: str = "/token?username=alice&selector=S1&token_msgs=t"
           ) -> dict[str, str]:
    """The Authorization header of a Digest client (RFC 7616, MD5, qop=auth) as alice."""
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()
    count, cnonce = f"{nc:08x}", "0a4f113b"
    ha1 = md5(f"alice:pnbridge:{PASSWORDS['alice']}")
    answer = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{md5(f'GET:{uri}')}")
    return {"Authorization": f'Digest username="alice", realm="pnbridge", nonce="{nonce}", '
            f'uri="{uri}", qop=auth, nc={count}, cnonce="{cnonce}", response="{answer}", '
            "algorithm=MD5"}


@pytest.mark.postgresql
@pytest.mark.skipif(not hasattr(Store, "use_nonce"), reason="shared nonces not on main yet")
def test_a_digest_nonce_outlives_the_instance_that_issued_it(cluster, pg_database_url: str,
                                                            tmp_path: Path):
    """A nonce a issued works on b after a was killed -9 (b as on another host); a count
    used once is refused on b, and on a started again."""
    path = tmp_path / "users"
    users.write(path, {"alice": users.new_user("alice", "pnbridge", PASSWORDS["alice"])})
    cluster = cluster({"url": pg_database_url}, apart=("b",), extra={"auth": {
        "reporter": "digest", "users_file": str(path), "digest_algorithms": ["MD5"]}})
    cluster.start()
    a, b = cluster.instances["a"], cluster.instances["b"]
    uri = "/token?username=alice&selector=S1&token_msgs=t"

    def send(instance: Instance, nonce: str, nc: int) -> httpx.Response:
        return httpx.get(instance.url + uri, headers=digest(nonce, nc), timeout=TIMEOUT)

    challenge = httpx.get(a.url + uri, timeout=TIMEOUT)
    assert challenge.status_code == 401
    found = re.search(r'nonce="([^"]+)"', challenge.headers["WWW-Authenticate"])
    assert found is not None
    nonce = found.group(1)
    assert send(a, nonce, 1).status_code == 200
    a.kill()
    replay = send(b, nonce, 1)
    assert replay.status_code == 401 and "stale" not in replay.headers["WWW-Authenticate"]
    assert send(b, nonce, 2).status_code == 200
    a.start()
    assert send(a, nonce, 2).status_code == 401  # used on b while a was dead
    assert send(a, nonce, 3).status_code == 200
    assert send(b, nonce, 3).status_code == 401
