"""``pnbridge doctor`` on real installs: a service user created here, its files with real
owners and modes, a real database, real ports, local stand-ins for pnmediator and a webhook
receiver (nothing pushed, no event sent), and real ``systemctl --root`` on a unit tree.
Each check is one line, ok/warn/fail with the fix; the exit status is 0, 1 or 2."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from configs import free_port
from conftest import cli
from plugintools import install_plugins
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import Stub

ROOT = Path(__file__).resolve().parent.parent
USER = "pnbdoctor"
SECRET = "doctor-secret-0123456789"

if os.geteuid() != 0 and not os.environ.get("CI"):
    pytest.skip("needs root: it creates a service user and files it owns",
                allow_module_level=True)


@pytest.fixture(scope="module")
def service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory the service user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pnbridge-doctor-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
    shutil.rmtree(path)


@dataclass
class Install:
    home: Path
    config: Path
    db: Path
    audit_dir: Path
    port: int
    units: Path
    mediator: Stub
    receiver: Stub

    def doctor(self, *args: str) -> tuple[int, list[str]]:
        result = cli("doctor", "--config", str(self.config), "--user", USER,
                          "--root", str(self.units), *args)
        assert result.stderr == "", result.stderr
        return result.returncode, result.stdout.splitlines()

    def write_config(self, mediator_url: str | None = None, listen: str | None = None) -> None:
        self.config.write_text(f'''
[server]
listen = ["{listen or f"127.0.0.1:{self.port}"}"]
[storage]
path = "{self.db}"
[auth]
reporter = "secret"
secret = "{SECRET}"
[plugins]
enabled = ["pnmediator", "webhook", "auditlog"]
[plugins.pnmediator]
url = "{mediator_url or self.mediator.url}"
timeout = 2.0
[plugins.webhook]
urls = ["{self.receiver.url}"]
secret = "{SECRET}"
timeout = 2.0
[plugins.auditlog]
path = "{self.audit_dir / "audit.jsonl"}"
''')


@pytest.fixture
async def install(home, service_user, nursery) -> Install:
    """What docs/install.md sets up, owned by the service user; the units enabled."""
    uid, gid = service_user.pw_uid, service_user.pw_gid
    state, logs = home / "lib", home / "log"
    for directory in (state, logs):
        directory.mkdir(mode=0o750)
        os.chown(directory, uid, gid)
    db = state / "pnbridge.db"
    SQLiteStore(str(db)).conn.close()
    for path in state.iterdir():
        os.chown(path, uid, gid)
    units = home / "image"
    (units / "etc/systemd/system").mkdir(parents=True)
    for unit in (ROOT / "systemd").iterdir():
        shutil.copy(unit, units / "etc/systemd/system")
    subprocess.run(["systemctl", f"--root={units}", "enable", "pnbridge.service"],
                   check=True, capture_output=True)
    mediator = await nursery.start(Stub().serve)
    receiver = await nursery.start(Stub().serve)
    done = Install(home, home / "pnbridge.toml", db, logs, free_port(), units, mediator,
                   receiver)
    done.write_config()
    done.config.chmod(0o600)
    os.chown(done.config, uid, gid)
    return done


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


async def run(install: Install, *args: str) -> tuple[int, list[str]]:
    return await trio.to_thread.run_sync(lambda: install.doctor(*args))


def line(lines: list[str], start: str) -> str:
    found = [text for text in lines if text.startswith(start)]
    assert len(found) == 1, "\n".join(lines)
    return found[0]


async def test_hook_doctor_a_good_install_is_all_ok_and_changes_nothing(install):
    before = digest(install.db.parent)
    status, lines = await run(install)
    assert status == 0, "\n".join(lines)
    assert all(text.startswith("ok    ") for text in lines), "\n".join(lines)
    for start in (
        f"ok    config {install.config} is valid",
        f"ok    {USER} reads the config {install.config}",
        f"ok    {USER} writes the database directory {install.db.parent}",
        f"ok    database {install.db}: schema version",
        f"ok    listen 127.0.0.1:{install.port} is free",
        f"ok    plugin pnmediator: pnmediator at {install.mediator.url} answers (HTTP 405)",
        f"ok    plugin webhook: receiver {install.receiver.url} answers (HTTP 405)",
        f"ok    plugin auditlog: writes the audit log {install.audit_dir / 'audit.jsonl'}",
        "ok    systemd: pnbridge is enabled",
    ):
        line(lines, start)
    # No push, no event: a HEAD each, nothing created, the database untouched.
    assert install.mediator.requests == [] and install.mediator.other_requests == 1
    assert install.receiver.requests == [] and install.receiver.other_requests == 1
    assert list(install.audit_dir.iterdir()) == []
    assert digest(install.db.parent) == before


async def test_a_corrupt_database_fails(install):
    data = bytearray(install.db.read_bytes())
    page = 4096
    assert len(data) > 2 * page
    data[page:] = os.urandom(len(data) - page)
    install.db.write_bytes(bytes(data))
    status, lines = await run(install)
    assert status == 2
    assert line(lines, "fail  database ").startswith(
        f"fail  database {install.db}")
    assert "restore it from a backup" in line(lines, "fail  database ")


async def test_a_foreign_or_missing_database(install):
    install.db.unlink()
    status, lines = await run(install)
    assert status == 1, "\n".join(lines)
    assert line(lines, "warn  database").endswith("(pnbridge serve creates it; or set "
                                                 "[storage] path)")
    other = install.db.with_name("other.db")
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE crm (id INTEGER)")
    conn.close()
    install.db = other
    install.write_config()
    status, lines = await run(install)
    assert status == 2
    line(lines, f"fail  database {other} is not a pnbridge database")


async def test_a_port_held_by_another_program_fails(install):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", install.port))
        squatter.listen()
        status, lines = await run(install)
    assert status == 2
    text = line(lines, f"fail  listen 127.0.0.1:{install.port} is in use by {os.getpid()} ")
    assert "change the port" in text


async def test_a_port_held_by_pnbridge_is_ok(install, start_daemon):
    await start_daemon({"server": {"listen": [f"127.0.0.1:{install.port}"]}})
    status, lines = await run(install)
    assert status == 0, "\n".join(lines)
    line(lines, f"ok    listen 127.0.0.1:{install.port} is held by a running pnbridge")


async def test_an_unreachable_pnmediator_fails_and_nothing_is_pushed(install):
    closed = free_port()
    install.write_config(mediator_url=f"http://127.0.0.1:{closed}/pnm2/send")
    status, lines = await run(install)
    assert status == 2
    text = line(lines, "fail  plugin pnmediator: ")
    assert f"pnmediator at http://127.0.0.1:{closed}/pnm2/send: unreachable: " in text
    assert "check [plugins.pnmediator] url" in text


async def test_an_audit_directory_the_service_user_cannot_write_fails(install):
    os.chown(install.audit_dir, 0, 0)
    install.audit_dir.chmod(0o755)
    status, lines = await run(install)
    assert status == 2
    text = line(lines, "fail  plugin auditlog: ")
    assert f"{USER} cannot write/enter {install.audit_dir} (root:root 0755)" in text
    assert f"chown {USER}: {install.audit_dir}" in text


async def test_files_the_service_user_cannot_read_fail(install):
    os.chown(install.config, 0, 0)
    os.chown(install.db, 0, 0)
    status, lines = await run(install)
    assert status == 2
    assert f"{USER} cannot read {install.config} (root:root 0600)" in line(
        lines, f"fail  {USER} reads the config")
    assert f"chgrp {USER} {install.config}; chmod 640" in line(
        lines, f"fail  {USER} reads the config")
    assert f"{USER} cannot read/write {install.db}" in line(
        lines, f"fail  {USER} reads and writes: ")
    # root itself can: the default user is the one running the command.
    result = await trio.to_thread.run_sync(lambda: cli(
        "doctor", "--config", str(install.config), "--root", str(install.units)))
    assert result.returncode == 0, result.stdout


async def test_an_invalid_config_fails_alone(install):
    install.config.write_text('[server]\nlisten = ["nowhere"]\n[plugins.webhook]\nurls = []\n')
    status, lines = await run(install)
    assert status == 2
    assert all(text.startswith(f"fail  config {install.config}: ") for text in lines), lines
    assert any("server.listen" in text for text in lines), lines
    assert install.mediator.other_requests == 0


async def test_a_disabled_unit_and_an_unknown_user_warn_or_fail(install):
    subprocess.run(["systemctl", f"--root={install.units}", "disable", "pnbridge.service"],
                   check=True, capture_output=True)
    status, lines = await run(install)
    assert status == 1
    assert line(lines, "warn  systemd: ") == (
        "warn  systemd: pnbridge.service is disabled  (systemctl enable --now pnbridge)")
    result = await trio.to_thread.run_sync(lambda: cli(
        "doctor", "--config", str(install.config), "--user", "no-such-user-x"))
    assert result.returncode == 2
    assert result.stdout.startswith("fail  --user no-such-user-x: no such user")


def test_hook_doctor_of_a_plugins_directory_plugin(tmp_path):
    """A plugin's own findings (a plain tuple will do), a doctor hook that raises or answers
    garbage, and a plugin without the hook: one line each, the plugin named."""
    install_plugins(tmp_path / "plugins", "doctor/spool", "doctor/boom", "doctor/garbage",
                    "doctor/quiet")
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'''
[server]
listen = ["127.0.0.1:0"]
[storage]
path = "{tmp_path / "pnbridge.db"}"
[plugins]
enabled = ["spool", "boom", "garbage", "quiet"]
paths = ["{tmp_path / "plugins"}"]
''')
    result = cli("doctor", "--config", str(config))
    assert result.returncode == 2, result.stdout
    lines = result.stdout.splitlines()
    user = pwd.getpwuid(os.getuid()).pw_name
    assert f"warn  plugin spool: spool is nearly full for {user}  (empty /var/spool/x)" in lines
    assert ("fail  plugin boom: doctor failed: RuntimeError: no CRM configured  (report it "
            "to the plugin's author)") in lines
    assert line(lines, "fail  plugin garbage: doctor failed: ")
    assert "ok    plugin quiet: enabled (it has no checks)" in lines
