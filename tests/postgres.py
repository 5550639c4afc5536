"""A real PostgreSQL server for the tests, from Debian's packages (``postgresql``): ``initdb``
on a temporary directory, ``pg_ctl start`` on a loopback port and a unix socket in that
directory, as an unprivileged system user when the tests run as root. Stopped by its
postmaster's PID (SIGINT: fast shutdown; SIGKILL if it lingers). Its log stays in the
directory (``PostgresServer.log``). Fsync stays on: the durability tests rely on it."""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from configs import free_port

ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "pnbridge-pg"  # the server's owner when the tests run as root
ROLE = "pnbridge"  # the superuser the tests and the daemon connect as


def bindir() -> Path | None:
    """The newest installed version's bin directory (``/usr/lib/postgresql/<n>/bin``)."""
    versions = sorted((p for p in ROOT.glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)])
    return versions[-1] if versions else None


def missing() -> str | None:
    """Why no server can be started here, or None."""
    if bindir() is None:
        return f"PostgreSQL is not installed (no {ROOT}/<version>/bin/initdb: apt install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install '.[postgresql]')"
    return None


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory (under /tmp: the server's user must
    reach it); ``url(db)`` to connect over loopback TCP with a password."""

    def __init__(self) -> None:
        found = bindir()
        assert found is not None, missing()
        self.bin = found
        self.dir = Path(tempfile.mkdtemp(prefix="pnbridge-pg-"))
        self.data, self.socket_dir = self.dir / "data", self.dir / "sock"
        self.log = self.dir / "postgresql.log"
        self.port = free_port()
        self.password = "pg-" + secrets.token_hex(8)
        self.user = _system_user() if os.geteuid() == 0 else None
        self.pid: int | None = None
        self._names = itertools.count(1)
        self._background = ThreadPoolExecutor(1, thread_name_prefix="postgres-test-server")
        self._spare: Future[str] | None = None  # the next test's database, being made
        self.socket_dir.mkdir()
        (self.dir / "pwfile").write_text(self.password + "\n")
        if self.user is not None:
            for path in (self.dir, self.socket_dir, self.dir / "pwfile"):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "--pgdata", str(self.data), "--username", ROLE,
                  "--pwfile", str(self.dir / "pwfile"), "--auth-local", "trust",
                  "--auth-host", "scram-sha-256", "--encoding", "UTF8", "--locale", "C",
                  "--no-sync")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.socket_dir}'\n"
                       "shared_buffers = 16MB\nmax_connections = 200\nfsync = on\n"
                       "synchronous_commit = on\nlog_min_messages = warning\n"
                       "log_line_prefix = '%m [%p] %d '\n")

    def _run(self, program: str, *args: str, timeout: float = 60) -> str:
        command = [str(self.bin / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout}"
                               f"{done.stderr}\n{self.log_text()}")
        return done.stdout

    def log_text(self) -> str:
        """The server's log so far (for a failure's message)."""
        try:
            return f"--- {self.log}:\n" + self.log.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    # -- the server ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "start", "--pgdata", str(self.data), "--log", str(self.log),
                  "--wait", "--timeout", "60", "--silent")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, timeout: float = 30) -> None:
        """A fast shutdown (SIGINT to the postmaster: sessions are cut, nothing committed is
        lost); SIGKILL if it is still there after ``timeout``."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        if not _wait_gone([self.pid], timeout):
            self.kill()
        self.pid = None

    def kill(self) -> None:
        """kill -9 the postmaster and every process it started (each backend is a session of
        its own): a crash; the next ``start`` recovers from the WAL."""
        if self.pid is None:
            return
        processes = [self.pid, *_children(self.pid)]
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert _wait_gone(processes, 30), f"postgres {processes} survived SIGKILL"
        # Its lock files name a dead process (a zombie until init reaps it, which postgres
        # would take for a running postmaster): gone, as after a reboot.
        for lock in (self.data / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")):
            lock.unlink(missing_ok=True)
        self.pid = None

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The server stopped for the block (fast shutdown), started again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def remove(self) -> None:
        """Stop the server and remove its directory."""
        self._background.shutdown(wait=True, cancel_futures=True)
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases ------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    def admin(self):  # psycopg.Connection: imported only where psycopg is installed
        """A superuser connection over the unix socket (autocommit)."""
        import psycopg
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=ROLE,
                               dbname="postgres", autocommit=True)

    def create_database(self) -> str:
        """A new empty database; its name. The next one is made meanwhile, on the server's
        background thread (a CREATE DATABASE copies template1 and syncs: 0.3 s)."""
        name = None
        if self._spare is not None:
            with contextlib.suppress(Exception):  # the server was stopped under it
                name = self._spare.result(60)
        self._spare = None
        if name is None:
            name = self._create()
        if self.pid is not None:
            self._spare = self._background.submit(self._create)
        return name

    def _create(self) -> str:
        name = f"test_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def release_database(self, name: str) -> None:
        """Cut the sessions still on ``name`` (a test's leftovers), on the background thread.
        It is not dropped: a drop waits for a checkpoint (0.3 s and more); the databases go
        with the server's directory at the end of the run (8 MB each)."""
        if self.pid is not None:
            self._background.submit(self._release, name)

    def _release(self, name: str) -> None:
        with contextlib.suppress(Exception), self.admin() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def _children(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float) -> bool:
    """Whether every process of ``pids`` has ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
