"""Several ``pnbridge serve`` on one store, for tests/test_cluster.py: the instances (real
processes, so kill -9 is real), a load of reports spread across them (each device a sequence
of token changes, sent one after another), a webhook receiver that notes when each event
arrived, and the checks: every answered report stored exactly once, every journal event
delivered at least once, each device's events in journal order."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from configs import base_config, free_port, merge, toml_text
from conftest import Process
from plugintools import wait_until_sync
from pnbridge.config.tables import parse_config
from pnbridge.model import Event
from pnbridge.storage.engines import engine
from webhook_receiver import SECRET, Receiver

LEASE_TIME = 3.0  # [plugins] lease_time of every instance (its minimum)
MARGIN = 2.0  # what a takeover may take beyond the lease time on 2 busy cores
TIMEOUT = 10.0  # the clients' timeout: no report may take longer
BUSY_TIMEOUT = 2.0  # [storage] busy_timeout: a report waits at most this for the store


def separate() -> list[str]:
    """The command prefix that runs a process in a PID namespace of its own, as if on
    another host (ops/instance.py's ``gone`` cannot see it die there: a peer waits for its
    lease to run out, as across hosts); none where that takes privileges this run lacks."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    return ["unshare", "--pid", "--fork", "--kill-child"]


class Instance:
    """One ``pnbridge serve`` of the cluster: its config file, its own admin port, and the
    process now running it (started again after a kill with ``start``); ``prefix`` runs it
    under another command (``separate()``)."""

    def __init__(self, directory: Path, name: str, port: int, tables: dict[str, Any],
                 prefix: list[str] | None = None):
        self.name, self.directory, self.admin = name, directory, free_port()
        self.prefix = prefix or []
        directory.mkdir()
        self.config = directory / "pnbridge.toml"
        self.config.write_text(toml_text(merge(tables, {"server": {
            "instance": name, "listen": [f"127.0.0.1:{port}"],
            "admin_listen": [f"127.0.0.1:{self.admin}"]}})))
        self.url = f"http://127.0.0.1:{port}"
        self.processes: list[Process] = []

    @property
    def process(self) -> Process:
        return self.processes[-1]

    def start(self) -> None:
        """Start it and wait until it listens."""
        popen = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "pnbridge", "serve", "--config",
             str(self.config)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=self.directory)
        self.processes.append(Process(popen))
        self.process.wait_for(rf"health and metrics on http://127\.0\.0\.1:{self.admin}\b", 30)

    def kill(self) -> float:
        """kill -9 (of pnbridge itself, under a prefix); when it was gone (epoch seconds)."""
        popen = self.process.popen
        for pid in (_children(popen.pid) if self.prefix else []) or [popen.pid]:
            os.kill(pid, signal.SIGKILL)
        popen.wait(10)
        return time.time()

    def ready(self) -> dict[str, Any]:
        """Its /readyz as JSON (on its own admin port)."""
        return httpx.get(f"http://127.0.0.1:{self.admin}/readyz?format=json", timeout=5).json()

    def delivers(self) -> list[str]:
        """The plugins whose delivery lease it holds."""
        return list(self.ready().get("delivers", []))

    def logged_at(self, pattern: str, timeout: float, since: float = 0.0) -> float:
        """When its current process first logged a line matching ``pattern`` at ``since``
        or later (epoch seconds), waiting for it at most ``timeout`` seconds."""
        regex = re.compile(rf"^(\S+ \S+) .*{pattern}")

        def found() -> float | None:
            for line in self.process.log.splitlines():
                if (match := regex.search(line)) and (at := datetime.strptime(
                        match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()) >= since:
                    return at
            return None
        return wait_until_sync(found, timeout)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.kill()
                process.popen.wait()


def _children(parent: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]


@dataclass
class Arrival:
    at: float  # epoch seconds
    id: str
    selector: str
    seq: int


class Hook:
    """A webhook receiver (tests/webhook_receiver.py) that notes each signed request's
    arrival: every request, duplicates included, in order."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.receiver = Receiver(answer=self._arrived)

    def _arrived(self, payload: dict[str, Any]) -> int:
        self.arrivals.append(Arrival(time.time(), payload["id"], payload["selector"],
                                     payload["seq"]))
        return 200

    def first_after(self, moment: float, timeout: float) -> float:
        """When the first event not seen before ``moment`` arrived after it (waiting for one
        at most ``timeout`` seconds)."""
        def found() -> float | None:
            seen = {a.id for a in self.arrivals if a.at <= moment}
            return next((a.at for a in list(self.arrivals)
                         if a.at > moment and a.id not in seen), None)
        return wait_until_sync(found, timeout)

    def close(self) -> None:
        self.receiver.close()


class Cluster:
    """Instances sharing one store (``storage``: the ``[storage]`` table) and one port when
    ``reuse_port`` (else each its own), the webhook plugin on each posting to one ``hook``,
    leases of LEASE_TIME seconds, ``extra`` tables merged over that; those named in ``apart``
    as if on hosts of their own (``separate()``)."""

    def __init__(self, tmp_path: Path, storage: dict[str, Any], *, reuse_port: bool = False,
                 names: tuple[str, ...] = ("a", "b"), apart: tuple[str, ...] = (),
                 extra: dict[str, Any] | None = None):
        self.storage = {**storage, "busy_timeout": BUSY_TIMEOUT}
        self.hook = Hook()
        tables = merge(merge(base_config(tmp_path), {
            "server": {"reuse_port": reuse_port, "grace_period": 2},
            "storage": self.storage,
            "plugins": {"enabled": ["webhook"], "lease_time": LEASE_TIME, "webhook": {
                "urls": [self.hook.receiver.url], "secret": SECRET,
                "delivery": {"backoff": 0.05, "max_backoff": 0.5}}},
        }), extra or {})
        port = free_port()
        self.instances = {name: Instance(tmp_path / name, name,
                                         port if reuse_port else free_port(), tables,
                                         separate() if name in apart else None)
                          for name in names}

    def start(self) -> None:
        for instance in self.instances.values():
            instance.start()  # one after the other: the first takes the leases

    def holder(self, plugin: str = "webhook") -> Instance:
        """The one instance delivering ``plugin`` (waiting until one does)."""
        def one() -> Instance | None:
            holding = [i for i in self.alive() if plugin in i.delivers()]
            assert len(holding) <= 1, [i.name for i in holding]
            return holding[0] if holding else None
        return wait_until_sync(one, LEASE_TIME + MARGIN)

    def alive(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.process.popen.poll() is None]

    def close(self) -> None:
        for instance in self.instances.values():
            instance.stop_all()
        self.hook.close()

    def events(self) -> list[Event]:
        """The whole journal, in order, read from the store."""
        store = engine(parse_config({"storage": self.storage}).storage).open(reading=True)
        try:
            found: list[Event] = []
            while page := store.events(found[-1].seq if found else 0, 1000):
                found += page
            tokens = {d.selector: token(d) for d in store.devices()}
        finally:
            store.close()
        self.stored_tokens = tokens
        return found


def token(device: Any) -> str | None:
    return device.token_msgs or device.token_calls


@dataclass
class Sent:
    selector: str
    n: int  # the device's n-th report: token tok-NNNNN
    status: int  # 0: no answer (the instance was killed, or it timed out)
    took: float
    url: str
    at: float  # when it was answered (epoch seconds)


@dataclass
class Load:
    """``threads`` clients, each reporting for its ``devices`` devices in turn (each device
    a new token each time, one report after the other), each report on a new connection to
    the next of ``urls`` (a connection of its own: with reuse_port the kernel chooses an
    instance for each). ``urls`` may change while it runs."""

    urls: list[str]
    threads: int = 3
    devices: int = 4
    pause: float = 0.02
    sent: list[Sent] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in range(self.threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(TIMEOUT + 5)

    def _run(self, t: int) -> None:
        counts = [0] * self.devices
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=TIMEOUT, limits=limits) as client:
            for i in range(t, 10**9):
                if self.stopping.is_set():
                    return
                k = i % self.devices
                selector, n = f"dev-{t}-{k}", counts[k]
                counts[k] += 1
                urls = list(self.urls)
                url = urls[i % len(urls)]
                params = {"username": f"user-{t}", "selector": selector,
                          "pushToken": f"tok-{n:05d}", "pushappid": "app.id"}
                began = time.monotonic()
                try:
                    status = client.get(url + "/token/", params=params).status_code
                except httpx.HTTPError:
                    status = 0
                self.sent.append(Sent(selector, n, status, time.monotonic() - began, url, time.time()))
                time.sleep(self.pause)

    def answered(self, url: str | None = None) -> int:
        return sum(1 for s in self.sent if s.status == 200 and url in (None, s.url))

    def wait_answered(self, more: int, url: str | None = None, timeout: float = 30) -> None:
        """Wait until ``more`` further reports (to ``url``, if given) were answered 200."""
        target = self.answered(url) + more
        wait_until_sync(lambda: self.answered(url) >= target, timeout)


def check_stored(cluster: Cluster, load: Load) -> list[Event]:
    """Every report answered 200 is in the journal exactly once (a report left unanswered at
    most once), each device's events in the order its reports were sent, and each device's
    row holds its last event's token; the journal."""
    events = cluster.events()
    journaled: dict[str, list[int]] = {}
    for event in events:
        assert event.kind == "registered" and event.after is not None, event
        tok = token(event.after)
        assert tok is not None and tok.startswith("tok-"), event
        journaled.setdefault(event.selector, []).append(int(tok[4:]))
    answered: dict[str, set[int]] = {}
    for sent in load.sent:
        if sent.status == 200:
            answered.setdefault(sent.selector, set()).add(sent.n)
    assert set(answered) <= set(journaled), set(answered) - set(journaled)
    for selector, ns in journaled.items():
        assert ns == sorted(set(ns)), (selector, ns)  # once each, in the order sent
        missing = answered.get(selector, set()) - set(ns)
        assert not missing, (selector, sorted(missing))
        assert cluster.stored_tokens[selector] == f"tok-{ns[-1]:05d}", selector
    unanswered = len(events) - sum(map(len, answered.values()))
    assert 0 <= unanswered <= sum(s.status != 200 for s in load.sent)
    print(f"{len(load.sent)} reports sent, {load.answered()} answered 200, "
          f"{len(events)} events journaled ({unanswered} of unanswered reports)")
    return events


def check_delivered(hook: Hook, events: list[Event], windows: list[tuple[float, float]]
                    ) -> int:
    """Every journal event reached the receiver (waiting for the last ones), each device's
    events first arrived in journal order, and an event arrived again only within one of
    ``windows`` (a takeover's); how many arrived again."""
    ids = {event.id for event in events}
    wait_until_sync(lambda: ids <= {a.id for a in hook.arrivals}, 30)
    seen: set[str] = set()
    first: dict[str, list[int]] = {}
    again = 0
    for arrival in list(hook.arrivals):
        if arrival.id in seen:
            again += 1
            assert any(start <= arrival.at <= end for start, end in windows), (
                f"event {arrival.seq} of {arrival.selector} arrived again at {arrival.at:.3f},"
                f" outside a takeover {windows}")
            continue
        seen.add(arrival.id)
        first.setdefault(arrival.selector, []).append(arrival.seq)
    journal: dict[str, list[int]] = {}
    for event in events:
        journal.setdefault(event.selector, []).append(event.seq)
    assert first == journal  # no event of the store's missing, none other, in order
    assert hook.receiver.forged == 0
    return again
