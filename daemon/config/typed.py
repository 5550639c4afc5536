"""Typed tables: turn a parsed TOML table into a dataclass, naming every bad key.

One converter serves the daemon's own config and every plugin's ``[plugins.NAME]`` table.
A dataclass field may carry a check in its metadata (``field(metadata=check(fn))``); ``fn``
takes the converted value and returns an error message, or None when the value is fine.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def check(fn: Callable[[Any], str | None]) -> dict[str, Any]:
    """Field metadata that runs ``fn`` on the converted value."""
    return {"check": fn}


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: one or more ``<number><unit>`` parts, units s, m, h, d, w
    (``"90d"``, ``"12h"``, ``"1h30m"``). Raises ValueError saying what is wrong."""
    spaced = text.replace(" ", "")
    parts = _DURATION_PART.findall(spaced)
    if not spaced or "".join(n + u for n, u in parts) != spaced:
        raise ValueError(
            f"{text!r} is not a duration like \"90d\", \"12h\" or \"1h30m\" "
            "(units: s, m, h, d, w)"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than 0 seconds")
    return seconds


def duration_problem(text: str | None) -> str | None:
    """A field check: None when ``text`` is None or a duration, else why it is not."""
    if text is None:
        return None
    try:
        parse_duration(text)
    except ValueError as error:
        return str(error)
    return None


def convert(cls: type[T], table: Any, key: str, errors: list[str]) -> T | None:
    """Build ``cls`` (a dataclass) from ``table``; append ``key.field: problem`` lines to errors."""
    if not isinstance(table, dict):
        errors.append(f"{key}: expected a table, got {_describe(table)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in table:
        if name not in fields:
            known = ", ".join(sorted(fields)) or "none"
            errors.append(f"{_join(key, name)}: unknown key (known keys: {known})")
    values: dict[str, Any] = {}
    ok = True
    for name, field in fields.items():
        sub = _join(key, name)
        if name not in table:
            no_default = dataclasses.MISSING
            if field.default is no_default and field.default_factory is no_default:
                errors.append(f"{sub}: required key is missing")
                ok = False
            continue
        before = len(errors)
        value = _value(table[name], hints[name], sub, errors)
        if len(errors) > before:
            ok = False
            continue
        fn = field.metadata.get("check")
        problem = fn(value) if fn else None
        if problem:
            errors.append(f"{sub}: {problem}")
            ok = False
            continue
        values[name] = value
    if not ok:
        return None
    return cls(**values)


def _value(raw: Any, hint: Any, key: str, errors: list[str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return convert(hint, raw, key, errors)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if raw is None and len(options) < len(args):
            return None
        if len(options) == 1:
            return _value(raw, options[0], key, errors)
        for option in options:
            trial: list[str] = []
            value = _value(raw, option, key, trial)
            if not trial:
                return value
        errors.append(f"{key}: expected {_name(hint)}, got {_describe(raw)}")
        return None
    if origin is Literal:
        if raw not in args:
            choices = ", ".join(repr(a) for a in args)
            errors.append(f"{key}: expected one of {choices}, got {raw!r}")
        return raw
    if origin is list:
        if not isinstance(raw, list):
            errors.append(f"{key}: expected a list, got {_describe(raw)}")
            return None
        return [_value(item, args[0], f"{key}[{i}]", errors) for i, item in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, dict):
            errors.append(f"{key}: expected a table, got {_describe(raw)}")
            return None
        return {k: _value(v, args[1], _join(key, k), errors) for k, v in raw.items()}
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            errors.append(f"{key}: expected a number, got {_describe(raw)}")
            return None
        return float(raw)
    if hint is Any:
        return raw
    if not isinstance(raw, hint) or (hint is int and isinstance(raw, bool)):
        errors.append(f"{key}: expected {_name(hint)}, got {_describe(raw)}")
        return None
    return raw


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _name(hint: Any) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}
    if hint in names:
        return names[hint]
    args = typing.get_args(hint)
    if args:
        return " or ".join(_name(a) for a in args if a is not type(None))
    return getattr(hint, "__name__", str(hint))


def _describe(value: Any) -> str:
    kinds = {
        str: "a string", bool: "a boolean", int: "an integer", float: "a number",
        list: "a list", dict: "a table",
    }
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, str | int | float | bool):
        return f"{kind} ({value!r})"
    return kind

