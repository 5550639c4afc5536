"""Shared fixtures: the real daemon in-process (hypercorn on a free loopback port) or as a
``pnbridge serve`` child process, each with a real SQLite file in a temp directory."""

from __future__ import annotations

import logging
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import postgres
import pytest
import trio
from click.testing import CliRunner
from configs import base_config, config_toml, merge
from engines import StoreEngine, open_store
from notify import NotifySocket
from pnbridge.cli import main
from pnbridge.config.tables import Config, parse_config
from pnbridge.server import run
from pnbridge.storage.interface import Store
from pnmediator_stub import Stub
from trio.testing import MockClock
from webhook_receiver import Receiver

# Every password and secret the tests send. test_secrets_at_rest runs last and looks for
# them in everything the test run left behind: databases, journals, plugin output, logs.
PASSWORDS = {"alice": "alice-Pa55word-x7Q", "bob": "bob-Secr3t-Words-q9Z"}
SECRET = "shared-secret-4f1c9a7e2b"
SEED_PASSWORD = "12345678"  # in the seeds' example requests
SENT_SECRETS = (*PASSWORDS.values(), SECRET, SEED_PASSWORD)

_run_log: dict[str, Path] = {}


@pytest.fixture(scope="session", autouse=True)
def run_log(tmp_path_factory: pytest.TempPathFactory):
    """Every pnbridge log record of the run (in-process daemons, at debug level) goes to a
    file in the run's temp directory, next to what spawned daemons and the CLI printed."""
    path = _run_log["dir"] = tmp_path_factory.getbasetemp()
    handler = logging.FileHandler(path / "pnbridge-in-process.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("pnbridge")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield path
    logger.removeHandler(handler)
    handler.close()


def _keep_output(*texts: str | None) -> None:
    if "dir" in _run_log:
        with open(_run_log["dir"] / "pnbridge-processes.log", "a", encoding="utf-8") as file:
            file.writelines(text for text in texts if text)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``run_last`` run after all others. Every test on the PostgreSQL test
    server is marked ``postgresql`` (``-m "not postgresql"`` leaves them out)."""
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgresql)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "run_last: run after every other test")
    config.addinivalue_line("markers", "postgresql: runs on the PostgreSQL test server")


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
        return open_store(self.config.storage)


StartDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def start_daemon(tmp_path: Path, nursery: trio.Nursery) -> StartDaemon:
    """Start ``pnbridge.server.run`` on 127.0.0.1:0 with a database in tmp_path.

    Call it with a config dict (merged over the test defaults). The daemon stops when the
    test ends; ``daemon.shutdown.set()`` stops it gracefully earlier.
    """
    clients: list[httpx.AsyncClient] = []

    async def start(overrides: dict[str, Any] | None = None) -> Daemon:
        config = parse_config(merge(base_config(tmp_path), overrides or {}))
        shutdown = trio.Event()
        binds = await nursery.start(partial(run, config, shutdown=shutdown))
        client = httpx.AsyncClient(base_url=binds[0])
        clients.append(client)
        return Daemon(url=binds[0], config=config, shutdown=shutdown, client=client)

    yield start
    for client in clients:
        await client.aclose()


@pytest.fixture
def virtual_clock() -> MockClock:
    """trio's virtual clock for a daemon in the test's loop: time stands still while anything
    runs and jumps to the next deadline once the loop has been idle for 0.1 s of real time.
    (pytest-trio's ``autojump_clock`` jumps at once, also while a worker thread writes to
    SQLite: a request's timeout passes before the daemon could answer it.)"""
    return MockClock(autojump_threshold=0.1)


@pytest.fixture
async def stub(nursery: trio.Nursery) -> Stub:
    """A pnmediator stand-in (tests/pnmediator_stub.py) on a free loopback port."""
    return await nursery.start(Stub().serve)


@pytest.fixture
def receivers():
    """Start webhook receivers (tests/webhook_receiver.py): ``receivers(**kwargs)``."""
    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        started.append(Receiver(**kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def notify(tmp_path: Path):
    """The systemd side of sd_notify (tests/notify.py), at tmp_path/notify.sock."""
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


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
    result = subprocess.run(
        [sys.executable, "-m", "pnbridge", *args],
        capture_output=True, text=True, timeout=60, **kwargs,
    )
    _keep_output(result.stdout, result.stderr)
    return result


def on_terminal(*args: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """Run ``pnbridge ARGS`` with stderr on a pseudo-terminal; what the terminal showed."""
    controller, terminal = pty.openpty()
    result = subprocess.run([sys.executable, "-m", "pnbridge", *args], stdout=subprocess.PIPE,
                            stderr=terminal, text=True, timeout=60)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return result, shown


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run the ``pnbridge`` command in this process with click's CliRunner: its exit code,
    stdout and stderr as ``pnbridge()`` gives them, without starting an interpreter. For
    tests where a separate process is not the point (``env`` is added to this one's)."""
    result = CliRunner().invoke(main, list(args), input=input, env=env, prog_name="pnbridge",
                                catch_exceptions=False)
    _keep_output(result.stdout, result.stderr)
    return subprocess.CompletedProcess(["pnbridge", *args], result.exit_code, result.stdout,
                                       result.stderr)


@pytest.fixture
def spawn(tmp_path: Path):
    """Start ``pnbridge serve --config FILE`` from TOML text, or from tables merged over the
    base config of tests/configs.py; stop it after the test."""
    started: list[Process] = []

    def start(config: str | dict[str, Any], *, pass_fds: tuple[int, ...] = (),
              env: dict[str, str] | None = None) -> Process:
        path = tmp_path / "pnbridge.toml"
        path.write_text(config if isinstance(config, str) else config_toml(tmp_path, config))
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
        _keep_output(process.log)


# -- PostgreSQL (tests/postgres.py) -----------------------------------------------------------


def postgres_missing() -> None:
    """Skip the test with the reason PostgreSQL cannot run here; fail it when ``CI`` is set."""
    if problem := postgres.missing():
        if os.environ.get("CI"):
            pytest.fail(f"CI: {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """One PostgreSQL server for the whole run (started on first use): stop and start it, or
    ``kill()`` it, mid-test; a test that does must leave it running."""
    postgres_missing()
    server = postgres.PostgresServer()
    try:
        server.start()
    except BaseException:
        print(server.log_text())
        server.remove()
        raise
    yield server
    server.remove()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: postgres.PostgresServer) -> str:
    """The test server's URL (its ``postgres`` database); tests use ``pg_database_url``."""
    return postgres_server.url()


@pytest.fixture
def pg_database_url(postgres_server: postgres.PostgresServer,
                    request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database of its own for the test (its sessions cut after it)."""
    if postgres_server.pid is None:  # a test stopped it and failed before starting it again
        postgres_server.start()
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(postgres_server.log_text())
    if postgres_server.pid is None:
        postgres_server.start()
    postgres_server.release_database(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """The call's report on the test item (``rep_call``), for fixtures' teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> StoreEngine:
    """Each store engine in turn: SQLite at tmp_path/pnbridge.db, or a fresh PostgreSQL
    database on the run's server (``path`` kept: the running daemon's record is beside it)."""
    if request.param == "sqlite":
        return StoreEngine("sqlite", {"path": str(tmp_path / "pnbridge.db")})
    return request.getfixturevalue("postgresql_engine")


@pytest.fixture
def postgresql_engine(postgres_server: postgres.PostgresServer, pg_database_url: str,
                      tmp_path: Path) -> StoreEngine:
    """PostgreSQL only (a test of what only it does): a fresh database on the run's server."""
    storage = {"path": str(tmp_path / "pnbridge.db"), "url": pg_database_url}
    return StoreEngine("postgresql", storage, postgres_server)
