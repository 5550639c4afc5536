"""What pnbridge's own commands share beyond what plugins' commands share too
(``delivery/commands.py``: the options, ``fail``, ``table``): reading the plugins and the
database, writing a file, progress."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import IO

import click

from ..access.auth import load_users, plugin_problems
from ..config.tables import Config
from ..delivery.commands import fail
from ..delivery.pluginhost import PluginHost, load_plugins
from ..errors import ConfigError
from ..storage.engines import engine
from ..storage.interface import Store


def read_plugins(config: Config) -> PluginHost:
    """The plugins of ``config``, with what the auth settings need of them and of the users
    file checked; raises ConfigError."""
    plugins = load_plugins(config.plugins)
    if problems := plugin_problems(config, plugins):
        raise ConfigError(problems)
    load_users(config)
    return plugins


def open_store(
    config: Config, *, create: bool = False, reading: bool = False
) -> Store:
    """The database of ``config``, which must exist already (serve creates it) unless
    ``create``; opened read-only, never migrated, when ``reading``."""
    database = engine(config.storage)
    if not create and not database.exists():
        fail(f"no database at {os.path.abspath(database.where)} (start pnbridge serve once, "
             "or pass --config)")
    return database.open(reading=reading)


@contextlib.contextmanager
def open_output(path: str) -> Iterator[IO[str]]:
    """stdout for ``-``; else the file ``path``, mode 0600 whatever the umask (a device such
    as /dev/null keeps its own)."""
    if path == "-":
        yield click.open_file("-", "w")
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
    except OSError as error:
        fail(f"--output: cannot write {path}: {error.strerror}")
    with open(fd, "w", encoding="utf-8", newline="") as out:
        yield out


@contextlib.contextmanager
def progress(
    length: int, label: str, out: IO[str] | None = None
) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``length`` items on a terminal (not when ``out``, where the
    items go, is that terminal); elsewhere nothing."""
    if not length or not sys.stderr.isatty() or (out is not None and out.isatty()):
        yield lambda _: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update
