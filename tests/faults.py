"""Helpers for the fault tests: a daemon config with a recorder plugin, blocking HTTP calls,
and the storage faults themselves (a lock, a read-only file, a full disk)."""

from __future__ import annotations

import contextlib
import os
import resource
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
from plugintools import install_plugins, lines
from reports import report

API_KEY = "k" * 24
TOKEN = "QVBBOT-" + "t" * 40


def daemon_toml(tmp_path: Path, db: Path, *, busy_timeout: float = 0.3, extra: str = "",
                enabled: tuple[str, ...] = ("recorder",), server: str = "",
                access_log: bool = False, url: str | None = None) -> str:
    """A config: loopback listen, ``db`` (or PostgreSQL at ``url``), no rate limits (the tests
    flood on purpose), the push API with pnmediator at a closed port, and the recorder plugin
    (its file: tmp_path/recorded) with fast retries."""
    install_plugins(tmp_path / "plugins", "recorder")
    names = ", ".join(f'"{n}"' for n in (*enabled, "pnmediator"))
    return f"""\
[server]
listen = ["127.0.0.1:0"]
grace_period = 2
access_log = {str(access_log).lower()}
{server}
[storage]
path = "{db}"
busy_timeout = {busy_timeout}
{f'url = "{url}"' if url else ""}
[reporter]
client_rate = 0
username_rate = 0
[api]
keys = ["{API_KEY}"]
key_rate = 0
[api.deadlines]
NotifyTextMessage = 1.0
[plugins]
enabled = [{names}]
paths = ["{tmp_path / 'plugins'}"]
[plugins.recorder]
path = "{tmp_path / 'recorded'}"
[plugins.recorder.delivery]
backoff = 0.05
max_backoff = 0.5
[plugins.pnmediator]
url = "http://127.0.0.1:9/pnm2/send"
timeout = 0.2
{extra}"""


def report_status(client: httpx.Client, selector: str, token: str = TOKEN,
                  username: str = "1001") -> int:
    """Report a token; the status (0 when the daemon did not answer)."""
    try:
        return report(client, selector, token=token, username=username, pushappid="app.id",
                      status=None).status_code
    except httpx.HTTPError:
        return 0


def push(client: httpx.Client, username: str = "1001") -> httpx.Response:
    return client.post("/api/v1/push", json={"username": username, "verb": "NotifyTextMessage",
                                              "message": "hi"},
                       headers={"Authorization": f"Bearer {API_KEY}"})


def recorded_ids(tmp_path: Path) -> list[str]:
    """The event ids the recorder plugin saw, in order, repeats included."""
    return [line.split()[3] for line in lines(tmp_path / "recorded")]


def stored(db: Path) -> tuple[dict[str, str], list[str]]:
    """The devices in ``db`` (selector -> token_msgs) and the journal's event ids."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        devices = dict(conn.execute("SELECT selector, token_msgs FROM devices"))
        events = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY seq")]
    finally:
        conn.close()
    return devices, events


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    text = client.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if labels else name):
            return float(value)
    return 0.0


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# -- storage faults: each a context manager; the fault lasts while the block runs --------


@contextlib.contextmanager
def locked(db: Path) -> Iterator[None]:
    """Another process's connection holds the write lock."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def can_make_immutable(directory: Path) -> bool:
    probe = directory / "immutable-probe"
    probe.write_text("x")
    try:
        return _chattr("+i", probe) and _chattr("-i", probe)
    finally:
        probe.unlink(missing_ok=True)


def _chattr(flag: str, path: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[None]:
    """The database and its WAL are immutable (``chattr +i``: root ignores file modes).
    The -shm file is left alone: SQLite maps it, and a write fault there is a SIGBUS."""
    files = [db, Path(f"{db}-wal")]
    for path in files:
        assert _chattr("+i", path), f"chattr +i {path} failed"
    try:
        yield
    finally:
        for path in files:
            _chattr("-i", path)


@contextlib.contextmanager
def small_filesystem(directory: Path, size: str = "4m") -> Iterator[bool]:
    """A size-limited tmpfs at ``directory``; yields False (and mounts nothing) where
    this process may not mount."""
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(directory)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)


@contextlib.contextmanager
def disk_full(directory: Path) -> Iterator[None]:
    """Fill the filesystem of ``directory`` to the last block."""
    filler = directory / "filler"
    with open(filler, "wb") as file:
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            for _ in range(100_000):
                file.write(chunk)
                file.flush()
        with contextlib.suppress(OSError):
            for _ in range(65536):  # the last partial chunk, byte by byte
                os.write(file.fileno(), b"\0")
    try:
        yield
    finally:
        filler.unlink()


@contextlib.contextmanager
def file_size_limit(pid: int, limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE of process ``pid`` (the soft limit, so it can be raised again): its
    writes past ``limit`` bytes fail (EFBIG; Python ignores SIGXFSZ)."""
    old = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, old)
