"""JSON from outside, read strictly: the depth is checked before the stdlib parser (which
recurses) sees the text, and NaN, Infinity, numbers out of range, a key given twice and
lone surrogates are refused, each naming the top-level field it sits under.

Also the safe reading of JSON this pnbridge (or an older one) stored: ``stored``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import BadJSON

MAX_DEPTH = 16  # far deeper than any report or push request; far below recursion limits
STORED_DEPTH = 64  # what stored rows may hold and still be read in full
MAX_DIGITS = 40  # an integer longer than this is no id, count or phone number

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
# How a lone surrogate gets into the parsed value: escaped, or already in the text.
_SURROGATE_SOURCE = re.compile("\\\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def label(name: str) -> str:
    """A field name from outside, safe to put in an answer or a log line: as it is when it
    is short printable ASCII, else escaped and cut."""
    if name and len(name) <= 40 and name.isascii() and name.isprintable() and " " not in name:
        return name
    return ascii(name[:40])


def too_deep(text: str, max_depth: int) -> bool:
    """True when ``text``'s brackets nest deeper than ``max_depth`` (or do not match).

    Strings are cut out first; then each pass removes the innermost ``[]`` and ``{}`` pairs,
    so ``max_depth`` passes empty any well-formed text that is not too deep; a run of more
    than ``max_depth`` opening brackets ends it early. All of it runs in C (regular
    expressions and ``str.replace``), never recursing.
    """
    if text.count("[") + text.count("{") <= max_depth:  # strings' brackets included
        return False  # the common case, without the two passes below
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if skeleton.count("[") + skeleton.count("{") <= max_depth:
        return False
    run = re.compile(r"[\[{]{" + str(max_depth + 1) + "}")
    for _ in range(max_depth):
        if run.search(skeleton):
            return True
        shorter = skeleton.replace("[]", "").replace("{}", "")
        if len(shorter) == len(skeleton):
            break
        skeleton = shorter
    return bool(skeleton)


class _Unfit:
    """A value the parser met that is not taken; reported with the field it is under."""

    def __init__(self, problem: str):
        self.problem = problem


class _Hooks:
    """The parser's hooks for one document; ``unfit`` tells whether any value is."""

    def __init__(self) -> None:
        self.unfit = False

    def _unfit(self, problem: str) -> _Unfit:
        self.unfit = True
        return _Unfit(problem)

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data = dict(pairs)
        if len(data) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    data[key] = self._unfit(f"key {label(key)} given twice")
                    break
                seen.add(key)
        return data

    def constant(self, name: str) -> _Unfit:
        return self._unfit(f"{name} is not a JSON number")

    def integer(self, text: str) -> int | _Unfit:
        if len(text.lstrip("-")) > MAX_DIGITS:
            return self._unfit(f"number longer than {MAX_DIGITS} digits")
        return int(text)

    def float(self, text: str) -> float | _Unfit:
        value = float(text)
        return value if math.isfinite(value) else self._unfit("number out of range")


def loads(data: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``data`` parsed; raises BadJSON naming the culprit. Bytes are UTF-8 (or UTF-16/32
    with the BOM or zero bytes JSON allows)."""
    if isinstance(data, bytes):
        try:
            data = data.decode(json.detect_encoding(data))
        except UnicodeDecodeError:
            raise BadJSON("body", "not UTF-8 text") from None
    if too_deep(data, max_depth):
        raise BadJSON("body", f"not valid JSON (nested deeper than {max_depth} levels, or "
                              "brackets that do not match)")
    hooks = _Hooks()
    try:
        value = json.loads(data, object_pairs_hook=hooks.object, parse_constant=hooks.constant,
                           parse_int=hooks.integer, parse_float=hooks.float)
    except (ValueError, RecursionError) as error:
        raise BadJSON("body", f"not valid JSON ({error})") from None
    if hooks.unfit or _SURROGATE_SOURCE.search(data):  # else there is nothing to find
        _check(value)
    return value


def _check(value: Any) -> None:
    """Raise BadJSON for the first unfit value, string or key; walks without recursing."""
    top = value.items() if isinstance(value, dict) else [("body", value)]
    for field, item in top:
        if _SURROGATE.search(field):
            raise BadJSON(label(field), "name holds a lone surrogate (\\ud800-\\udfff)")
        stack = [item]
        while stack:
            item = stack.pop()
            if isinstance(item, _Unfit):
                raise BadJSON(label(field), item.problem)
            if isinstance(item, str) and _SURROGATE.search(item):
                raise BadJSON(label(field), "lone surrogate (\\ud800-\\udfff) in a string")
            if isinstance(item, dict):
                if any(_SURROGATE.search(key) for key in item):
                    raise BadJSON(label(field), "lone surrogate (\\ud800-\\udfff) in a key")
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)


def stored(text: str) -> Any:
    """JSON this pnbridge stored, or an older one (which took any depth, NaN, ...): parsed
    leniently, but never deeper than STORED_DEPTH; raises ValueError otherwise."""
    if too_deep(text, STORED_DEPTH):
        raise ValueError(f"nested deeper than {STORED_DEPTH} levels")
    return json.loads(text)
