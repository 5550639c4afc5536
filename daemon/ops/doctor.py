"""``pnbridge doctor``: check an installation the way the daemon will meet it.

Each check is one ``Finding``: ``ok``, ``warn`` or ``fail``, what was checked, and for the
last two the fix. Nothing is changed: the database is opened read-only and never created or
migrated, ports are bound and released at once, and the network checks send no push and no
event. Plugins add their own checks through the ``doctor`` hook (docs/plugin-hooks.md).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import trio

from ..access.auth import load_users, plugin_problems, security_warnings
from ..config import paths
from ..config.addresses import HOST_PORT
from ..config.tables import Config, load_config
from ..delivery.containment import uncontained
from ..delivery.pluginhost import PluginHost, load_plugins
from ..errors import ConfigError, StoreError
from ..storage.copy import unfinished
from ..storage.engines import Engine, engine
from .findings import TIMEOUT, Finding, ServiceUser
from .log import describe

EXIT = {"ok": 0, "warn": 1, "fail": 2}


def exit_status(findings: Iterable[Finding]) -> int:
    """0 when every finding is ok, 1 with a warn, 2 with a fail."""
    return max((EXIT[f.status] for f in findings), default=0)


def check_config(path: str | None, service: paths.Account | None = None
                 ) -> tuple[list[Finding], Config | None, PluginHost | None]:
    """What ``check-config`` checks: the config, its plugins' settings, the users file (a
    group-readable one is right when the group is the ``service`` account's), the store
    engine's driver and password file."""
    name = path or "embedded defaults"
    fix = "pnbridge check-config names each key; edit the config"
    try:
        config = load_config(path)
        plugins = load_plugins(config.plugins)
        if problems := plugin_problems(config, plugins):
            raise ConfigError(problems)
        load_users(config)
    except ConfigError as error:
        return [Finding("fail", f"config {name}: {e}", fix) for e in error.errors], None, None
    findings = [Finding("ok", f"config {name} is valid")]
    try:
        engine(config.storage)  # PostgreSQL's driver there, its password file readable
    except StoreError as error:
        return [*findings, Finding("fail", error.problem, "install the extra, or fix "
                                   "[storage]")], None, None
    findings += [Finding("warn", f"config: {w}")
                 for w in security_warnings(config, path, service)]
    return findings, config, plugins


def check_files(config: Config, path: str | None, user: ServiceUser) -> Iterator[Finding]:
    """Every file and directory the daemon reads or writes, as ``user``."""
    if path is not None:
        yield user.check(path, os.R_OK, f"{user.name} reads the config",
                         f"chgrp {user.name} {path}; chmod 640 {path}")
    if config.auth.users_file:
        users = config.auth.users_file
        yield user.check(users, os.R_OK, f"{user.name} reads the users file",
                         f"chgrp {user.name} {users}; chmod 640 {users}")
    if secret := config.storage.password_file:
        yield user.check(secret, os.R_OK, f"{user.name} reads the database password file",
                         f"chgrp {user.name} {secret}; chmod 640 {secret}")
    if config.storage.url is None:
        yield from _check_database_files(config.storage.path, user)
    for plugins in config.plugins.paths:
        yield user.check(plugins, os.R_OK | os.X_OK, f"{user.name} reads the plugins directory",
                         f"chmod o+rx {plugins} or chgrp {user.name} it")
    for address in [*config.server.listen, *config.server.admin_listen]:
        if address.startswith("unix:"):
            socket_dir = Path(address[5:]).parent
            yield user.check(socket_dir, os.W_OK | os.X_OK,
                             f"{user.name} creates its socket in",
                             f"chown {user.name} {socket_dir} (or RuntimeDirectory=)")


def _check_database_files(path: str, user: ServiceUser) -> Iterator[Finding]:
    """The SQLite database's directory and files."""
    db = Path(path)
    directory = db.parent if str(db.parent) else Path(".")
    yield user.check(os.path.abspath(directory), os.R_OK | os.W_OK | os.X_OK,
                     f"{user.name} writes the database directory",
                     f"chown {user.name} {os.path.abspath(directory)}")
    for name in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if name.exists():
            yield user.check(name, os.R_OK | os.W_OK, f"{user.name} reads and writes",
                             f"chown {user.name}: {os.path.abspath(name)}")


def check_database(config: Config) -> Finding:
    """Schema (and SQLite's ``PRAGMA quick_check``) on a read-only connection."""
    database = engine(config.storage)  # check_config found it can
    where = database.where
    if not database.exists():
        return Finding("warn", f"database {where} does not exist yet",
                       "pnbridge serve creates it; or set [storage] path")
    if (problem := database.inspect()) is None:
        if copied := unfinished_copy(database):
            return Finding("fail", copied, "run the same pnbridge store copy again "
                           "(docs/cluster.md)")
        check = ", quick_check ok" if config.storage.url is None else ""
        return Finding("ok", f"database {where}: schema version {database.latest}{check}")
    if database.inspect(serving=True) is None:  # an older version: serve migrates it
        return Finding("warn", problem, "pnbridge serve migrates it at its next start")
    return Finding("fail", problem, "check [storage] path or url, or stop pnbridge and "
                   "restore it from a backup (docs/install.md)")


def unfinished_copy(database: Engine) -> str | None:
    """What ``storage/copy.py``'s ``unfinished`` says of ``database`` (read only)."""
    try:
        store = database.open(reading=True)
    except StoreError as error:
        return error.problem
    try:
        return unfinished(store, database.where)
    finally:
        store.close()


async def check_port(address: str, user: ServiceUser) -> Finding | None:
    """Whether ``address`` (host:port) can be listened on: free, or held by a running
    pnbridge (its /healthz answers). None for unix: and fd:// addresses."""
    found = HOST_PORT.fullmatch(address)
    if found is None:
        return None
    host, port = found["v6"] or found["host"], int(found["port"])
    if port == 0:
        return Finding("ok", f"listen {address}: any free port")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        return Finding("fail", f"listen {address}: {error}", "fix [server] listen")
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return Finding("fail", f"listen {address}: {error.strerror}",
                               "fix the address in [server] listen / admin_listen")
        else:
            low = port < _unprivileged_port_start()
            if low and user.uid != 0:
                return Finding("fail", f"listen {address}: port {port} needs privileges "
                               f"{user.name} lacks", "use a port >= 1024, or pnbridge.socket")
            return Finding("ok", f"listen {address} is free")
    holder = await trio.to_thread.run_sync(_holder, port)
    if await _is_pnbridge(host, port, family) or (holder is not None and holder[1]):
        return Finding("ok", f"listen {address} is held by a running pnbridge")
    return Finding("fail", f"listen {address} is in use by "
                   f"{holder[0] if holder else 'another program'}",
                   "stop it, or change the port in [server] listen / admin_listen")


def _holder(port: int) -> tuple[str, bool] | None:
    """``PID command line`` of the process listening on TCP ``port``, when /proc shows it
    (another user's processes only to root), and whether it is ``pnbridge serve``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(link in inodes for link in _fd_links(proc)):
                argv = [a.decode(errors="replace")
                        for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
                # `pnbridge serve`, `python -m pnbridge serve`, or the console script
                # run by its interpreter (argv: [venv/bin/python3, venv/bin/pnbridge, serve]).
                ours = "serve" in argv and (
                    "pnbridge" in (os.path.basename(a) for a in argv[:2])
                    or any(argv[i:i + 2] == ["-m", "pnbridge"] for i in range(len(argv))))
                return f"{proc.name} {' '.join(argv)[:120]}", ours
        except (OSError, IndexError):
            continue
    return None


def _fd_links(proc: Path) -> Iterator[str]:
    """What each open file descriptor of ``proc`` points to; one closed while it is read is
    skipped (not the whole process: the holder may be opening and closing others)."""
    for fd in (proc / "fd").iterdir():
        try:
            yield os.readlink(fd)
        except OSError:
            continue


def _unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


async def _is_pnbridge(host: str, port: int, family: int) -> bool:
    """Whether pnbridge's /healthz answers at host:port (its admin address, or listen
    without one)."""
    if host in ("0.0.0.0", "::", ""):
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
            answer = await client.get(f"{base}/healthz")
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.text == "ok\n"


def check_systemd(root: str | None = None) -> Finding:
    """The unit is installed and enabled (``systemctl is-enabled``; of the system image at
    ``root`` when given)."""
    if shutil.which("systemctl") is None:
        return Finding("warn", "systemd: no systemctl here",
                       "run pnbridge under a supervisor that restarts it (docs/install.md)")
    states = {
        unit: subprocess.run(["systemctl", *([f"--root={root}"] if root else []),
                              "is-enabled", unit], capture_output=True,
                             text=True, timeout=30).stdout.strip()
        for unit in ("pnbridge.service", "pnbridge.socket")
    }
    service = states["pnbridge.service"]
    if service == "enabled" or states["pnbridge.socket"] == "enabled":
        return Finding("ok", "systemd: pnbridge is enabled")
    if service in ("disabled", "static", "indirect", "masked"):
        return Finding("warn", f"systemd: pnbridge.service is {service}",
                       "systemctl enable --now pnbridge")
    return Finding("warn", "systemd: pnbridge.service is not installed",
                   "pnbridge install-units; systemctl daemon-reload; "
                   "systemctl enable --now pnbridge")


async def check_plugins(plugins: PluginHost, user: ServiceUser) -> list[Finding]:
    """Each enabled plugin's ``doctor`` hook (without starting it), its findings named
    ``plugin NAME: ...``."""
    findings: list[Finding] = []
    async with trio.open_nursery() as nursery:
        plugins.attach(nursery)
        for name in plugins.enabled:
            if plugins.impl(name, "doctor") is None:
                findings.append(Finding("ok", f"plugin {name}: enabled (it has no checks)"))
                continue
            try:
                with trio.fail_after(TIMEOUT * 3):
                    found = [Finding(*f) for f in
                             await plugins.call(name, "doctor", user=user) or ()]
                if any(f.status not in EXIT for f in found):
                    raise ValueError(f"not ok, warn or fail: {found!r:.200}")
            except BaseException as error:
                if (up := uncontained(error)) is not None:
                    raise up from None
                found = [Finding("fail", f"doctor failed: {describe(error)}",
                                 "report it to the plugin's author")]
            findings += [f._replace(what=f"plugin {name}: {f.what}") for f in found]
        nursery.cancel_scope.cancel()
    return findings


async def run(path: str | None, user_name: str | None, root: str | None = None
              ) -> list[Finding]:
    """Every check, in order; stops after the config when it is invalid."""
    try:
        user = ServiceUser.named(user_name)
    except KeyError:
        return [Finding("fail", f"--user {user_name}: no such user",
                        "create it (docs/install.md) or name the service user")]
    findings, config, plugins = check_config(path, user.account if user_name else None)
    if config is None or plugins is None:
        return findings
    findings += check_files(config, path, user)
    findings.append(await trio.to_thread.run_sync(check_database, config))
    for address in [*config.server.listen, *config.server.admin_listen]:
        if (port := await check_port(address, user)) is not None:
            findings.append(port)
    findings += await check_plugins(plugins, user)
    findings.append(await trio.to_thread.run_sync(check_systemd, root))
    return findings
