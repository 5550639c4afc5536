"""Where pnbridge's files are, and whether the service user can reach them.

``default_config`` is the config a command uses when neither ``--config`` nor
``$PNBRIDGE_CONFIG`` names one: ``/etc/pnbridge/pnbridge.toml`` when it exists (its location
can be moved with ``$PNBRIDGE_DEFAULT_CONFIG``, for packagers and tests), else None, the
embedded defaults. ``access_problems`` says, one line per file, what the service user
(``pnbridge``) could not read or write among the files a config makes the daemon use; it
reads permission bits only (no ACLs), so it can check any user without switching to it.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from .tables import Config

DEFAULT_CONFIG = "/etc/pnbridge/pnbridge.toml"
SERVICE_USER = "pnbridge"  # the unit's User= and Group=


def default_config_location() -> str:
    """Where the config is looked for when none is given."""
    return os.environ.get("PNBRIDGE_DEFAULT_CONFIG") or DEFAULT_CONFIG


def default_config() -> str | None:
    """The config file to use when none is given, or None for the embedded defaults."""
    path = default_config_location()
    return path if os.path.exists(path) else None


@dataclass(frozen=True)
class Account:
    """A user as the kernel checks it: uid and every group id (and its group's name)."""

    name: str
    uid: int
    gids: frozenset[int]
    group: str


def account(name: str) -> Account | None:
    """The user ``name`` (with its supplementary groups), or None when there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    gids = frozenset(os.getgrouplist(name, entry.pw_gid))
    return Account(name, entry.pw_uid, gids, group_name(entry.pw_gid))


def service_group() -> int | None:
    """The gid of the service user's group, or None when there is no service user."""
    try:
        return grp.getgrnam(SERVICE_USER).gr_gid
    except KeyError:
        return None


def describe(path: str | Path) -> str:
    """``owner:group mode`` of ``path``, e.g. ``root:pnbridge 0640``."""
    info = os.stat(path)
    mode = stat.S_IMODE(info.st_mode)
    return f"{_name(info.st_uid, True)}:{_name(info.st_gid, False)} {mode:04o}"


def group_name(gid: int) -> str:
    """The name of group ``gid``, or the number when it has none."""
    return _name(gid, False)


def _name(number: int, user: bool) -> str:
    try:
        return pwd.getpwuid(number).pw_name if user else grp.getgrgid(number).gr_name
    except KeyError:
        return str(number)


def allowed(info: os.stat_result, who: Account, bits: int) -> bool:
    """Whether ``who`` has every permission in ``bits`` (a mask of R_OK, W_OK, X_OK) on a
    file with ``info``, as the kernel decides it without ACLs (root may do anything but
    execute a file without an x bit)."""
    mode = info.st_mode
    if who.uid == 0:
        return not bits & os.X_OK or stat.S_ISDIR(mode) or bool(mode & 0o111)
    if info.st_uid == who.uid:
        granted = (mode >> 6) & 7
    elif info.st_gid in who.gids:
        granted = (mode >> 3) & 7
    else:
        granted = mode & 7
    return granted & bits == bits


def unreachable(path: Path, who: Account) -> str | None:
    """Why ``who`` cannot reach the absolute ``path`` through its directories (each must
    let it search), or None when it can."""
    for parent in reversed(path.parents):
        try:
            info = os.stat(parent)
        except OSError as error:
            return f"cannot reach {parent}: {error.strerror}"
        if not allowed(info, who, os.X_OK):
            return f"cannot enter {parent} ({describe(parent)})"
    return None


def access_problem(path: str | Path, who: Account, *, write: bool = False,
                   directory: bool = False) -> str | None:
    """Why ``who`` cannot read (and, with ``write``, write) ``path``, or None when it can.

    Each directory on the way must let it search; a directory itself is listed (read and
    search), and written means creating files in it.
    """
    target = Path(os.path.abspath(path))
    if problem := unreachable(target, who):
        return problem
    try:
        info = os.stat(target)
    except OSError as error:
        return f"cannot reach {target}: {error.strerror}"
    bits = os.R_OK | (os.W_OK if write else 0) | (os.X_OK if directory else 0)
    if not allowed(info, who, bits):
        verb = "read and write" if write else "read"
        return f"cannot {verb} {target} ({describe(target)})"
    return None


def access_problems(config: Config, config_path: str | None, who: Account) -> list[str]:
    """What ``who`` (the service user) cannot read or write among the files ``config``
    makes the daemon use: the config, the users file, plugin paths, the database and its
    directory. One line each, naming the setting."""
    wanted: list[tuple[str, str, bool, bool]] = []  # what, path, write, directory
    if config_path:
        wanted.append(("config file", config_path, False, False))
    if config.auth.modes(config.reporter) & {"digest", "basic"} and config.auth.users_file:
        wanted.append(("auth.users_file", config.auth.users_file, False, False))
    wanted += [("plugins.paths", p, False, os.path.isdir(p)) for p in config.plugins.paths]
    if config.storage.password_file:
        wanted.append(("storage.password_file", config.storage.password_file, False, False))
    database = os.path.abspath(config.storage.path)
    if config.storage.url is None:  # PostgreSQL: no file of the database here
        if os.path.isdir(os.path.dirname(database)):  # else the unit's StateDirectory= does
            wanted.append(("storage.path's directory", os.path.dirname(database), True, True))
        if os.path.exists(database):
            wanted.append(("storage.path", database, True, False))
    problems = []
    for what, path, write, directory in wanted:
        if problem := access_problem(path, who, write=write, directory=directory):
            problems.append(f"{what}: the service user {who.name} {problem}")
    return problems


def service_account(config_path: str | None, user: str | None) -> Account | None:
    """The account to check files for: ``user``; without one, the service user when
    ``config_path`` is the unit's config (``DEFAULT_CONFIG``, whatever
    ``$PNBRIDGE_DEFAULT_CONFIG`` says) and that user exists, else None. Raises ValueError
    when ``user`` does not exist."""
    if user is not None:
        if (who := account(user)) is None:
            raise ValueError(f"--user {user}: no such user")
        return who
    unit = DEFAULT_CONFIG
    if config_path and os.path.exists(unit) and os.path.samefile(config_path, unit):
        return account(SERVICE_USER)
    return None
