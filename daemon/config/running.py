"""What the running daemon uses, for the keys a reload may not change.

``restart_values`` lists the sockets, the database, which plugins run (``[plugins] enabled``,
``optional``, ``paths``) and each running plugin's ``[plugins.NAME]`` settings. A reload
names those that differ, except the settings of a plugin it restarts with them (one that
only takes events). The daemon writes a record next to its database (``DB.running``) with
the plugins it runs and a salted hash of each such value it runs with, on start and after
each reload, so that ``pnbridge plugins``, ``events`` and ``check-config`` can say what it
runs and which keys of the file differ from it, without storing a secret.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..storage.engines import local_name
from .agi import AgiConfig
from .tables import Config

log = logging.getLogger("pnbridge.running")

RESTART_ONLY = (
    ("server", "listen"), ("server", "admin_listen"), ("server", "reuse_port"),
    ("api", "admin_only"),
    ("storage", "path"), ("storage", "busy_timeout"), ("storage", "expire_after"),
    ("storage", "push_history"), ("storage", "push_history_max"),
    ("storage", "url"), ("storage", "password_file"),
    ("plugins", "enabled"), ("plugins", "optional"), ("plugins", "paths"),
    ("server", "instance"), ("plugins", "lease_time"),
    ("console", "enabled"), ("console", "on_listen"), ("console", "secret"),
    *(("agi", item.name) for item in dataclasses.fields(AgiConfig)),
)


def restart_values(config: Config, settings: dict[str, Any]) -> dict[str, Any]:
    """Each key that only takes effect at the next start, with its value: the RESTART_ONLY
    keys and every field of ``settings`` (plugin name: its settings dataclass)."""
    values = {
        f"{table}.{key}": getattr(getattr(config, table), key) for table, key in RESTART_ONLY
    }
    for name, value in settings.items():
        for item in dataclasses.fields(value):
            values[f"plugins.{name}.{item.name}"] = getattr(value, item.name)
    return values


def changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys whose value differs (or that only one side has), in order."""
    return [key for key in {**old, **new} if plain(old.get(key)) != plain(new.get(key))]


def plain(value: Any) -> Any:
    """``value`` comparable across module reloads (a plugin file's dataclasses)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _digest(salt: str, value: Any) -> str:
    text = json.dumps(plain(value), sort_keys=True, default=repr)
    return hashlib.sha256(f"{salt}\0{text}".encode()).hexdigest()


def record_path(database: str) -> str:
    return f"{database}.running"


@dataclass
class Record:
    """What a running daemon wrote about itself."""

    pid: int
    started: float
    enabled: list[str]
    salt: str
    digests: dict[str, str]

    def differs(self, values: dict[str, Any]) -> list[str]:
        """The keys of ``values`` (a config file's ``restart_values``) that the daemon does
        not run with."""
        return [
            key for key in {**self.digests, **values}
            if key not in values or self.digests.get(key) != _digest(self.salt, values[key])
        ]


def write_record(database: str, enabled: list[str], values: dict[str, Any]) -> None:
    """Write the record of this process (blocking); a failure is logged, never raised."""
    salt = secrets.token_hex(16)
    data = {
        "pid": os.getpid(), "started": time.time(), "enabled": list(enabled), "salt": salt,
        "digests": {key: _digest(salt, value) for key, value in values.items()},
    }
    path = record_path(database)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file)
        os.replace(temporary, path)
    except OSError as error:
        log.warning("cannot write %s (pnbridge plugins will show the config file, not what "
                    "runs): %s", path, error.strerror)
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def remove_record(database: str) -> None:
    """Remove this process's record (blocking), if it is still its own."""
    record = read_record(database)
    if record is not None and record.pid == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(record_path(database))


def read_record(database: str) -> Record | None:
    """The record of the daemon running on ``database``, or None when none runs (or its
    record cannot be read)."""
    try:
        with open(record_path(database), encoding="utf-8") as file:
            data = json.load(file)
        record = Record(int(data["pid"]), float(data["started"]), list(data["enabled"]),
                        str(data["salt"]), dict(data["digests"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(record.pid, 0)
    except PermissionError:
        pass
    except OSError:
        return None  # left behind by a daemon that died
    return record


def compare(config: Config) -> tuple[Record | None, list[str]]:
    """The record of the daemon running on ``config``'s database (None when none runs), and
    the keys of ``config`` that it does not run with (blocking)."""
    from ..delivery.pluginhost import load_plugins
    from ..errors import ConfigError

    record = read_record(local_name(config.storage))
    if record is None:
        return None, []
    try:
        host = load_plugins(config.plugins)
    except ConfigError:
        return record, ["[plugins] (not valid in the file)"]
    settings = {n: host.settings[n] for n in record.enabled if n in host.settings}
    return record, record.differs(restart_values(config, settings))


def notes(record: Record | None, differ: list[str]) -> list[str]:
    """What ``compare`` found, as lines for the operator."""
    if record is None:
        return []
    lines = [f"the running daemon (pid {record.pid}) delivers to plugin(s): "
             f"{', '.join(record.enabled) or 'none'}"]
    if differ:
        lines.append(f"the config file differs from what the daemon runs, applied only at "
                     f"its next start: {', '.join(differ)}")
    return lines
