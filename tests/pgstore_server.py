"""A real PostgreSQL server for the engine's own tests (until tests/postgres.py's shared
fixture lands): Debian's initdb and pg_ctl on a temporary directory, a unix socket there and
a loopback port, run as ``nobody`` when root, stopped by its PID. The superuser (trust on
the socket) makes databases; the role ``pnb`` (password ``PASSWORD``) logs in over TCP with
scram-sha-256."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PASSWORD = "s3cret-Pw-7f1c"


def _bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One initdb'ed cluster; ``start``/``stop`` (by PID) as often as a test needs."""

    def __init__(self) -> None:
        bindir = _bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin)")
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="pnbridge-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        self.port = _free_port()
        self.user = "nobody" if os.getuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.socket_dir}'\n"
                       "fsync = on\nmax_connections = 200\n")
        self.pid: int | None = None
        self.start()
        self.psql(f"CREATE ROLE pnb LOGIN PASSWORD '{PASSWORD}'")

    def _run(self, tool: str, *args: str) -> str:
        command = [str(self.bin / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True,
                              cwd=self.root).stdout

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-t", "30", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        """Stop it by its PID (SIGINT: fast, SIGQUIT: immediate), waiting until gone."""
        if self.pid is None:
            return
        os.kill(self.pid, signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        for _ in range(600):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.pid = None

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run("psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U",
                         "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAtc", sql)

    def database(self, name: str) -> str:
        """A new database ``name`` owned by ``pnb``; its URL (TCP, no password in it)."""
        self.psql(f"CREATE DATABASE {name} OWNER pnb")
        return f"postgresql://pnb@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _server() -> Iterator[Server]:
    if _bin() is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI: PostgreSQL must be installed (.ci/run installs it)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = Server()
    try:
        yield server
    finally:
        server.close()


# A module imports it to share one server per test session.
pg_server = pytest.fixture(scope="session")(_server)
