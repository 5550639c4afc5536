"""Register: the report use case. A normalized report that access let in is stored: a token
report registers its device (as the authenticated user's, within the username's device
cap), a removal report removes it; the store journals each change, and delivery takes it
from the journal. The HTTP reporter routes (http/app.py) call it."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from ..model import Report
from ..ops.log import shorten
from ..storage.interface import Change, Store
from ..storage.writer import Writer

log = logging.getLogger("pnbridge.reporter")


def owned_by(report: Report, user: str | None) -> Report:
    """``report`` as the authenticated ``user``'s (their username, whatever it says); as it
    is when the route's auth mode names no user."""
    return report if user is None else replace(report, username=user)


async def register(
    writer: Writer, report: Report, source: dict[str, Any], *, owner: str | None,
    max_devices: int,
) -> list[Change]:
    """Store ``report`` and return what it changed: a token report registers its device,
    keeping at most ``max_devices`` of the username (0: no cap; the least recently seen
    others are evicted); a removal report removes it. With ``owner`` (the authenticated
    user), it may change only that user's devices: raises NotOwner for another's. Storage
    errors are raised as the writer raises them."""
    now = time.time()
    if report.kind == "token":
        return await writer.call(_register, report, source, now, owner, max_devices)
    return await writer.call(_remove_reported, report, source, now)


def _register(
    store: Store, report: Report, source: dict[str, Any], now: float, owner: str | None,
    cap: int,
) -> list[Change]:
    return store.register_capped(report, source, now, max_devices=cap, owner=owner)


def _remove_reported(
    store: Store, report: Report, source: dict[str, Any], now: float
) -> list[Change]:
    return store.remove(
        selector=report.selector, username=report.username, tokens=report.tokens,
        reason="app", source=source, now=now,
    )


def log_changes(report: Report, changes: list[Change], route: str) -> None:
    """One line per change (an unchanged device at debug), tokens shortened."""
    if not changes:
        log.debug("removal of unknown device selector=%s route=%s", shorten(report.selector), route)
    for change in changes:
        device = change.device
        level = logging.DEBUG if change.outcome == "unchanged" else logging.INFO
        log.log(
            level, "%s selector=%s username=%s token_calls=%s token_msgs=%s route=%s",
            change.outcome, shorten(device.selector), device.username,
            shorten(device.token_calls), shorten(device.token_msgs), route,
        )
