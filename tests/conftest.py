"""Shared fixtures: the real daemon in-process (hypercorn on a free loopback port) or as a
``pnbridge serve`` child process, each with a real SQLite file in a temp directory."""

from __future__ import annotations

import copy
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from pnbridge.config import Config, parse_config
from pnbridge.server import run
from pnbridge.store import Store


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, table by table."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Daemon:
    """A daemon running in the test's trio loop."""

    url: str
    config: Config
    shutdown: trio.Event
    client: httpx.AsyncClient

    @property
    def db_path(self) -> str:
        return self.config.storage.path

    def store(self) -> Store:
        """A second connection to the daemon's database, for looking at what it stored."""
        return Store(self.db_path)


StartDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def start_daemon(tmp_path: Path, nursery: trio.Nursery) -> StartDaemon:
    """Start ``pnbridge.server.run`` on 127.0.0.1:0 with a database in tmp_path.

    Call it with a config dict (merged over the test defaults). The daemon stops when the
    test ends; ``daemon.shutdown.set()`` stops it gracefully earlier.
    """
    clients: list[httpx.AsyncClient] = []

    async def start(overrides: dict[str, Any] | None = None) -> Daemon:
        base = {
            "server": {"listen": ["127.0.0.1:0"]},
            "storage": {"path": str(tmp_path / "pnbridge.db")},
            # Rate limits are on by default; tests of anything else send faster than apps.
            "reporter": {"client_rate": 0, "username_rate": 0},
        }
        config = parse_config(merge(base, overrides or {}))
        shutdown = trio.Event()
        binds = await nursery.start(partial(run, config, shutdown=shutdown))
        client = httpx.AsyncClient(base_url=binds[0])
        clients.append(client)
        return Daemon(url=binds[0], config=config, shutdown=shutdown, client=client)

    yield start
    for client in clients:
        await client.aclose()


@dataclass
class Process:
    """A ``pnbridge serve`` child process; its stderr is collected line by line."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Block until a stderr line matches ``pattern``; fail with the log so far."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        for line in self.lines:
            if found := regex.search(line):
                return found
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if found := regex.search(line):
                return found
        raise AssertionError(f"no log line matching {pattern!r}; log:\n{self.log}")

    @property
    def log(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return "".join(self.lines)

    def url(self) -> str:
        return self.wait_for(r"listening on (http://\S+?)[,\s]").group(1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        return self.popen.wait(timeout)


def pnbridge(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the ``pnbridge`` command as a user would; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pnbridge", *args],
        capture_output=True, text=True, timeout=60, **kwargs,
    )


@pytest.fixture
def spawn(tmp_path: Path):
    """Start ``pnbridge serve --config FILE`` from TOML text; stop it after the test."""
    started: list[Process] = []

    def start(toml: str, *, pass_fds: tuple[int, ...] = (), env: dict[str, str] | None = None
              ) -> Process:
        path = tmp_path / "pnbridge.toml"
        path.write_text(toml)
        popen = subprocess.Popen(
            [sys.executable, "-m", "pnbridge", "serve", "--config", str(path)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            pass_fds=pass_fds, env={**os.environ, **(env or {})}, cwd=tmp_path,
        )
        process = Process(popen)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()
