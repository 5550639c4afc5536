"""``[storage] expire_after``: a daemon task that removes devices not seen for that long."""

from __future__ import annotations

import logging
import time
from operator import methodcaller

import trio

from ..storage.writer import Writer
from .log import describe, shorten
from .metrics import Metrics

log = logging.getLogger("pnbridge.expiry")

BATCH = 500  # devices removed per transaction, so reports never wait long behind a sweep
SOURCE = {"task": "expire"}
MAX_SKIPPED = 10_000  # devices that could not be removed, left out of later sweeps


def sweep_interval(after: float) -> float:
    """How often to look for stale devices: a tenth of ``after``, from 0.1 s to an hour."""
    return min(max(after / 10, 0.1), 3600.0)


async def expire_devices(writer: Writer, after: float, metrics: Metrics | None = None) -> None:
    """Remove devices last seen more than ``after`` seconds ago, now and then every
    ``sweep_interval(after)``; each removal is an event with reason ``expired``.

    Never stops for an error: a device that cannot be removed is logged, counted and left
    out of later sweeps (until a restart); a sweep that fails is run again at the next one.
    """
    log.info("removing devices not seen for %g s", after)
    skipped: set[str] = set()
    while True:
        now = time.time()
        try:
            changes, failed = await writer.call(
                methodcaller("expire", now - after, SOURCE, now, BATCH, sorted(skipped))
            )
        except Exception as error:  # a locked or failing database; or a bug: never die
            log.error("cannot expire devices: %s", describe(error))
            changes, failed = [], {}
            _count(metrics)
        for selector, problem in failed.items():
            log.error("cannot expire selector=%s (skipped until a restart): %s",
                      shorten(selector), problem)
            if len(skipped) < MAX_SKIPPED:
                skipped.add(selector)
            _count(metrics)
        for change in changes:
            device = change.device
            log.info("expired selector=%s username=%s last seen %.0f s ago",
                     shorten(device.selector), device.username, now - device.last_seen)
        if len(changes) < BATCH:
            await trio.sleep(sweep_interval(after))


def _count(metrics: Metrics | None) -> None:
    if metrics is not None:
        metrics.task_errors.labels("expiry").inc()
