"""``pnbridge store``: the database as a whole. ``store copy`` copies it into another
(storage/copy.py): moving a host from SQLite to PostgreSQL (docs/cluster.md), or a backup
into an SQLite file."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from types import FrameType

import click

from ..config.running import read_record
from ..config.tables import StorageConfig, load_config
from ..delivery.commands import config_option, fail
from ..errors import CopyInterrupted
from ..model import isotime
from ..ops.instance import gone, holder_name
from ..storage.copy import COPYING, copy_store, copying_from, described
from ..storage.engines import database_name, engine, local_name
from ..storage.interface import Store
from .common import open_store, progress

TO = ("--to", "--password-file")  # what messages call the target's URL and password file


@click.group("store")
def store_group() -> None:
    """The database as a whole: copy it into another."""


def _target(storage: StorageConfig, to: str, password_file: str | None) -> StorageConfig:
    """The ``[storage]`` of ``--to``: a postgresql:// URL (its password from
    ``password_file``, the URL or libpq's usual places: PGPASSFILE, PGPASSWORD), else the
    path of an SQLite file."""
    if re.match(r"postgres(ql)?://", to):
        if _has_password(to):
            click.echo("pnbridge: WARNING: --to has a password in its URL, which every user "
                       "sees in the process list: use --password-file", err=True)
        return dataclasses.replace(storage, url=to, password_file=password_file)
    if "://" in to:
        fail(f"--to {database_name(dataclasses.replace(storage, url=to))}: neither a "
             "postgresql:// URL nor a file path")
    return dataclasses.replace(storage, path=to, url=None, password_file=None)


def _has_password(url: str) -> bool:
    """Whether the postgresql:// ``url`` carries a password (user:password@, or password=)."""
    parts = urllib.parse.urlsplit(url)
    return "password" in urllib.parse.parse_qs(parts.query) or ":" in parts.netloc.rpartition(
        "@")[0]


def _stopped(storage: StorageConfig, which: str) -> None:
    """Fail when the running-daemon record (config/running.py) says a daemon runs on
    ``storage`` here."""
    record = read_record(local_name(storage))
    if record is not None:
        fail(f"a pnbridge daemon (pid {record.pid}) runs on the {which} "
             f"{database_name(storage)}: stop it first (systemctl stop pnbridge); a copy "
             "taken while it writes would miss its last changes")


def _unleased(store: Store, which: str, where: str) -> None:
    """Fail when an instance holds a lease in ``store`` (one runs on it, on any host)."""
    now = time.time()
    for lease in store.leases():
        if lease.name != COPYING and lease.expires_at > now and not gone(lease.holder):
            fail(f"instance {holder_name(lease.holder)} holds the lease {lease.name} in the "
                 f"{which} {where} until {isotime(lease.expires_at)}: stop every instance "
                 "on it first (on every host)")


@store_group.command("copy")
@config_option
@click.option("--to", "to", required=True, metavar="URL",
              help="The target: postgresql://USER@HOST:PORT/DB, its password from "
              "--password-file, PGPASSFILE or PGPASSWORD (not in the URL: ps shows the "
              "command line to every user), or the path of an SQLite file.")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="The target PostgreSQL role's password: the first line of this file (as "
              "[storage] password_file). Recommended.")
@click.option("--force", is_flag=True,
              help="Copy into a target that already has rows: each copied row replaces the "
              "target's row with the same key (device: selector; journal event: seq or id; "
              "cursor: plugin; parked event: plugin and seq; a push record is not copied "
              "twice); the target's other rows are kept.")
def store_copy(config_path: str | None, to: str, password_file: str | None,
               force: bool) -> None:
    """Copy the config's database into another: devices, the journal (seqs and ids kept:
    the plugins resume where they were), cursors, parked events and the push history, with
    their times. Stop the daemon first. Copying again with --force gives the same target."""
    config = load_config(config_path)
    target_storage = _target(config.storage, to, password_file)
    source_name, target_name = database_name(config.storage), database_name(target_storage)
    same_file = (config.storage.url is None and target_storage.url is None and
                 os.path.abspath(config.storage.path) == os.path.abspath(to))
    if same_file or (config.storage.url is not None and source_name == target_name):
        fail(f"--to {target_name} is the config's own database")
    _stopped(config.storage, "source")
    _stopped(target_storage, "target")
    source = open_store(config, reading=True)
    try:
        target = engine(target_storage, TO).open()
        try:
            _unleased(source, "source", source_name)
            _unleased(target, "target", target_name)
            if (unfinished := copying_from(source)) is not None:
                fail(f"the config's database {source_name} is an unfinished copy of "
                     f"{unfinished}: finish that copy first")
            resumed = copying_from(target)
            held = target.table_counts()
            if resumed is not None and resumed != source_name and not force:
                fail(f"--to {target_name} is an unfinished copy of {resumed}, not of "
                     f"{source_name}: run that copy again, or pass --force to copy into it")
            if any(held.values()) and resumed is None and not force:
                fail(f"--to {target_name} is not empty (it holds {described(held)}): pass "
                     "--force to copy into it, replacing rows with the same keys")
            counts = source.table_counts()
            with progress(sum(counts.values()), "Copying") as done, _interruptible() as stop:
                copied = copy_store(source, target, source_name, done, stop)
        except (CopyInterrupted, KeyboardInterrupt):
            click.echo("pnbridge: copy interrupted: run it again to finish", err=True)
            raise SystemExit(130) from None
        finally:
            target.close()
    finally:
        source.close()
    click.echo(f"copied {described(copied)} from {source_name} to {target_name}")


@contextlib.contextmanager
def _interruptible() -> Iterator[Callable[[], bool]]:
    """While the block runs, SIGINT (Ctrl-C) asks the copy to stop after its chunk (what
    this yields says whether it was asked); a second one stops it at once."""
    asked: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # a test's CliRunner
        yield lambda: False
        return

    def ask(signum: int, frame: FrameType | None) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        # Stopped at once, psycopg would log the statement it abandons ("error ignored
        # terminating <psycopg.Pipeline ...>"): the one line of the command says it all.
        logging.getLogger("psycopg").disabled = True

    before = signal.signal(signal.SIGINT, ask)
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, before)
