"""The instance's identity: ``[server] instance`` (default ``<hostname>:<pid>``), the name
/readyz, /metrics, ``pnbridge plugins`` and ``pnbridge events`` show, and the holder id it
keeps leases with (storage/leases.py).

The holder id adds to the name where the process runs (a digest of the machine's boot id
and pid namespace), its pid and a random part: two processes never share one, even when an
operator gives both the same name, and a holder that ran on this machine and is gone (a
``kill -9``) is known as such at once (``gone``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MAX_NAME = 64


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as an instance's name; None when it is fine."""
    if not name.strip() or not name.isprintable() or len(name) > MAX_NAME:
        return f"must be 1 to {MAX_NAME} printable characters"
    return None


def default_name() -> str:
    """``<hostname>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@cache
def _machine() -> str:
    """This machine and pid namespace, in 12 hex digits: pids mean something only within
    them (a random value where /proc cannot tell)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pids = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return secrets.token_hex(6)
    return hashlib.sha256(f"{boot}/{pids}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Instance:
    """This process as one pnbridge instance of several: its ``name`` (shown) and the
    ``holder`` id its leases carry (kept internally)."""

    name: str
    holder: str

    @classmethod
    def create(cls, name: str = "") -> Instance:
        """This process's identity, named ``name`` (the default's when empty)."""
        name = name or default_name()
        return cls(name, f"{name}#{_machine()}.{os.getpid()}.{secrets.token_hex(4)}")


def holder_name(holder: str) -> str:
    """The instance name a holder id carries (the id itself when it is not one of ours)."""
    return holder.rpartition("#")[0] or holder


def gone(holder: str) -> bool:
    """Whether ``holder`` ran on this machine (this boot, this pid namespace) and its
    process no longer runs; False whenever that cannot be known."""
    _, _, tail = holder.rpartition("#")
    parts = tail.split(".")
    if len(parts) != 3 or parts[0] != _machine() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False
