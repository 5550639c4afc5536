"""``[storage] expire_after``: a daemon task that removes devices not seen for that long."""

from __future__ import annotations

import logging
import sqlite3
import time

import trio

from .log import shorten
from .store import Store, StoreError
from .writer import Writer

log = logging.getLogger("pnbridge.expiry")

BATCH = 500  # devices removed per transaction, so reports never wait long behind a sweep
SOURCE = {"task": "expire"}


def sweep_interval(after: float) -> float:
    """How often to look for stale devices: a tenth of ``after``, from 0.1 s to an hour."""
    return min(max(after / 10, 0.1), 3600.0)


async def expire_devices(writer: Writer, after: float) -> None:
    """Remove devices last seen more than ``after`` seconds ago, now and then every
    ``sweep_interval(after)``; each removal is an event with reason ``expired``."""
    log.info("removing devices not seen for %g s", after)
    while True:
        now = time.time()
        try:
            changes = await writer.call(Store.expire, now - after, SOURCE, now, BATCH)
        except (sqlite3.Error, StoreError) as error:
            log.error("cannot expire devices: %s", error)
            changes = []
        for change in changes:
            device = change.device
            log.info("expired selector=%s username=%s last seen %.0f s ago",
                     shorten(device.selector), device.username, now - device.last_seen)
        if len(changes) < BATCH:
            await trio.sleep(sweep_interval(after))
