"""Devices in and out of the database as JSON lines or CSV (``pnbridge devices export``
and ``pnbridge devices import``), to migrate from another system or between hosts.

An import is idempotent: a row that would change nothing is left alone (not even its
``last_seen``); a new or changed device goes through ``Store.register`` like a report,
so it is journaled as an event. Field names go through the reporter's alias table, so a
file from another system may use the app's names (``pushToken``, ...).
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, Literal, TextIO

from .events import Device, Report
from .jsontext import BadJSON, loads
from .reporter import BadReport, Reporter
from .store import Outcome, Store

Format = Literal["jsonl", "csv"]
COLUMNS = (
    "selector", "username", "token_calls", "appid_calls", "token_msgs", "appid_msgs",
    "extras", "created_at", "updated_at", "last_seen",
)
# Kept by the database itself; ignored on import.
TIME_COLUMNS = frozenset({"created_at", "updated_at", "last_seen"})


def export(devices: Iterable[Device], fmt: Format, out: TextIO) -> int:
    """Write ``devices`` to ``out``; return how many."""
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
    return count


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


def to_report(reporter: Reporter, row: dict[str, Any]) -> Report:
    """The registration ``row`` describes; raises BadReport saying what is wrong with it."""
    extras = row.get("extras") or {}
    if isinstance(extras, str):
        try:
            extras = loads(extras)
        except BadJSON as error:
            raise BadReport(f"extras is {error.problem}" if error.field == "body"
                            else f"extras: {error}") from None
    if not isinstance(extras, dict):
        raise BadReport("extras must be a JSON object")
    pairs = [(k, v) for k, v in row.items() if k != "extras" and k not in TIME_COLUMNS]
    report = reporter.build("token", [pairs])
    if not extras:
        return report
    merged = {**extras, **report.extras}
    reporter.check_extras(merged)
    return replace(report, extras=merged)


def import_report(store: Store, report: Report, source: dict[str, Any], now: float) -> Outcome:
    """Register ``report`` unless it would change nothing; call inside a transaction."""
    assert report.selector
    old = store.device(report.selector)
    if old is not None and _changes_nothing(old, report):
        return "unchanged"
    return store.register(report, source, now).outcome


def _changes_nothing(old: Device, report: Report) -> bool:
    names = ("username", "token_calls", "appid_calls", "token_msgs", "appid_msgs")
    same = all(getattr(report, n) in (None, getattr(old, n)) for n in names)
    return same and report.extras in ({}, old.extras)


def counting(lines: Iterable[str], advance: Callable[[int], None]) -> Iterator[str]:
    """``lines``, calling ``advance`` with each line's size in bytes (for a progress bar)."""
    for line in lines:
        advance(len(line.encode()))
        yield line
