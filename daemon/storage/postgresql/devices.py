"""Devices on PostgreSQL: register, restore, remove, expire and read them; each change
journaled in the same transaction (call the changing operations inside one)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import psycopg

from ...errors import NotOwner
from ...model import PAIR_FIELDS, Device, Pair, Report
from ..interface import Change
from ..sqlite.rows import DEVICE_COLUMNS, device_values, read_device
from .journal import Journal

_PLACES = ", ".join(["%s"] * len(DEVICE_COLUMNS.split(",")))
_EVERY_COLUMN = ", ".join(f"{c.strip()} = excluded.{c.strip()}"
                          for c in DEVICE_COLUMNS.split(",")[1:])


def _one(cursor: psycopg.Cursor[Any]) -> int:
    row = cursor.fetchone()
    assert row is not None
    return int(row[0])


class Devices(Journal):
    """The devices' part of the PostgreSQL store."""

    def register(
        self, report: Report, source: dict[str, Any], now: float, *, owner: str | None = None
    ) -> Change:
        """Create or update the device ``report`` describes; journal it if it is new or changed.

        With ``owner``, raise NotOwner when the device exists under another username.
        """
        assert report.selector and report.username
        if (seen := self._seen_again(report, now)) is not None:
            return Change("unchanged", seen, None)
        old = self._locked(report.selector)
        if owner is not None and old is not None and old.username != owner:
            raise NotOwner(f"selector {report.selector} belongs to another user")
        if old is None:
            return self._create(report, source, now, created_at=now, updated_at=now,
                                last_seen=now)
        return self._update(old, report, source, now, last_seen=now)

    def restore(
        self, report: Report, source: dict[str, Any], now: float, times: dict[str, float]
    ) -> Change:
        """``register`` for a device moved from another host (``devices import``): a new
        device keeps the ``created_at``, ``updated_at`` and ``last_seen`` in ``times`` (one
        not given is the next of them, or now), so ``expire_after`` counts from when the
        phone was last seen, not from the import; a stored one changed by it keeps its
        ``created_at`` and the later ``last_seen``."""
        assert report.selector and report.username
        old = self._locked(report.selector)
        if old is None:
            last_seen = times.get("last_seen", now)
            updated_at = times.get("updated_at", last_seen)
            return self._create(
                report, source, now, created_at=times.get("created_at", updated_at),
                updated_at=updated_at, last_seen=last_seen,
            )
        return self._update(old, report, source, now,
                            last_seen=max(old.last_seen, times.get("last_seen", now)))

    def _create(
        self, report: Report, source: dict[str, Any], now: float, *, created_at: float,
        updated_at: float, last_seen: float,
    ) -> Change:
        assert report.selector and report.username
        device = Device(
            selector=report.selector, username=report.username,
            **{name: getattr(report, name) for name in PAIR_FIELDS}, extras=report.extras,
            created_at=created_at, updated_at=updated_at, last_seen=last_seen,
        )
        self._write(f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ({_PLACES})",
                    device_values(device))
        return Change("created", device, self._journal("registered", "new", None, device,
                                                       source, now))

    def _update(
        self, old: Device, report: Report, source: dict[str, Any], now: float, *,
        last_seen: float,
    ) -> Change:
        assert report.username
        merged = replace(old, **report.known(), updated_at=now, last_seen=last_seen)
        return self._rewrite(old, merged, "changed", source, now)

    def _seen_again(self, report: Report, now: float) -> Device | None:
        """The device, when ``report`` changes nothing of it but ``last_seen`` (and extras):
        one statement for what most reports are, an app start. None otherwise, when
        ``register`` creates or changes it. What it does not know matches any
        (``Report.known``)."""
        assert report.selector  # register asserted it
        known = report.known()
        sets = ["last_seen = %s"]
        params: list[object] = [now]
        if "extras" in known:
            sets.append("extras = %s")
            params.append(json.dumps(known.pop("extras")))
        where = ["selector = %s", *(f"{name} = %s" for name in known)]
        params += [report.selector, *known.values()]
        row = self.conn.execute(  # one round trip: the row comes back with RETURNING
            f"UPDATE devices SET {', '.join(sets)} WHERE {' AND '.join(where)}"
            f" RETURNING {DEVICE_COLUMNS}", params).fetchone()
        if row is None:
            return None
        self.changed += 1
        return read_device(row)

    def register_capped(
        self, report: Report, source: dict[str, Any], now: float, *,
        max_devices: int, owner: str | None = None,
    ) -> list[Change]:
        """``register``, then, beyond ``max_devices`` devices of the username (0: no cap),
        remove the least recently seen others (reason ``evicted``); one transaction."""
        change = self.register(report, source, now, owner=owner)
        if not max_devices or change.outcome == "unchanged":
            return [change]
        rows = self.conn.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE username = %s AND selector != %s"
            " ORDER BY last_seen DESC, selector OFFSET %s FOR UPDATE",
            (change.device.username, change.device.selector, max_devices - 1),
        )
        evicted = []
        for device in [read_device(row) for row in rows]:
            self._write("DELETE FROM devices WHERE selector = %s", (device.selector,))
            event = self._journal("removed", "evicted", device, None, source, now)
            evicted.append(Change("removed", device, event))
        return [change, *evicted]

    def remove(
        self,
        *,
        selector: str | None = None,
        username: str | None = None,
        tokens: Sequence[str] = (),
        reason: str,
        source: dict[str, Any],
        now: float,
    ) -> list[Change]:
        """Remove the device with ``selector`` (and ``username``, when given), or else the
        devices of ``username`` that hold one of ``tokens``; journal each removal."""
        params: list[Any] = []
        if selector:
            where, params = "selector = %s", [selector]
            if username:
                where += " AND username = %s"
                params.append(username)
        elif username and tokens:
            where = "username = %s AND (token_calls = ANY(%s) OR token_msgs = ANY(%s))"
            params = [username, list(tokens), list(tokens)]
        else:
            raise ValueError("remove needs a selector, or a username and tokens")
        rows = self.conn.execute(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE {where} FOR UPDATE",
                                 params).fetchall()
        changes = []
        for device in [read_device(row) for row in rows]:
            self._write("DELETE FROM devices WHERE selector = %s", (device.selector,))
            event = self._journal("removed", reason, device, None, source, now)
            changes.append(Change("removed", device, event))
        return changes

    def reject_token(
        self, selector: str, pair: Pair, token: str, source: dict[str, Any], now: float
    ) -> Change | None:
        """Clear the ``pair`` of ``selector`` that pnmediator rejected, if it still holds
        ``token``: remove the device when no token is left (reason ``invalid-token``), else
        journal a ``registered`` event with that reason whose before/after show the cleared
        pair. None when the device is gone or has a new token there already."""
        old = self._locked(selector)
        if old is None or getattr(old, f"token_{pair}") != token:
            return None
        cleared = Device(**{**asdict(old), f"token_{pair}": None, f"appid_{pair}": None,
                            "updated_at": now})
        if not (cleared.token_calls or cleared.token_msgs):
            return self.remove(selector=selector, reason="invalid-token", source=source,
                               now=now)[0]
        return self._rewrite(old, cleared, "invalid-token", source, now)

    def _rewrite(
        self, old: Device, new: Device, reason: str, source: dict[str, Any], now: float
    ) -> Change:
        """Store ``new`` in place of ``old`` and journal the registration."""
        self._write(
            f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ({_PLACES}) ON CONFLICT (selector)"
            f" DO UPDATE SET {_EVERY_COLUMN}", device_values(new))
        return Change("changed", new, self._journal("registered", reason, old, new, source, now))

    def expire(
        self, seen_before: float, source: dict[str, Any], now: float, limit: int = 500,
        skip: Sequence[str] = (),
    ) -> tuple[list[Change], dict[str, str]]:
        """Remove up to ``limit`` devices last seen before ``seen_before`` (reason
        ``expired``), but not those in ``skip``. A device that cannot be removed is left as it
        is (its own savepoint) and returned with the error, by selector."""
        rows = self.conn.execute(
            "SELECT selector FROM devices WHERE last_seen < %s AND selector <> ALL(%s)"
            " LIMIT %s", (seen_before, list(skip), limit),
        ).fetchall()
        changes: list[Change] = []
        failed: dict[str, str] = {}
        for (selector,) in rows:
            locked = self.journal_locked
            self.conn.execute("SAVEPOINT expire_one")
            try:
                changes += self.remove(selector=selector, reason="expired", source=source,
                                       now=now)
            except Exception as error:
                self.conn.execute("ROLLBACK TO expire_one")
                self.journal_locked = locked  # a lock taken after it is released with it
                failed[selector] = repr(error)
            self.conn.execute("RELEASE expire_one")
        return changes, failed

    def _locked(self, selector: str) -> Device | None:
        """``device``, its row locked to the transaction's end: what is changed from it is
        what another instance committed last (never a lost update), and its journaled
        ``before`` is the row as it was."""
        row = self.conn.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE selector = %s FOR UPDATE", (selector,)
        ).fetchone()
        return read_device(row) if row else None

    def device(self, selector: str) -> Device | None:
        row = self.conn.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE selector = %s", (selector,)
        ).fetchone()
        return read_device(row) if row else None

    def devices(self, username: str | None = None, limit: int = -1) -> list[Device]:
        """The devices (of ``username``), by username and selector; the first ``limit``
        (all when negative)."""
        most = None if limit < 0 else limit  # LIMIT NULL: all
        if username is None:
            rows = self.conn.execute(
                f"SELECT {DEVICE_COLUMNS} FROM devices ORDER BY username, selector LIMIT %s",
                (most,),
            )
        else:
            rows = self.conn.execute(
                f"SELECT {DEVICE_COLUMNS} FROM devices WHERE username = %s ORDER BY selector"
                " LIMIT %s",
                (username, most),
            )
        return [read_device(row) for row in rows]

    def count_devices(self, username: str | None = None) -> int:
        """How many devices are stored (of ``username``)."""
        if username is None:
            return _one(self.conn.execute("SELECT count(*) FROM devices"))
        return _one(self.conn.execute("SELECT count(*) FROM devices WHERE username = %s",
                                      (username,)))

    def count_users(self) -> int:
        """How many usernames have a device."""
        return _one(self.conn.execute("SELECT count(DISTINCT username) FROM devices"))

    def usernames(self, prefix: str = "", limit: int = 50) -> list[tuple[str, int]]:
        """The usernames starting with ``prefix``, in order, with their device counts; the
        first ``limit``."""
        rows = self.conn.execute(
            "SELECT username, count(*) FROM devices WHERE username >= %s GROUP BY username"
            " ORDER BY username", (prefix,))
        found: list[tuple[str, int]] = []
        for username, count in rows:  # the matches come first, in a row: stop at the next
            if not username.startswith(prefix) or len(found) == limit:
                break
            found.append((username, count))
        return found
