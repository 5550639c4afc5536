"""auditlog: append one JSON line per registration and removal to a file.

Tokens are only ever written shortened, credentials never (events do not carry them). The
file is reopened when it was moved away and on SIGHUP, so logrotate can rotate it; how hard
each line is pushed to disk is the ``fsync`` setting. ``pnbridge audit``, the command this
plugin adds, reads it back (``records``). Each instance keeps its open file in
``app.state``: nothing is shared between two. docs/plugins/auditlog.md is the operator's
guide.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import logging
import os
import stat
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import click
import trio
from pnbridge import (
    PAIR_FIELDS,
    Event,
    Finding,
    PluginContext,
    ServiceUser,
    Since,
    check,
    config_option,
    escape_json,
    fail,
    hookimpl,
    json_option,
    plugin_instances,
    shorten,
    table,
)


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


def _not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


@dataclass
class Settings:
    """``[plugins.auditlog]``."""

    path: str = field(metadata=check(_not_empty))
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval: float = field(default=1.0, metadata=check(_positive))


def _device(device: Any) -> dict[str, Any]:
    data = {key: getattr(device, key) for key in PAIR_FIELDS}
    for key in PAIR_FIELDS[::2]:  # the tokens
        data[key] = shorten(data[key]) if data[key] else None
    return data


def line(event: Event) -> str:
    """The audit line of ``event`` (without its newline); the control characters a client
    may have sent are JSON escapes, so ``tail`` on a terminal shows them as text."""
    record: dict[str, Any] = {
        "time": event.to_dict()["time"], "id": event.id, "kind": event.kind,
        "reason": event.reason, "username": event.username, "selector": event.selector,
        **_device(event.device), "source": event.source,
    }
    if event.before is not None and event.after is not None:
        record["before"] = {"username": event.before.username, **_device(event.before)}
    return escape_json(json.dumps(record, ensure_ascii=False, separators=(",", ":")))


class AuditLogError(Exception):
    """The log could not be opened or written: the error's kind and the path, e.g.
    ``PermissionError: /var/log/pnbridge/audit.jsonl: Permission denied``."""

    def __repr__(self) -> str:  # what delivery logs and stores: the message itself
        return str(self)


class AuditFile:
    """The open log file, shared by the hook's worker thread, the fsync task and reloads."""

    def __init__(self, path: str, fsync: str, log: logging.Logger):
        self.path = path
        self.fsync = fsync
        self.log = log
        self.lock = threading.Lock()
        self.dirty = False
        self.fd: int | None = None
        self._open()

    def _open(self) -> None:
        # Non-blocking: a FIFO without a reader is an error (ENXIO), not a wait for ever.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o640)
        os.set_blocking(fd, True)
        self.fd = fd
        # fsync means something for a file only: not for a FIFO, a terminal, /dev/null.
        self.syncable = stat.S_ISREG(os.fstat(fd).st_mode)

    def _fsync(self) -> None:
        """fsync the file, unless it cannot be (then once a warning); other errors raise."""
        assert self.fd is not None
        if self.syncable and self.fsync != "never":
            try:
                os.fsync(self.fd)
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise  # EIO, ENOSPC...: the lines may be lost; written again if retried
                self.syncable = False
                self.log.warning("audit log %s cannot be synced (%s): fsync skipped",
                            self.path, error)
        self.dirty = False

    def _close(self) -> None:
        if self.fd is not None:
            try:
                self._fsync()
            finally:
                self.dirty = False
                os.close(self.fd)
                self.fd = None

    def _moved(self) -> bool:
        assert self.fd is not None
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(self.fd)
        return (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino)

    def write(self, text: str) -> None:
        """Append ``text`` and a newline, first reopening the path if it was moved away or
        an earlier attempt failed. Raises AuditLogError naming the path; the file is then
        closed, so the next attempt (delivery retries) opens the path again: the log
        recovers once the cause is fixed (say, a file a root-run command created)."""
        data = (text + "\n").encode()
        with self.lock:
            try:
                if self.fd is None:  # an earlier attempt failed: try the path again
                    self._open()
                elif self._moved():
                    self.log.info("audit log %s was moved away: writing a new one", self.path)
                    self._close()
                    self._open()
                assert self.fd is not None
                while data:
                    data = data[os.write(self.fd, data):]
                if self.fsync == "always":
                    self._fsync()
                else:
                    self.dirty = True
            except OSError as error:
                self._abandon()
                raise AuditLogError(
                    f"{type(error).__name__}: {self.path}: {error.strerror or error}"
                ) from error

    def _abandon(self) -> None:
        """Close the file without syncing (after a failure): the next write reopens it."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
            self.dirty = False

    def sync(self) -> None:
        """Force what was written to disk (``fsync = "interval"``)."""
        with self.lock:
            if self.fd is not None and self.dirty:
                self._fsync()

    def reopen(self) -> None:
        """Close the file and open the path again (logrotate, SIGHUP)."""
        with self.lock:
            self._close()
            self._open()

    def close(self) -> None:
        with self.lock:
            self._close()


@hookimpl
def settings_class() -> type[Settings]:
    return Settings


@hookimpl
async def startup(app: PluginContext) -> None:
    settings = app.settings(Settings)
    app.state = audit = await trio.to_thread.run_sync(
        AuditFile, settings.path, settings.fsync, app.log
    )
    if settings.fsync == "interval":
        app.nursery.start_soon(_sync_every, audit, settings.fsync_interval)


async def _sync_every(file: AuditFile, interval: float) -> None:
    """fsync every ``interval`` seconds; a failing disk is logged each time, and tried again."""
    while True:
        await trio.sleep(interval)
        try:
            await trio.to_thread.run_sync(file.sync)
        except OSError as error:
            file.log.error("audit log %s: fsync failed (tried again in %gs): %s",
                           file.path, interval, error)


@hookimpl
async def reload(app: PluginContext) -> None:
    if app.state is not None:
        await trio.to_thread.run_sync(app.state.reopen)


@hookimpl
async def shutdown(app: PluginContext) -> None:
    if app.state is not None:
        await trio.to_thread.run_sync(app.state.close)
        app.state = None


@hookimpl
def device_registered(event: Event, app: PluginContext) -> None:
    app.state.write(line(event))


@hookimpl
def device_removed(event: Event, app: PluginContext) -> None:
    app.state.write(line(event))


@hookimpl
def doctor(app: PluginContext, user: ServiceUser) -> list[Finding]:
    """The log's directory, and the log when it exists, writable as the service user."""
    path = Path(app.settings(Settings).path)
    fix = f"chown {user.name}: {path}" if path.exists() else (
        f"mkdir -p {path.parent}; chown {user.name}: {path.parent}")
    return [user.check(path, os.W_OK, "writes the audit log", fix)]


def log_files(path: str) -> list[Path]:
    """The log at ``path`` and its rotated siblings (``path.1``, ``path.2.gz``,
    ``path-20260102``...), oldest first."""
    current = Path(path)
    siblings = [
        p for p in current.parent.glob(f"{current.name}[.-]*")
        if p.is_file()
    ]
    siblings.sort(key=lambda p: p.stat().st_mtime)
    return [*siblings, current] if current.exists() else siblings


def records(path: str) -> tuple[list[dict[str, Any]], int]:
    """Every record of the log at ``path`` and its rotated siblings, oldest first, each
    event once (delivery is at least once); and how many lines could not be read."""
    seen: set[str] = set()
    found: list[dict[str, Any]] = []
    bad = 0
    for file in log_files(path):
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", encoding="utf-8", errors="replace") as lines:
            for text in lines:
                try:
                    record = json.loads(text)
                    event_id = record["id"]
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                if event_id not in seen:
                    seen.add(event_id)
                    found.append(record)
    return found, bad


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(audit)


def _instance(config_path: str | None, name: str | None) -> PluginContext:
    """The enabled auditlog instance ``name``; without a name, the only one (or the one
    named auditlog)."""
    apps = plugin_instances(config_path, "auditlog")
    if name is not None and name not in apps:
        fail(f"no enabled instance {name} of the auditlog plugin in this config (enabled: "
             f"{', '.join(apps) or 'none'})")
    if name is None and not apps:
        fail("the auditlog plugin is not enabled in this config ([plugins] enabled)")
    if name is None and len(apps) > 1 and "auditlog" not in apps:
        fail(f"instances of the auditlog plugin: {', '.join(apps)}; name one with --instance")
    return apps[name or ("auditlog" if "auditlog" in apps else next(iter(apps)))]


@click.command("audit")
@config_option
@click.option("--instance", metavar="NAME",
              help="The auditlog instance whose log to read (default: the only one, or the "
                   "one named auditlog).")
@click.option("--username", help="Only this user's events.")
@click.option("--selector", help="Only this device's events.")
@click.option("--since", type=Since(), help="Only events since TIME (ISO 8601, or 2h, 7d...).")
@json_option
def audit(
    config_path: str | None, instance: str | None, username: str | None,
    selector: str | None, since: float | None, as_json: bool,
) -> None:
    """Read the audit log (and its rotated files) of the auditlog plugin, filtered.

    With --json, prints the matching lines as they are in the log (JSON Lines).
    """
    app = _instance(config_path, instance)
    path = app.settings(Settings).path
    if not log_files(path):
        fail(f"no audit log at {path} (nothing delivered to {app.name} yet, or "
             f"[plugins.{app.name}] path names another file)")
    try:
        found, bad = records(path)
    except OSError as error:
        fail(f"cannot read the audit log: {error}")
    if bad:
        click.echo(f"pnbridge: warning: {bad} unreadable line(s) skipped", err=True)
    matching = [
        r for r in found
        if (username is None or r.get("username") == username)
        and (selector is None or r.get("selector") == selector)
        and (since is None or datetime.fromisoformat(r["time"]).timestamp() >= since)
    ]
    if as_json:
        for record in matching:
            click.echo(escape_json(json.dumps(record, ensure_ascii=False, separators=(",", ":"))))
        return
    rows = [("TIME", "KIND", "REASON", "SELECTOR", "USERNAME", "TOKENS", "SOURCE")]
    rows += [
        (r["time"], r["kind"], r["reason"], r["selector"], r["username"],
         " ".join(t for t in (r.get("token_calls"), r.get("token_msgs")) if t) or "-",
         " ".join(f"{k}={v}" for k, v in r.get("source", {}).items()) or "-")
        for r in matching
    ]
    table(rows)
