"""Push requests in flight: each accepted request's fan-out runs in a task of the daemon's
(not the HTTP request's or the AGI session's) to its deadline, whether or not its client
still waits, at most ``[api] max_in_flight`` at once."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import Busy, Stopping, StoreError, UnknownUser
from .fanout import DeviceResult, Pusher
from .request import PushRequest

log = logging.getLogger("pnbridge.push")


@dataclass(eq=False)
class Fanout:
    """One accepted push request, under way in a task of the daemon's: its answer (``wait``)
    and what to do once it is over (``then``), whether or not anyone still waits for it."""

    request: PushRequest
    results: list[DeviceResult] | None = None
    error: Exception | None = None
    finished: float | None = None
    done: trio.Event = field(default_factory=trio.Event)
    _then: list[Callable[[Fanout], None]] = field(default_factory=list)

    async def wait(self) -> list[DeviceResult]:
        """The results; raises what the fan-out raised (UnknownUser, StoreError...)."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.results is not None
        return self.results

    def then(self, callback: Callable[[Fanout], None]) -> None:
        """Call ``callback(self)`` when the fan-out is over (at once if it is)."""
        if self.done.is_set():
            callback(self)
        else:
            self._then.append(callback)

    def counts(self) -> Counter[str]:
        """Devices per outcome (empty while under way or when it failed)."""
        return Counter(r.outcome for r in self.results or ())


class Fanouts:
    """Push requests under way, each in a task of ``nursery`` (the daemon's, not the HTTP
    request's): once accepted, a fan-out runs to its deadline, retries included, whether or
    not its client waits for the answer. At most ``limit`` at once (``Busy`` beyond)."""

    def __init__(self, pusher: Pusher, nursery: trio.Nursery, limit: int):
        self.pusher = pusher
        self._nursery = nursery
        self._slots = trio.CapacityLimiter(limit)
        self.metrics = pusher.metrics

    @property
    def limit(self) -> int:
        return int(self._slots.total_tokens)

    @limit.setter
    def limit(self, value: int) -> None:
        self._slots.total_tokens = value

    @property
    def in_flight(self) -> int:
        return self._slots.borrowed_tokens

    def start(self, request: PushRequest, deadline: float, source: dict[str, Any]) -> Fanout:
        """Start the fan-out of ``request``; raises Busy when ``limit`` are under way."""
        fanout = Fanout(request)
        try:
            self._slots.acquire_on_behalf_of_nowait(fanout)
        except trio.WouldBlock:
            raise Busy(f"{self.in_flight} push requests are under way "
                       "([api] max_in_flight)") from None
        self.metrics.push_requests_in_flight.inc()
        self.metrics.activity.add("pushes")
        self._nursery.start_soon(self._run, fanout, deadline, source)
        return fanout

    async def drained(self) -> None:
        """Return once no fan-out is under way."""
        while self._slots.borrowed_tokens:
            await trio.sleep(0.05)

    async def _run(self, fanout: Fanout, deadline: float, source: dict[str, Any]) -> None:
        request = fanout.request
        try:
            fanout.results = await self.pusher.push(request, deadline, source)
        except Exception as error:  # the answer's business (404, 503), or a bug: contained
            if not isinstance(error, UnknownUser | StoreError):
                log.exception("push %s username=%s failed", request.verb, request.username)
            fanout.error = error
        finally:
            if not fanout.done.is_set() and fanout.results is None and fanout.error is None:
                log.warning("push %s username=%s cancelled: the daemon is stopping",
                            request.verb, request.username)
                fanout.error = Stopping("the daemon is stopping")
            fanout.finished = time.perf_counter()
            self._slots.release_on_behalf_of(fanout)
            self.metrics.push_requests_in_flight.dec()
            fanout.done.set()
            for callback in fanout._then:
                try:
                    callback(fanout)
                except Exception:
                    log.exception("push %s username=%s: a follow-up failed", request.verb,
                                  request.username)
