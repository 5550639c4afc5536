"""The systemd notification protocol (sd_notify): datagrams to ``$NOTIFY_SOCKET``.

``READY=1`` once listening, ``STATUS=`` lines for ``systemctl status``, ``RELOADING=1`` /
``READY=1`` around a reload, ``STOPPING=1`` on shutdown and ``WATCHDOG=1`` pings at half of
``$WATCHDOG_USEC``. Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import trio

log = logging.getLogger("pnbridge.sdnotify")


class Notifier:
    """Sends sd_notify messages to one socket; never raises, never blocks."""

    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket name
        self.address = address or None
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    def send(self, *fields: str) -> None:
        """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=..."``) as one message."""
        if self._sock is None or self.address is None:
            return
        message = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError as error:
            log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), error)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None when off."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def keep_watchdog_fed(notifier: Notifier, interval: float) -> None:
    """Ping the systemd watchdog every ``interval`` seconds, for as long as the loop runs."""
    while True:
        notifier.send("WATCHDOG=1")
        await trio.sleep(interval)
