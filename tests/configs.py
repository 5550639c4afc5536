"""Daemon configs for the tests: one base (a free loopback port, a database in the test's
directory, no rate limits) for the daemon in the test's loop and for ``pnbridge serve``
children, tables merged over it, and the TOML text of a config."""

from __future__ import annotations

import copy
import json
import re
import socket
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"]},
        "storage": {"path": str(tmp_path / "pnbridge.db")},
        # Rate limits are on by default; tests of anything else send faster than apps.
        "reporter": {"client_rate": 0, "username_rate": 0},
    }


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, table by table."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_toml(tmp_path: Path, tables: dict[str, Any]) -> str:
    """The TOML text of ``tables`` merged over the base config."""
    return toml_text(merge(base_config(tmp_path), tables))


def toml_text(table: dict[str, Any], name: str = "") -> str:
    """``table`` as TOML: its values, then its tables and arrays of tables."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in table.items()
             if not isinstance(v, dict) and not _tables(v)]
    for key, value in table.items():
        full = f"{name}.{_key(key)}" if name else _key(key)
        if isinstance(value, dict):
            lines.append(f"[{full}]\n{toml_text(value, full)}")
        elif _tables(value):
            lines += [f"[[{full}]]\n{toml_text(item, full)}" for item in value]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string
