"""Logging: one line per record on stderr; tokens only ever shortened."""

from __future__ import annotations

import logging
import os
import sys


def shorten(token: str | None) -> str:
    """A token cut to its ends, enough to tell tokens apart in a log: ``QVBBOT…2J``."""
    if not token:
        return "-"
    if len(token) <= 12:
        return token[:3] + "…"
    return f"{token[:6]}…{token[-2:]}"


def setup_logging(level: str) -> None:
    """Log to stderr, one line per record: level, logger name, message with key=value
    context; without timestamps under journald, which adds its own."""
    under_journald = "JOURNAL_STREAM" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    """Set the log level (``debug``, ``info``, ``warning`` or ``error``); also on reload."""
    logging.getLogger().setLevel(level.upper())
    # hypercorn's own lines ("Running on ... CTRL + C") only when debugging.
    logging.getLogger("pnbridge.http").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
