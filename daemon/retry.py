"""How pnbridge waits before trying again: one backoff for event delivery, pushes and the
storage retries, and one reading of a ``Retry-After`` header for every plugin."""

from __future__ import annotations

import math
import random
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

# A longer Retry-After is read as this: past every deadline and delivery max_age.
LONGEST_WAIT = 365 * 86400.0
_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def backoff(attempt: int, first: float, cap: float) -> float:
    """The wait after failed attempt number ``attempt`` (from 1): doubling from ``first``
    up to ``cap``, then jittered down by up to half (so many retries spread out)."""
    return min(cap, first * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def parse_retry_after(value: str | None) -> float | None:
    """The seconds a ``Retry-After`` header value asks to wait, or None when there is none
    or it cannot be read (the caller's own backoff applies).

    RFC 9110 allows whole seconds or an HTTP date; fractional seconds (``1.5``) are taken
    too. An HTTP date in the past means now (0). A negative number, anything else or a
    date that does not parse is None; more than LONGEST_WAIT counts as LONGEST_WAIT.
    """
    text = (value or "").strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, as RFC 5322 reads it
            when = when.replace(tzinfo=UTC)
        seconds = max(when.timestamp() - time.time(), 0.0)
    return min(seconds, LONGEST_WAIT) if math.isfinite(seconds) else LONGEST_WAIT
