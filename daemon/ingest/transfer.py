"""Devices in and out of the database as JSON lines or CSV (``pnbridge devices export``
and ``pnbridge devices import``), to migrate from another system or between hosts.

An import reads the whole file before it writes anything: a file that is not UTF-8 is
refused as a whole; a row that cannot be read is reported with its line number and left
out; the rest is written in one transaction (all of it or, on an error, none). It is
idempotent: a row that would change nothing is left alone (not even its ``last_seen``); a
new or changed device goes through the store like a report, so it is journaled as an event,
and keeps the times the file gives it. ``[storage] max_devices_per_user`` holds as it does
for reports: beyond it, the most recently seen devices of a username are kept. Field names
go through the reporter's alias table, so a file from another system may use the app's
names (``pushToken``, ...).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any, Literal

from ..errors import BadJSON, BadReport, Unreadable
from ..jsontext import loads
from ..model import PAIR_FIELDS, ChangeOutcome, Device, Report
from ..storage.interface import Store
from .normalize import Reporter

Format = Literal["jsonl", "csv"]
TIME_COLUMNS = ("created_at", "updated_at", "last_seen")
COLUMNS = ("selector", "username", *PAIR_FIELDS, "extras", *TIME_COLUMNS)


def export(devices: Iterable[Device], fmt: Format, out: IO[str],
           advance: Callable[[int], None] = lambda _: None) -> int:
    """Write ``devices`` to ``out`` (calling ``advance`` with 1 for each); return how
    many."""
    count = 0
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n") if fmt == "csv" else None
    if writer:
        writer.writeheader()
    for device in devices:
        data = device.to_dict()
        if writer:
            data["extras"] = json.dumps(data["extras"]) if data["extras"] else ""
            writer.writerow({k: "" if v is None else v for k, v in data.items()})
        else:
            out.write(json.dumps(data, separators=(",", ":")) + "\n")
        count += 1
        advance(1)
    return count


def decode(data: bytes, name: str) -> str:
    """The text of the file ``name`` (UTF-8, a byte order mark dropped); raises
    Unreadable naming the first line that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise Unreadable(
            f"{name}: line {line}: byte 0x{data[error.start]:02x} is not UTF-8 (a file saved "
            "as Latin-1 or Windows-1252?): nothing imported; convert it, e.g. "
            "iconv -f latin1 -t utf-8, and import it again"
        ) from None


def read_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, row)`` for each row of a JSON lines or CSV (with header) text, or
    ``(line number, problem)`` for a row that cannot be read. The format is told by the
    first character: ``{`` is JSON lines."""
    lines = iter(lines)
    head: list[str] = []
    for line in lines:
        head.append(line)
        if line.strip():
            break
    else:
        return
    rest = itertools.chain(head, lines)
    yield from (_json_rows if head[-1].lstrip().startswith("{") else _csv_rows)(rest)


def _json_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = loads(line)
        except BadJSON as error:
            yield number, error.problem if error.field == "body" else str(error)
            continue
        yield number, row if isinstance(row, dict) else "not a JSON object"


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(lines)
    try:
        for row in reader:
            if None in row:
                yield reader.line_num, "more cells than the header has columns"
            else:
                yield reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}
    except csv.Error as error:
        yield reader.line_num, f"not valid CSV: {error}"


@dataclass(frozen=True)
class Row:
    """A device the file describes: its registration and the times it gives."""

    line: int
    report: Report
    times: dict[str, float]


def to_row(reporter: Reporter, number: int, row: dict[str, Any], now: float) -> Row:
    """The device ``row`` (line ``number``) describes; raises BadReport saying what is
    wrong with it. A time later than ``now`` is read as now."""
    extras = row.get("extras") or {}
    if isinstance(extras, str):
        try:
            extras = loads(extras)
        except BadJSON as error:
            raise BadReport(f"extras is {error.problem}" if error.field == "body"
                            else f"extras: {error}") from None
    if not isinstance(extras, dict):
        raise BadReport("extras must be a JSON object")
    times = {name: min(_time(name, row[name]), now)
             for name in TIME_COLUMNS if row.get(name) not in (None, "")}
    pairs = [(k, v) for k, v in row.items() if k != "extras" and k not in TIME_COLUMNS]
    report = reporter.build("token", [pairs])
    if extras:
        merged = {**extras, **report.extras}
        reporter.check_extras(merged)
        report = replace(report, extras=merged)
    return Row(number, report, times)


def _time(name: str, value: Any) -> float:
    """A time of the file: seconds since 1970 or ISO 8601 (UTC unless it says otherwise)."""
    epoch = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        epoch = float(value)
    elif isinstance(value, str):
        try:
            epoch = float(value)
        except ValueError:
            try:
                when = datetime.fromisoformat(value.strip())
                epoch = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
            except (ValueError, OverflowError):
                pass
    if not math.isfinite(epoch) or epoch < 0:
        raise BadReport(f"{name} is not a time (ISO 8601, e.g. 2026-01-02T03:04:05Z, or "
                        "seconds since 1970)")
    return epoch


@dataclass
class Plan:
    """What an import writes: the rows to import, the stored devices to evict for the cap,
    and a line for each username over it."""

    rows: list[Row]
    evict: list[Device] = field(default_factory=list)
    over_cap: int = 0
    notes: list[str] = field(default_factory=list)


def plan(store: Store, rows: list[Row], cap: int, now: float) -> Plan:
    """Apply ``cap`` (devices per username; 0: none) to ``rows`` and what is stored: of a
    username with more, the ``cap`` most recently seen are kept (a device of the file and
    a stored one alike); the other rows are left out, the other stored devices evicted.
    A selector given twice counts once (its last row)."""
    if not cap:
        return Plan(rows)
    last = {row.report.selector: row for row in rows}
    by_user: defaultdict[str, list[Row]] = defaultdict(list)
    for row in last.values():
        by_user[row.report.username or ""].append(row)
    result = Plan([])
    dropped: set[str] = set()
    for username, mine in sorted(by_user.items()):
        stored = {d.selector: d for d in store.devices(username)}
        others = [d for selector, d in stored.items() if selector not in last]
        if len(mine) + len(others) <= cap:
            continue
        ranked: list[tuple[float, str, Row | Device]] = [
            (max(row.times.get("last_seen", now),
                 stored[row.report.selector].last_seen if row.report.selector in stored
                 else 0.0), row.report.selector or "", row)
            for row in mine
        ]
        ranked += [(d.last_seen, d.selector, d) for d in others]
        ranked.sort(key=lambda item: (-item[0], item[1]))
        left_out = [item for _, _, item in ranked[cap:] if isinstance(item, Row)]
        evicted = [item for _, _, item in ranked[cap:] if isinstance(item, Device)]
        dropped.update(row.report.selector for row in left_out if row.report.selector)
        result.evict += evicted
        result.over_cap += len(left_out)
        note = f"{username}: {len(mine):,} devices in the file"
        if others:
            note += f" and {len(others):,} stored"
        note += (f", the cap ([storage] max_devices_per_user) is {cap:,}: kept the {cap:,} "
                 f"most recently seen ({len(left_out):,} of the file not imported")
        result.notes.append(note + (f", {len(evicted):,} stored evicted)" if evicted else ")"))
    result.rows = [row for row in rows if row.report.selector not in dropped]
    return result


def read_file(
    reporter: Reporter, text: str, name: str, now: float,
    advance: Callable[[int], None] = lambda _: None,
) -> tuple[list[Row], list[str]]:
    """The rows of the file ``name`` (its ``text``, calling ``advance`` with each line's
    size in bytes), and a ``name: line N: problem (skipped)`` line for each row left out."""
    rows: list[Row] = []
    problems: list[str] = []
    for number, row in read_rows(counting(io.StringIO(text), advance)):
        try:
            if isinstance(row, str):
                raise BadReport(row)
            rows.append(to_row(reporter, number, row, now))
        except BadReport as error:
            problems.append(f"{name}: line {number}: {error} (skipped)")
    return rows, problems


def write(
    store: Store, planned: Plan, source: dict[str, Any], now: float,
    advance: Callable[[int], None] = lambda _: None,
) -> Counter[ChangeOutcome]:
    """Write ``planned`` (call inside a transaction): evict its stored devices, import its
    rows (calling ``advance`` with 1 for each); how many rows had each outcome."""
    for device in planned.evict:
        store.remove(selector=device.selector, reason="evicted", source=source, now=now)
    outcomes: Counter[ChangeOutcome] = Counter()
    for row in planned.rows:
        outcomes[import_row(store, row, {**source, "line": row.line}, now)] += 1
        advance(1)
    return outcomes


def summary(outcomes: Counter[ChangeOutcome], skipped: int, planned: Plan) -> str:
    """One line for what an import did: ``2 created, 0 changed, 1 unchanged, 0 skipped``
    (and the rows over the cap, the stored devices evicted, when there were any)."""
    line = ", ".join(f"{outcomes[o]} {o}" for o in ("created", "changed", "unchanged"))
    line += f", {skipped} skipped"
    if planned.over_cap:
        line += f", {planned.over_cap} over the cap"
    if planned.evict:
        line += f", {len(planned.evict)} stored evicted"
    return line


def import_row(store: Store, row: Row, source: dict[str, Any], now: float) -> ChangeOutcome:
    """Store ``row`` unless it would change nothing; call inside a transaction."""
    assert row.report.selector
    old = store.device(row.report.selector)
    if old is not None and _changes_nothing(old, row.report):
        return "unchanged"
    return store.restore(row.report, source, now, row.times).outcome


def _changes_nothing(old: Device, report: Report) -> bool:
    return all(getattr(old, name) == value for name, value in report.known().items())


def counting(lines: Iterable[str], advance: Callable[[int], None]) -> Iterator[str]:
    """``lines``, calling ``advance`` with each line's size in bytes (for a progress bar)."""
    for line in lines:
        advance(len(line.encode()))
        yield line
