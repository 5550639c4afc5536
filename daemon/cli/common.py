"""What every command shares: the --config and --json options, reading the config, plugins and
database, and printing tables and progress."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click

from ..access.auth import load_users, plugin_problems
from ..config import paths
from ..config.tables import Config
from ..delivery.pluginhost import PluginHost, load_plugins
from ..errors import CommandError, ConfigError
from ..ops.log import escape
from ..storage.interface import Store
from ..storage.sqlite.store import SQLiteStore

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(readable=False),  # load_config names an unreadable file or a directory
    envvar="PNBRIDGE_CONFIG",
    callback=lambda ctx, param, value: value if value is not None else paths.default_config(),
    help=f"TOML config file (default: $PNBRIDGE_CONFIG, else {paths.DEFAULT_CONFIG} when it "
    "exists, else the embedded defaults). The database is its [storage] path; the embedded "
    "default is pnbridge.db in the current directory.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(*lines: str) -> NoReturn:
    """Stop the command: ``pnbridge: `` and each of ``lines`` on stderr, exit 1."""
    raise CommandError(*lines)


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
    path = config.storage.path
    if not create and not os.path.exists(path):
        fail(f"no database at {os.path.abspath(path)} (start pnbridge serve once, or pass "
             "--config)")
    return SQLiteStore(path, config.storage.busy_timeout, reading=reading)


@contextlib.contextmanager
def open_output(path: str) -> Iterator[Any]:
    """stdout for ``-``; else the file ``path``, mode 0600 whatever the umask (a device such
    as /dev/null keeps its own)."""
    if path == "-":
        yield click.get_text_stream("stdout")
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
def progress(length: int, label: str, out: Any = None) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``length`` items on a terminal (not when ``out``, where the
    items go, is that terminal); elsewhere nothing."""
    if not length or not sys.stderr.isatty() or (out is not None and out.isatty()):
        yield lambda _: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Print ``rows`` (the first is the header) as aligned columns, each cell escaped (it
    may hold what a client sent)."""
    rows = [tuple(escape(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
