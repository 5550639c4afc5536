"""A failure that repeats, logged without flooding: a store that is down fails every request,
hundreds a second. The first failure is logged at once, then at most one line per interval
with the count since the last line, and one line when it works again. Metrics still count
every failure; this only spares the log."""

from __future__ import annotations

import logging

import trio

EVERY = 10.0  # seconds between two lines about the same failure


class RepeatedFailure:
    """The log lines of one kind of failure (``what``, e.g. "storage") of one instance."""

    def __init__(self, log: logging.Logger, what: str, every: float = EVERY):
        self.log = log
        self.what = what
        self.every = every
        self.started: float | None = None  # the first failure since it last worked
        self.total = 0  # failures since it last worked
        self.logged_at = 0.0  # the last line's time
        self.unlogged = 0  # failures since the last line

    def failed(self, detail: str) -> None:
        """One failure; ``detail`` (escaped by the log formatter) says where and why."""
        now = trio.current_time()
        self.total += 1
        if self.started is None:
            self.started = self.logged_at = now
            self.log.error("%s failed %s", self.what, detail)
            return
        self.unlogged += 1
        if now - self.logged_at >= self.every:
            self.log.error("%s failed %s times in the last %.0f s (the last: %s)", self.what,
                           f"{self.unlogged:,}", now - self.logged_at, detail)
            self.logged_at, self.unlogged = now, 0

    def worked(self) -> None:
        """It worked: one line if it had been failing, and the count starts again."""
        if self.started is None:
            return
        self.log.warning("%s works again after %s failures over %.1f s", self.what,
                         f"{self.total:,}", trio.current_time() - self.started)
        self.started, self.total, self.unlogged = None, 0, 0
