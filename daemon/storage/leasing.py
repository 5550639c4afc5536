"""The leases this instance keeps through the writer (docs/cluster.md): each named lease
(``delivery:PLUGIN``, ``maintenance``) has one keeper task that takes it (or tries again
every third of the lease time, at most a second, and when the holder's lease runs out)
and, once held, renews it every third of the lease time. Work that must run on one
instance only runs through ``while_held``: it starts when the lease is taken and is
cancelled at once when a renewal fails or finds another holder, or when two thirds of the
lease time passed without a renewal (a process frozen for longer stops before doing more
when it wakes); then it waits to take the lease again.

Expiry is decided by the store's clock, not the instance's: on PostgreSQL the server's
(``clock_timestamp()`` in the SQL; the ``now`` passed is not used), so an instance whose
clock runs ahead cannot find a live holder's lease expired; SQLite is one host, one clock.
The instance's offset from the store's clock is measured at start and at every renewal
(``clock_offset`` in /readyz) and logged as a warning beyond SKEW_WARNING seconds. The
leases use a connection and thread of their own (``Writer.lease``): a renewal never waits
behind the journal's writes. A holder that ran on this machine
and is gone (``ops.instance.gone``: a ``kill -9``) is taken over at once, not after its
lease ran out; one elsewhere, within the lease time. On exit every held lease is
released, so a peer takes over at its next try.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from operator import methodcaller
from typing import TYPE_CHECKING, Any

import trio

from ..errors import StoreError
from ..model import isotime
from ..ops.instance import Instance, gone, holder_name
from .writer import Writer

if TYPE_CHECKING:
    from ..ops.metrics import Metrics

log = logging.getLogger("pnbridge.leases")

RELEASE_TIMEOUT = 5.0  # seconds the releases at shutdown may take
STANDBY_EVERY = 1.0  # seconds between tries to take a lease another holds, at most
SOONEST = 0.05  # seconds between tries at least, however soon a lease runs out
SKEW_WARNING = 2.0  # seconds between this instance's clock and the store's worth a warning


@dataclass
class LeaseState:
    """How one lease stands for this instance: held here, or who else holds it."""

    name: str
    held: bool = False
    until: float = 0.0  # when it runs out (this instance's, or the other holder's)
    deadline: float = math.inf  # trio time when what it covers stops unless renewed
    other: str | None = None  # the other holder's instance name
    scopes: set[trio.CancelScope] = field(default_factory=set)
    gained: trio.Event = field(default_factory=trio.Event)

    def shown(self) -> str:
        """``here until T``, ``NAME until T`` or ``nobody``."""
        if self.held:
            return f"here until {isotime(self.until)}"
        if self.other is not None:
            return f"{self.other} until {isotime(self.until)}"
        return "nobody"


class Leases:
    """This instance's leases: kept by a task each in ``nursery``; ``while_held`` runs
    work under one."""

    def __init__(self, writer: Writer, instance: Instance, ttl: float, nursery: trio.Nursery,
                 metrics: Metrics | None = None):
        self.writer = writer
        self.instance = instance
        self.ttl = ttl
        self.metrics = metrics
        self.states: dict[str, LeaseState] = {}
        self.offset = 0.0  # seconds this instance's clock is ahead of the store's
        self._warned: float | None = None  # the offset last warned of
        self._nursery = nursery

    def state(self, name: str) -> LeaseState:
        """Lease ``name``'s state, its keeper started on first use."""
        if name not in self.states:
            self.states[name] = LeaseState(name)
            self._gauge(name, False)
            self._nursery.start_soon(self._keep, self.states[name])
        return self.states[name]

    async def while_held(self, name: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` whenever this instance holds lease ``name``: started when it is
        taken, cancelled when it is lost, started again when it is taken again. Returns
        when ``task`` does."""
        lease = self.state(name)
        while True:
            while not lease.held:
                await lease.gained.wait()
            with trio.CancelScope(deadline=lease.deadline) as scope:
                lease.scopes.add(scope)
                try:
                    await task()
                    return
                finally:
                    lease.scopes.discard(scope)
            if lease.held and trio.current_time() >= lease.deadline:
                log.warning("lease %s: not renewed in time; stopping what it covers here "
                            "until it is", name)
                self._lose(lease)

    def held(self, prefix: str = "") -> list[str]:
        """The names (without ``prefix``) of the leases starting with it held here."""
        return [n.removeprefix(prefix) for n, s in self.states.items()
                if s.held and n.startswith(prefix)]

    def shown(self) -> dict[str, str]:
        """Each lease: who holds it until when (``LeaseState.shown``)."""
        return {name: state.shown() for name, state in self.states.items()}

    async def watch_clock(self) -> None:
        """Measure the offset from the store's clock now and every third of the lease
        time (as renewals go), until cancelled; warn of a large one."""
        while True:
            try:
                before = time.time()
                server = await self.writer.lease(methodcaller("clock"))
                self._offset((before + time.time()) / 2 - server)
            except StoreError:
                pass  # the leases' own calls say what is wrong
            except trio.ClosedResourceError:
                return
            await trio.sleep(self.ttl / 3)

    def _offset(self, offset: float) -> None:
        self.offset = offset
        if abs(offset) >= SKEW_WARNING:
            if self._warned is None or abs(offset - self._warned) >= SKEW_WARNING:
                log.warning("this instance's clock is %+.1f s off the store's (PostgreSQL "
                            "server's): fix its time sync (NTP); leases keep the store's "
                            "clock", offset)
                self._warned = offset
        elif self._warned is not None:
            log.info("this instance's clock is within %.1f s of the store's again", offset)
            self._warned = None

    async def _keep(self, lease: LeaseState) -> None:
        """Take or renew ``lease``, every third of the lease time, until cancelled."""
        every = self.ttl / 3
        while True:
            now = time.time()
            try:
                if lease.held:
                    kept = await self._call("renew_lease", lease.name, now)
                    if not kept:
                        log.warning("lease %s: taken by another instance; stopping what "
                                    "it covers here", lease.name)
                else:
                    kept = await self._call("take_lease", lease.name, now) or \
                        await self._take_from_gone(lease, now)
            except StoreError as error:
                if lease.held:
                    log.error("lease %s: cannot renew it, stopping what it covers here "
                              "(again in %.1f s): %s", lease.name, every, error)
                kept = False
            except trio.ClosedResourceError:
                return
            if kept:
                self._gain(lease, now + self.ttl)
            else:
                self._lose(lease)
            wait = every if lease.held else min(every, STANDBY_EVERY)
            if not lease.held and lease.other is not None:  # tried again as it runs out
                wait = min(wait, max(lease.until - time.time(), SOONEST))
            await trio.sleep(wait)

    async def _call(self, operation: str, name: str, now: float) -> bool:
        return bool(await self.writer.lease(
            methodcaller(operation, name, self.instance.holder, now, self.ttl)))

    async def _take_from_gone(self, lease: LeaseState, now: float) -> bool:
        """Take ``lease`` from a holder that ran on this machine and is gone; else note
        who holds it until when."""
        rows = await self.writer.lease(methodcaller("leases"))
        row = next((r for r in rows if r.name == lease.name), None)
        if row is None:
            lease.other = None
            return False
        if row.holder != self.instance.holder and gone(row.holder):
            await self.writer.lease(methodcaller("release_lease", row.name, row.holder))
            log.info("lease %s: its holder %s is no longer running: taking it over",
                     lease.name, holder_name(row.holder))
            return await self._call("take_lease", lease.name, now)
        # The row's time is the store's clock: this instance's is ``offset`` ahead.
        lease.other, lease.until = holder_name(row.holder), row.expires_at + self.offset
        return False

    def _gain(self, lease: LeaseState, until: float) -> None:
        lease.until, lease.other = until, None
        lease.deadline = trio.current_time() + until - self.ttl / 3 - time.time()
        for scope in lease.scopes:
            scope.deadline = lease.deadline
        if not lease.held:
            lease.held = True
            log.info("lease %s: held by this instance (%s)", lease.name, self.instance.name)
            self._gauge(lease.name, True)
            lease.gained.set()

    def _lose(self, lease: LeaseState) -> None:
        if lease.held:
            lease.held = False
            lease.gained = trio.Event()
            self._gauge(lease.name, False)
            for scope in lease.scopes:
                scope.cancel()

    def _gauge(self, name: str, held: bool) -> None:
        if self.metrics is not None:
            self.metrics.lease_held.labels(name).set(int(held))

    async def release(self) -> None:
        """Give up every lease held here (what they covered has stopped)."""
        for lease in self.states.values():
            if lease.held:
                self._lose(lease)
                await self.writer.lease(
                    methodcaller("release_lease", lease.name, self.instance.holder))
                log.info("lease %s: released", lease.name)


@asynccontextmanager
async def open_leases(writer: Writer, instance: Instance, ttl: float,
                      metrics: Metrics | None = None) -> AsyncIterator[Leases]:
    """Leases kept until the block ends; then every one held is released (bounded)."""
    async with trio.open_nursery() as nursery:
        leases = Leases(writer, instance, ttl, nursery, metrics)
        nursery.start_soon(leases.watch_clock)
        try:
            yield leases
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT):
                try:
                    await leases.release()
                except (StoreError, trio.ClosedResourceError) as error:
                    log.warning("leases not released (peers take over when they run "
                                "out): %s", error)


def facts(leases: Leases) -> dict[str, Callable[[], Any]]:
    """What /readyz shows of the leases: the plugins this instance delivers, and who
    holds each lease until when, and how far this instance's clock is ahead of the store's
    (seconds)."""
    return {"delivers": lambda: leases.held("delivery:"), "leases": leases.shown,
            "clock_offset": lambda: round(leases.offset, 3)}
