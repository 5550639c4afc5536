"""The config and users file on a systemd host, as docs/install.md lays them out: root owns
them, the service user reads them through its group (root:SERVICE 0640 in a root:SERVICE
0750 directory). A real system user is created for each test and removed after."""

from __future__ import annotations

import os
import pty
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Process, pnbridge

# Runs the pnbridge command as another user: the interpreter lives under /root, which the
# user cannot enter, so the modules are loaded first and the privileges dropped after.
AS_USER = """
import os, sys
import pnbridge.cli, pnbridge.server
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([gid]); os.setgid(gid); os.setuid(uid)
sys.argv = ["pnbridge", *sys.argv[3:]]
pnbridge.cli.main()
"""


@dataclass
class Host:
    """A service user and an /etc/pnbridge-like directory for it."""

    user: str
    uid: int
    gid: int
    root: Path  # a 0755 scratch directory every user can enter
    etc: Path  # root:user 0750, as install.md's `install -d`
    config: Path
    users: Path
    database: Path

    def as_user(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", AS_USER, str(self.uid), str(self.gid), *args],
            capture_output=True, text=True, timeout=60, cwd=self.root, **kwargs,
        )


@pytest.fixture
def host() -> Iterator[Host]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("these tests need root (to create a system user) and CI is set")
        pytest.skip("needs root: creates a system user and files owned by it")
    name = f"pnbt{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                    "--shell", "/usr/sbin/nologin", name], check=True)
    root = Path(tempfile.mkdtemp(prefix="pnbridge-access-", dir="/tmp"))
    try:
        root.chmod(0o755)
        import pwd

        entry = pwd.getpwnam(name)
        etc = root / "etc"
        etc.mkdir(mode=0o750)
        os.chown(etc, 0, entry.pw_gid)
        state = root / "state"
        state.mkdir(mode=0o750)
        os.chown(state, entry.pw_uid, entry.pw_gid)
        config, users = etc / "pnbridge.toml", etc / "users"
        database = state / "pnbridge.db"
        config.write_text(
            f'[auth]\nreporter = "digest"\nrealm = "pbx"\nusers_file = "{users}"\n'
            f'[storage]\npath = "{database}"\n'
        )
        os.chown(config, 0, entry.pw_gid)
        config.chmod(0o640)
        yield Host(name, entry.pw_uid, entry.pw_gid, root, etc, config, users, database)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["userdel", name], check=False)
        subprocess.run(["groupdel", name], check=False, capture_output=True)


def add(host: Host, username: str, *, as_service: bool = False) -> subprocess.CompletedProcess:
    args = ("users", "add", username, "--password-stdin", "--config", str(host.config))
    if as_service:
        return host.as_user(*args, input="secret\n")
    return pnbridge(*args, input="secret\n")


def owner(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


# -- the users file ------------------------------------------------------------------------


def test_a_new_users_file_is_root_service_group_0640_and_the_service_reads_it(host):
    result = add(host, "alice")
    assert result.returncode == 0, result.stderr
    assert owner(host.users) == (0, host.gid, 0o640)
    # The service user can use it: it reads the users file (users list) and check-config
    # as it neither warns nor fails.
    listed = host.as_user("users", "list", "--config", str(host.config))
    assert listed.returncode == 0 and "alice" in listed.stdout, listed.stderr
    checked = pnbridge("check-config", "--config", str(host.config), "--user", host.user)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr


@pytest.mark.parametrize("mode", [0o640, 0o600, 0o660])
def test_users_add_and_remove_as_root_keep_owner_group_and_mode(host, mode):
    add(host, "alice")
    os.chown(host.users, host.uid, host.gid)  # whatever the operator chose
    host.users.chmod(mode)
    assert add(host, "bob").returncode == 0
    assert owner(host.users) == (host.uid, host.gid, mode)
    removed = pnbridge("users", "remove", "alice", "--config", str(host.config))
    assert removed.returncode == 0, removed.stderr
    assert owner(host.users) == (host.uid, host.gid, mode)
    assert "bob:pbx:" in host.users.read_text() and "alice" not in host.users.read_text()
    assert sorted(p.name for p in host.etc.iterdir()) == ["pnbridge.toml", "users"]  # no temp


@pytest.mark.parametrize("exists", [True, False])
def test_users_add_as_the_service_user_refuses_in_one_line(host, exists):
    if exists:
        add(host, "alice")
    before = host.users.read_bytes() if exists else None
    result = host.as_user("users", "add", "bob", "--password-stdin", "--config",
                          str(host.config), input="secret\n")
    assert result.returncode == 1
    assert result.stderr == (
        f"pnbridge: cannot write {host.users}: permission denied (run as root)\n"
    )
    assert "Traceback" not in result.stdout + result.stderr
    if exists:
        assert host.users.read_bytes() == before
    else:
        assert not host.users.exists()
    assert sorted(p.name for p in host.etc.iterdir()) == ["pnbridge.toml", *(["users"] * exists)]


def test_users_add_as_the_service_user_refuses_before_asking_the_password(host):
    primary, secondary = pty.openpty()
    try:
        result = host.as_user("users", "add", "bob", "--config", str(host.config),
                              stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"pnbridge: cannot write {host.users}: permission denied (run as root)\n"
    )


def test_users_add_into_a_missing_directory_is_one_line(host):
    config = host.root / "other.toml"
    config.write_text('[auth]\nreporter = "basic"\nusers_file = "/nonexistent/pnbridge/users"\n')
    result = pnbridge("users", "add", "bob", "--password-stdin", "--config", str(config),
                      input="secret\n")
    assert result.returncode == 1
    assert result.stderr == ("pnbridge: cannot write /nonexistent/pnbridge/users: "
                             "no such file or directory\n")


# -- check-config --user -------------------------------------------------------------------


def test_check_config_names_each_file_the_service_user_cannot_use(host):
    add(host, "alice")
    os.chown(host.users, 0, 0)  # what `users add` used to leave: root:root 0600
    host.users.chmod(0o600)
    plugins = host.root / "plugins"
    plugins.mkdir(mode=0o700)
    host.database.write_bytes(b"")
    os.chown(host.database, 0, 0)
    host.database.chmod(0o644)
    text = host.config.read_text() + f'[plugins]\npaths = ["{plugins}"]\n'
    host.config.write_text(text)
    result = pnbridge("check-config", "--config", str(host.config), "--user", host.user)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    who = f"the service user {host.user}"
    assert errors == [
        f"pnbridge: error: auth.users_file: {who} cannot read {host.users} (root:root 0600)",
        f"pnbridge: error: plugins.paths: {who} cannot read {plugins} (root:root 0700)",
        f"pnbridge: error: storage.path: {who} cannot read and write {host.database} "
        "(root:root 0644)",
    ]
    # The database's directory, and the config itself.
    host.database.unlink()
    os.chown(host.database.parent, 0, 0)
    os.chown(host.config, 0, 0)
    host.config.chmod(0o600)
    host.users.chmod(0o644)
    plugins.chmod(0o755)
    result = pnbridge("check-config", "--config", str(host.config), "--user", host.user)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"pnbridge: error: config file: {who} cannot read {host.config} (root:root 0600)",
        f"pnbridge: error: storage.path's directory: {who} cannot read and write "
        f"{host.database.parent} (root:root 0750)",
    ]
    # A directory on the way that it cannot enter.
    host.config.chmod(0o644)
    host.database.parent.chmod(0o777)
    host.etc.chmod(0o700)
    result = pnbridge("check-config", "--config", str(host.config), "--user", host.user)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"pnbridge: error: config file: {who} cannot enter {host.etc} (root:{host.user} 0700)",
        f"pnbridge: error: auth.users_file: {who} cannot enter {host.etc} "
        f"(root:{host.user} 0700)",
    ]


def test_check_config_user_must_exist(host):
    add(host, "alice")
    result = pnbridge("check-config", "--config", str(host.config), "--user", "nosuchuser")
    assert (result.returncode, result.stderr) == (1, "pnbridge: --user nosuchuser: no such user\n")


# -- the permission warning ----------------------------------------------------------------


def test_install_md_modes_give_no_warning_as_root_or_as_the_service(host):
    add(host, "alice")
    as_root = pnbridge("check-config", "--config", str(host.config), "--user", host.user)
    as_service = host.as_user("check-config", "--config", str(host.config))
    for result in (as_root, as_service):
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout == f"{host.config}: OK\n"


@pytest.mark.parametrize(("mode", "group", "warning"), [
    (0o644, "service", "is readable by others (mode 0644): chmod o-rwx it"),
    (0o604, "service", "is readable by others (mode 0604): chmod o-rwx it"),
    (0o660, "service", "is writable by its group (mode 0660): chmod g-wx it"),
    (0o640, "root", "is readable by group root, not the service's: chgrp SERVICE it, "
                    "or chmod g-r it"),
])
def test_exposed_files_warn_with_the_fix(host, mode, group, warning):
    add(host, "alice")
    for path, what in ((host.config, "config file"), (host.users, "users file")):
        os.chown(path, 0, host.gid if group == "service" else 0)
        path.chmod(mode)
        result = pnbridge("check-config", "--config", str(host.config), "--user", host.user)
        expected = warning.replace("SERVICE", host.user)
        assert f"WARNING: the {what} {path} {expected} (it holds credentials)" in result.stderr
        os.chown(path, 0, host.gid)
        path.chmod(0o640)


def test_a_file_owned_by_the_service_user_may_be_0600(host):
    add(host, "alice")
    for path in (host.config, host.users):
        os.chown(path, host.uid, host.gid)
        path.chmod(0o600)
    result = host.as_user("check-config", "--config", str(host.config))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_new_users_file_in_a_directory_of_the_callers_group_is_0600(host):
    config = host.root / "own.toml"
    users_file = host.root / "own-users"  # host.root is root:root 0755
    config.write_text(f'[auth]\nreporter = "basic"\nusers_file = "{users_file}"\n')
    result = pnbridge("users", "add", "bob", "--password-stdin", "--config", str(config),
                      input="secret\n")
    assert result.returncode == 0, result.stderr
    assert owner(users_file) == (0, 0, 0o600)


# -- the default config --------------------------------------------------------------------


def no_config_env(default: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PNBRIDGE_CONFIG"}
    return {**env, "PNBRIDGE_DEFAULT_CONFIG": str(default), **more}


def test_the_default_config_is_etc_pnbridge(tmp_path):
    for command in (["serve"], ["check-config"], ["devices", "list"], ["events"],
                    ["users", "add"], ["push"]):
        result = pnbridge(*command, "--help")
        text = " ".join(result.stdout.split())
        assert "$PNBRIDGE_CONFIG, else /etc/pnbridge/pnbridge.toml when it exists" in text
        assert "The database is its [storage] path; the embedded default is pnbridge.db in " \
               "the current directory." in text


def test_commands_use_the_default_config_when_it_exists(tmp_path):
    default = tmp_path / "etc" / "pnbridge.toml"
    database = tmp_path / "state" / "configured.db"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = no_config_env(default)
    # No file there: the embedded defaults, and their database in the current directory.
    result = pnbridge("check-config", env=env, cwd=elsewhere)
    assert (result.returncode, result.stdout) == (0, "embedded defaults: OK\n"), result.stderr
    result = pnbridge("devices", "list", env=env, cwd=elsewhere)
    assert result.returncode == 1 and f"no database at {elsewhere / 'pnbridge.db'}" in result.stderr
    # The file exists: every command uses it, from any directory.
    default.parent.mkdir()
    default.write_text(f'[storage]\npath = "{database}"\n[auth]\nreporter = "basic"\n'
                       f'users_file = "{tmp_path / "users"}"\n')
    default.chmod(0o600)
    added = pnbridge("users", "add", "bob", "--password-stdin", env=env, cwd=elsewhere,
                     input="secret\n")
    assert added.returncode == 0 and (tmp_path / "users").exists(), added.stderr
    result = pnbridge("check-config", env=env, cwd=elsewhere)
    assert result.stdout == f"{default}: OK\n", result.stderr
    result = pnbridge("devices", "list", env=env, cwd=elsewhere)
    assert result.returncode == 1 and f"no database at {database}" in result.stderr
    # $PNBRIDGE_CONFIG and --config still win.
    other = tmp_path / "other.toml"
    other.write_text('[server]\nlog_level = "debug"\n')
    other.chmod(0o600)
    result = pnbridge("check-config", env={**env, "PNBRIDGE_CONFIG": str(other)})
    assert result.stdout == f"{other}: OK\n"
    result = pnbridge("check-config", "--config", str(other), env=env)
    assert result.stdout == f"{other}: OK\n"


def test_serve_runs_and_reloads_the_default_config(tmp_path):
    default = tmp_path / "pnbridge.toml"
    default.write_text(f'[server]\nlisten = ["127.0.0.1:0"]\n[storage]\n'
                       f'path = "{tmp_path / "db"}"\n')
    default.chmod(0o600)
    process = Process(subprocess.Popen(
        [sys.executable, "-m", "pnbridge", "serve"], cwd=tmp_path, env=no_config_env(default),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    ))
    try:
        process.wait_for(f"config {default}")
        process.url()
        assert (tmp_path / "db").exists()
        default.write_text(default.read_text() + '[auth]\nreporter = "nonsense"\n')
        process.popen.send_signal(signal.SIGHUP)
        process.wait_for("reload failed")
    finally:
        assert process.stop() == 0, process.log
