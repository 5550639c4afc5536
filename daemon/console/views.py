"""What each console page shows, gathered off the loop (one reader call per page, its queries
together) into plain dataclasses for the templates. No full token leaves here: a device's
tokens are shortened (``ops.log.shorten``), the history holds them shortened already, and a
journal event is reduced to what changed, tokens shortened."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args

from markupsafe import Markup

from .. import __version__
from ..model import PAIR_FIELDS, Device, Event, HistoryOutcome, PushRecord
from ..ops.activity import MINUTES, Activity
from ..ops.log import shorten
from ..ops.readiness import Readiness
from ..storage.interface import Failure, Store
from .plot import Series, plot

T = TypeVar("T")
# A reader's ``call``: ``fn(store, *args)`` run on a read-only connection off the loop.
ReadCall = Callable[..., Awaitable[Any]]

HOUR = 3600.0
PUSHES_SHOWN = 100
EVENTS_SHOWN = 50
CALL_ROWS = 1000  # a call's records: its devices times its verbs
USERS_LISTED = 50
PARKED_SHOWN = 200  # failures listed per plugin (the counts are of all)


@dataclass(frozen=True)
class DeviceRow:
    """A device as the console shows it: tokens shortened, its last push (or None)."""

    selector: str
    username: str
    token_calls: str
    appid_calls: str | None
    token_msgs: str
    appid_msgs: str | None
    created_at: float
    last_seen: float
    last_push: PushRecord | None = None

    @classmethod
    def of(cls, device: Device, last_push: PushRecord | None = None) -> DeviceRow:
        return cls(device.selector, device.username, shorten(device.token_calls),
                   device.appid_calls, shorten(device.token_msgs), device.appid_msgs,
                   device.created_at, device.last_seen, last_push)


@dataclass(frozen=True)
class EventRow:
    """A journal event, reduced to what it says about the device (tokens shortened)."""

    seq: int
    id: str
    time: float
    kind: str
    reason: str
    selector: str
    username: str
    change: str
    source: str

    @classmethod
    def of(cls, event: Event) -> EventRow:
        source = " ".join(f"{k}={v}" for k, v in sorted(event.source.items()))
        return cls(event.seq, event.id, event.time, event.kind, event.reason, event.selector,
                   event.username, _change(event), source)


def _change(event: Event) -> str:
    """What a registration set: ``field: old → new`` for each field that changed (each field
    it has, for a new device), tokens shortened; nothing for a removal (its reason says it)."""
    before, after = event.before, event.after
    if after is None:
        return ""
    parts = []
    for name in ("username", *PAIR_FIELDS):
        old, new = (getattr(before, name) if before else None), getattr(after, name)
        if old == new:
            continue
        if name.startswith("token_"):
            old, new = (shorten(old) if old else None), (shorten(new) if new else None)
        parts.append(f"{name}: {old or '-'} → {new or '-'}" if before else f"{name}: {new}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Retrying:
    """The event a plugin's delivery is retrying in memory now (not parked, so not in the
    store): as the dispatcher knows it."""

    seq: int
    event_id: str
    attempts: int  # failed so far
    error: str | None  # the last attempt's
    next_try: float


@dataclass(frozen=True)
class PluginState:
    """One enabled plugin's delivery: its cursor, the events beyond it and the age of the
    oldest (its lag), and its parked and retry-queued events."""

    name: str
    cursor: int
    pending: int
    lag: float | None
    parked: int
    retry: int
    retrying: Retrying | None = None


@dataclass(frozen=True)
class Overview:
    now: float
    devices: int
    users: int
    plot: Markup
    outcomes: dict[str, int]
    plugins: list[PluginState]
    checks: dict[str, str | None]  # each readiness check: None when ready, else why not
    database: str
    database_bytes: int | None
    since: float | None = None  # the plot's first minute, when less than an hour is measured
    version: str = __version__


async def overview(call: ReadCall, readiness: Readiness, activity: Activity, now: float,
                   cursors: dict[str, int] | None = None,
                   retrying: dict[str, Retrying] | None = None) -> Overview:
    """The overview's figures. ``cursors``: each enabled plugin's cursor as its delivery
    stands (the dispatcher's); without them, the cursors saved in the store. ``retrying``:
    the event each plugin's delivery retries now, if any (the dispatcher's)."""

    def gather(store: Store) -> tuple[Any, ...]:
        known = store.cursors() if cursors is None else cursors
        waiting = store.failure_counts()
        plugins = []
        for name, cursor in sorted(known.items()):
            pending, oldest = store.backlog(cursor)
            plugins.append(PluginState(name, cursor, pending,
                                       None if oldest is None else max(0.0, now - oldest),
                                       waiting.get((name, "parked"), 0),
                                       waiting.get((name, "retry"), 0),
                                       (retrying or {}).get(name)))
        size = _database_bytes(store.where)
        return (store.count_devices(), store.count_users(), store.push_counts(now - HOUR),
                plugins, store.where, size)

    devices, users, counts, plugins, path, size = await call(gather)
    outcomes = dict.fromkeys(get_args(HistoryOutcome), 0)
    for _, outcome, n in counts:
        outcomes[outcome] = outcomes.get(outcome, 0) + n
    problems = await readiness.problems()
    lines = [Series(kind, activity.per_minute(kind, now)) for kind in ("reports", "pushes")]
    since = lines[0].points[0][0] if len(lines[0].points) < MINUTES else None
    period = "last hour" if since is None else time.strftime("since %H:%M UTC", time.gmtime(since))
    figure = plot(lines, f"Reports and pushes per minute, {period}", MINUTES)
    return Overview(now, devices, users, figure, outcomes, plugins,
                    {name: problems.get(name) for name in sorted(readiness.checks)}, path, size,
                    since)


@dataclass(frozen=True)
class Found:
    """What a search found: users (exact first, then by prefix, with device counts), a
    selector, a call Id."""

    query: str
    users: list[tuple[str, int]] = field(default_factory=list)
    selector: bool = False
    call: bool = False

    @property
    def count(self) -> int:
        return len(self.users) + self.selector + self.call


def storable(value: str) -> bool:
    """Whether ``value`` could be a stored username, selector or call Id: none holds a NUL
    (the reporter and the push API refuse it, PostgreSQL cannot store it), so the store is
    not asked for one (PostgreSQL would fail the query)."""
    return "\x00" not in value


async def search(call: ReadCall, query: str) -> Found:
    """Usernames equal to or starting with ``query``, a selector, a call Id."""
    if not storable(query):
        return Found(query)

    def gather(store: Store) -> Found:
        users = store.usernames(query, USERS_LISTED)
        # A user with no device left is known by their history.
        if (not users or users[0][0] != query) and _known_user(store, query):
            users = [(query, 0), *users][:USERS_LISTED]
        selector = (store.device(query) is not None
                    or bool(store.device_events(selector=query, limit=1)))
        return Found(query, users, selector, bool(store.pushes(id=query, limit=1)))

    return await call(gather)


def _known_user(store: Store, username: str) -> bool:
    return bool(store.pushes(username=username, limit=1)
                or store.device_events(username=username, limit=1))


@dataclass(frozen=True)
class UserPage:
    username: str
    devices: list[DeviceRow]
    events: list[EventRow]
    pushes: list[PushRecord]


async def user(call: ReadCall, username: str) -> UserPage | None:
    """A user's devices (each with its last push), events and pushes; None when nothing is
    known of ``username``."""
    if not storable(username):
        return None

    def gather(store: Store) -> UserPage | None:
        devices = [DeviceRow.of(d, _first(store.pushes(selector=d.selector, limit=1)))
                   for d in store.devices(username)]
        events = [EventRow.of(e) for e in store.device_events(username=username,
                                                              limit=EVENTS_SHOWN)]
        pushes = store.pushes(username=username, limit=PUSHES_SHOWN)
        if not (devices or events or pushes):
            return None
        return UserPage(username, devices, events, pushes)

    return await call(gather)


@dataclass(frozen=True)
class DevicePage:
    selector: str
    device: DeviceRow | None  # None: no longer stored (removed, expired), known by history
    events: list[EventRow]
    pushes: list[PushRecord]

    @property
    def username(self) -> str | None:
        if self.device:
            return self.device.username
        known = self.events or self.pushes
        return known[0].username if known else None


async def device(call: ReadCall, selector: str) -> DevicePage | None:
    """A device, its events and pushes; None when nothing is known of ``selector``."""
    if not storable(selector):
        return None

    def gather(store: Store) -> DevicePage | None:
        pushes = store.pushes(selector=selector, limit=PUSHES_SHOWN)
        found = store.device(selector)
        events = [EventRow.of(e) for e in store.device_events(selector=selector,
                                                              limit=EVENTS_SHOWN)]
        if found is None and not (events or pushes):
            return None
        row = DeviceRow.of(found, _first(pushes)) if found else None
        return DevicePage(selector, row, events, pushes)

    return await call(gather)


@dataclass(frozen=True)
class CallPage:
    """Every device pushed for one call Id, every verb (the call, its follow-ups)."""

    id: str
    pushes: list[PushRecord]  # oldest first

    @property
    def verbs(self) -> list[str]:
        return list(dict.fromkeys(p.verb for p in self.pushes))

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(p.selector for p in self.pushes if p.selector))

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(Counter(p.outcome for p in self.pushes))


async def call_page(call: ReadCall, id: str) -> CallPage | None:
    """The pushes of call ``id``, oldest first; None when there are none."""
    if not storable(id):
        return None
    records = await call(lambda store: store.pushes(id=id, limit=CALL_ROWS))
    return CallPage(id, records[::-1]) if records else None


@dataclass(frozen=True)
class FailureRow:
    """A parked or retry-queued event of one plugin (its devices' tokens left out)."""

    seq: int
    event_id: str
    kind: str
    reason: str
    selector: str
    username: str
    time: float
    attempts: int
    error: str
    first_try: float
    parked_at: float
    status: str

    @classmethod
    def of(cls, failure: Failure) -> FailureRow:
        e = failure.event
        return cls(e.seq, e.id, e.kind, e.reason, e.selector, e.username, e.time,
                   failure.attempts, failure.error, failure.first_try, failure.parked_at,
                   failure.status)


@dataclass(frozen=True)
class PluginFailures:
    """One plugin's failures as the parked page shows them: the first ``PARKED_SHOWN``
    rows, and how many it has of each status."""

    plugin: str
    rows: list[FailureRow]
    parked: int
    retry: int
    retrying: Retrying | None = None  # the event its delivery retries in memory now

    @property
    def total(self) -> int:
        return self.parked + self.retry


async def parked(call: ReadCall, retrying: dict[str, Retrying] | None = None
                 ) -> list[PluginFailures]:
    """Each plugin's parked and retry-queued events (the oldest ``PARKED_SHOWN``), counted
    by the database, and the event its delivery retries in memory now (``retrying``, the
    dispatcher's), by plugin name."""
    now = retrying or {}

    def gather(store: Store) -> list[PluginFailures]:
        counts = store.failure_counts()
        shown = []
        for plugin in sorted({plugin for plugin, _ in counts} | set(now)):
            rows = [FailureRow.of(f) for f in store.failures(plugin, limit=PARKED_SHOWN)]
            shown.append(PluginFailures(plugin, rows, counts.get((plugin, "parked"), 0),
                                        counts.get((plugin, "retry"), 0), now.get(plugin)))
        return shown

    result: list[PluginFailures] = await call(gather)
    return result


def _database_bytes(where: str) -> int | None:
    """The SQLite database's size on disk, with its ``-wal`` and ``-shm`` files (where most
    of a busy database's recent writes are); None when ``where`` is no file (PostgreSQL)."""
    try:
        size = os.stat(where).st_size
    except OSError:
        return None
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(OSError):  # checkpointed away, or never made
            size += os.stat(where + suffix).st_size
    return size


def _first(items: Sequence[T]) -> T | None:
    return items[0] if items else None
