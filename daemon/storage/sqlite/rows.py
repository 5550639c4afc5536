"""Rows and values: a Device or Event to and from its SQLite row. What an older version stored
badly is read as far as it can be (and logged), so such a device can still be shown, listed,
removed and expired."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from ... import jsontext
from ...model import Device, Event
from ...ops.log import shorten

log = logging.getLogger("pnbridge.store")

EVENT_COLUMNS = "seq, id, kind, reason, selector, username, before, after, time, source"
DEVICE_COLUMNS = ", ".join(f.name for f in fields(Device))


def device_values(device: Device) -> tuple[Any, ...]:
    """``device`` as a row of ``DEVICE_COLUMNS``."""
    return tuple(json.dumps(v) if k == "extras" else v for k, v in asdict(device).items())


_DEVICE_FIELDS = tuple(f.name for f in fields(Device))
_DEVICE_KEYS = frozenset(_DEVICE_FIELDS)
_TIMES = ("created_at", "updated_at", "last_seen")


def read_device(row: Sequence[Any]) -> Device:
    try:
        extras = jsontext.stored(row[6])
    except (ValueError, TypeError, RecursionError) as error:
        extras = _unreadable(row[0], "extras", error)
    return _sound(dict(zip(_DEVICE_FIELDS, (*row[:6], extras, *row[7:10]), strict=True)))


def _sound(data: dict[str, Any]) -> Device:
    """A Device from stored values, even ones an older version stored badly (extras nested
    too deep, a time that is no number): what cannot be read is read as ``{}`` (extras) or
    0 (a time) and logged, so such a device can still be shown, listed, removed and expired."""
    selector = data["selector"]
    if not isinstance(data["extras"], dict):
        data["extras"] = _unreadable(selector, "extras", "not a JSON object")
    for name in _TIMES:
        if not isinstance(data[name], int | float):
            data[name] = _unreadable(selector, name, "not a number", 0.0)
    return Device(**data)


def _unreadable(selector: Any, what: str, problem: Any, instead: Any = None) -> Any:
    log.warning("device selector=%s: stored %s cannot be read (%s); read as %r",
                shorten(str(selector)), what, problem, {} if instead is None else instead)
    return {} if instead is None else instead


def dump_device(device: Device | None) -> str | None:
    return json.dumps(asdict(device)) if device else None


def _load(text: str | None, selector: str, username: str) -> Device | None:
    """A journaled device (``before`` or ``after``); see ``_sound``. One whose extras nest
    too deep is read without them; one that cannot be read at all, as its selector and
    username."""
    if not text:
        return None
    try:
        data = jsontext.stored(text)
    except (ValueError, RecursionError) as error:
        try:  # the C parser stops itself at the recursion limit
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            data["extras"] = _unreadable(selector, "extras", error)
    if not isinstance(data, dict) or data.keys() != _DEVICE_KEYS:
        _unreadable(selector, "journaled device", "not a device")
        data = {**dict.fromkeys(_DEVICE_FIELDS), **dict.fromkeys(_TIMES, 0.0),
                "selector": selector, "username": username, "extras": {}}
    return _sound(data)


def read_event(row: Sequence[Any]) -> Event:
    seq, event_id, kind, reason, selector, username, before, after, time, source = row
    try:
        origin = jsontext.stored(source)
    except (ValueError, TypeError, RecursionError):
        origin = None
    return Event(
        id=event_id, seq=seq, kind=kind, reason=reason, selector=selector, username=username,
        before=_load(before, selector, username), after=_load(after, selector, username),
        time=time, source=origin if isinstance(origin, dict) else {},
    )
