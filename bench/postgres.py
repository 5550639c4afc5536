"""A PostgreSQL server for the benchmarks, as tests/postgres.py starts one for the tests:
Debian's ``initdb`` and ``pg_ctl`` on a temporary directory, a loopback port and a unix
socket there, as an unprivileged system user when run as root; fsync on (every answered
report durable, as on SQLite); stopped by its postmaster's PID."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM_USER = "pnbridge-pg"
ROLE = "pnbridge"


def bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name))
    if not found:
        raise SystemExit("bench: PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return found[-1].parent


class Postgres:
    """One cluster in a temporary directory; ``url(db)`` over loopback TCP with a password."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="pnbridge-bench-pg-"))
        self.data, self.sock = self.dir / "data", self.dir / "sock"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.password = secrets.token_hex(8)
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", SYSTEM_USER], check=True)
                self.user = pwd.getpwnam(SYSTEM_USER)
        self.sock.mkdir()
        (self.dir / "pwfile").write_text(self.password + "\n")
        if self.user is not None:
            for path in (self.dir, self.sock, self.dir / "pwfile"):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", ROLE, "--pwfile", str(self.dir / "pwfile"),
                  "--auth-local", "trust", "--auth-host", "scram-sha-256", "-E", "UTF8",
                  "--locale", "C", "--no-sync")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.sock}'\nmax_connections = 200\n"
                       "shared_buffers = 128MB\nfsync = on\nsynchronous_commit = on\n")
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                  "-s")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.dir, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database ``name``; its URL."""
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """A fast shutdown (SIGINT to the postmaster), then the directory removed."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
