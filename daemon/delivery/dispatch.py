"""Delivery of the event journal to plugins, and pruning of the journal.

Of instances sharing a store (docs/cluster.md) only the one holding a plugin's lease
``delivery:PLUGIN`` delivers its events (stopping at once when it is lost; the next holder
goes on from the saved cursor), and the one holding ``maintenance`` prunes the journal.

One trio task per enabled plugin reads the journal from that plugin's durable cursor and
calls its hook for one event at a time, so events reach it in journal order (and so in order
per device). An event counts as passed only once the hook returned, or once it was parked;
the cursors that moved are saved together every SAVE_INTERVAL, so a crash redelivers at most
what was delivered since (at least once). A failed call is retried with exponential backoff
and jitter (or after the delay a ``RetryLater`` asks for) until the plugin's attempt or age
limit, then the event is parked and delivery goes on. A plugin that fails or hangs holds
back only its own task: the reporter only writes the journal and never waits for delivery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from operator import methodcaller
from typing import TYPE_CHECKING

import trio

from ..config.tables import PluginsConfig
from ..errors import StoreError
from ..model import DeliveryOutcome, Event, JournalState
from ..ops.log import describe, redact
from ..retry import backoff
from ..storage.interface import Store
from ..storage.leasing import Leases
from ..storage.writer import Writer
from .containment import uncontained
from .hookspecs import PermanentFailure, RetryLater
from .pluginhost import PluginHost

if TYPE_CHECKING:
    from ..ops.metrics import Metrics
    from ..ops.readiness import Readiness

log = logging.getLogger("pnbridge.dispatch")

BATCH = 100
SAVE_INTERVAL = 0.5  # cursors are saved this often (a crash redelivers what was not)
SAVE_TIMEOUT = 5.0
SHUTDOWN_TIMEOUT = 10.0
STORAGE_RETRY_FIRST = 0.2  # waits after a storage error, doubling up to the max
STORAGE_RETRY_MAX = 5.0
# /readyz names a plugin once this many delivery attempts in a row failed (a plugin that
# keeps failing: an unwritable audit log, a receiver that is down); a success clears it.
FAILING_IN_A_ROW = 3

HOOK_OF_KIND = {"registered": "device_registered", "removed": "device_removed"}


@dataclass
class PluginState:
    """How one plugin's delivery stands (for logs, metrics and readiness)."""

    name: str
    running: bool = False
    standby: bool = False  # another instance holds its lease: it delivers, not this one
    cursor: int = 0
    saved: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    parked: int = 0
    retrying: bool = False
    last_error: str | None = None
    failing: int = 0  # attempts failed in a row
    in_retry: tuple[Event, int, float] | None = None  # retried in memory: attempts, next try


class Dispatcher:
    """Delivers the journal to every enabled plugin; prunes what all of them passed."""

    def __init__(self, host: PluginHost, writer: Writer, config: PluginsConfig,
                 leases: Leases):
        self.host = host
        self.writer = writer
        self.config = config
        self.leases = leases
        self.states = {name: PluginState(name) for name in host.enabled}
        self._threads = {name: trio.CapacityLimiter(1) for name in host.enabled}
        # Held by each hook call, and while the plugin restarts with new settings.
        self._gates = {name: trio.Lock() for name in host.enabled}
        self.metrics: Metrics | None = None

    def wake(self) -> None:
        """Deliver now, not at the next poll (the console's retry asked for parked events)."""
        self.writer.wake_readers()

    def observe(self, metrics: Metrics, readiness: Readiness) -> None:
        """Count deliveries in ``metrics``, keep its journal gauges fresh, and make each
        plugin's delivery task a readiness check."""
        self.metrics = metrics
        self.host.observe(metrics)
        metrics.refreshers.append(self._refresh_gauges)
        for state in self.states.values():
            readiness.add(f"plugin {state.name}", partial(_healthy, state))

    async def _refresh_gauges(self) -> None:
        assert self.metrics is not None
        now = time.time()
        saved = await self.writer.call(methodcaller("cursors"))  # a peer's, on standby
        for state in self.states.values():
            cursor = max(state.cursor, saved.get(state.name, 0))
            count, oldest = await self.writer.call(methodcaller("backlog", cursor))
            self.metrics.journal_pending.labels(state.name).set(count)
            self.metrics.journal_oldest_age.labels(state.name).set(
                now - oldest if oldest is not None else 0
            )

    def _count(self, name: str, outcome: DeliveryOutcome) -> None:
        if self.metrics is not None:
            self.metrics.deliveries.labels(name, outcome).inc()

    def _failed(self, task: str) -> None:
        if self.metrics is not None:
            self.metrics.task_errors.labels(task).inc()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver and prune until cancelled; ``started`` once every plugin's cursor is read."""
        cursors = await self.writer.call(methodcaller("cursors"))
        for state in self.states.values():
            state.cursor = state.saved = cursors.get(state.name, 0)
            state.running = True
        try:
            async with trio.open_nursery() as nursery:
                for state in self.states.values():
                    nursery.start_soon(self._deliver_while_held, state)
                nursery.start_soon(_outlast_storage_errors, "saving cursors", self._save_cursors,
                                   partial(self._failed, "cursors"))
                nursery.start_soon(self.leases.while_held, "maintenance", partial(
                    _outlast_storage_errors, "pruning", self._prune,
                    partial(self._failed, "pruning")))
                task_status.started()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(SAVE_TIMEOUT):
                try:
                    await self._save()
                except (trio.ClosedResourceError, StoreError) as error:
                    log.warning("plugin cursors not saved (events may come again): %s", error)

    async def _deliver_while_held(self, state: PluginState) -> None:
        """Deliver to ``state``'s plugin whenever this instance holds its lease."""

        async def deliver() -> None:
            state.standby = False
            try:
                await _outlast_storage_errors(
                    f"delivery to {state.name}", partial(self._deliver_all, state),
                    partial(self._failed, "delivery"))
            finally:
                state.standby, state.running, state.in_retry = True, False, None

        state.standby = True
        await self.leases.while_held(f"delivery:{state.name}", deliver)

    async def _deliver_all(self, state: PluginState) -> None:
        # From the saved cursor, when it is further: another instance delivered meanwhile.
        saved = (await self.writer.call(methodcaller("cursors"))).get(state.name, 0)
        state.cursor, state.saved = max(state.cursor, saved), max(state.saved, saved)
        state.running = True  # again, after a storage error
        try:
            while True:
                wake = self.writer.journal_written()
                retries, events = await self.writer.call(
                    methodcaller("pending", state.name, state.cursor, BATCH)
                )
                for failure in retries:
                    await self._deliver_or_park(state, failure.event, retried=True)
                for event in events:
                    await self._deliver_or_park(state, event)
                    state.cursor = event.seq
                if not retries and len(events) < BATCH:
                    # This process's commits wake it; a peer's are seen at the next poll.
                    with trio.move_on_after(self.config.poll_interval):
                        await wake.wait()
        finally:
            state.running = False

    async def _save_cursors(self) -> None:
        while True:
            await trio.sleep(SAVE_INTERVAL)
            await self._save()

    async def _save(self) -> None:
        """Save the cursors that moved, in one transaction."""
        moved = {s.name: s.cursor for s in self.states.values() if s.cursor > s.saved}
        if moved:
            await self.writer.call(_save_cursors, moved, time.time())
            for name, cursor in moved.items():
                self.states[name].saved = max(self.states[name].saved, cursor)

    async def _deliver_or_park(
        self, state: PluginState, event: Event, retried: bool = False
    ) -> None:
        """``_deliver``; an event it cannot take at all (not a plugin's failure: one of a
        kind this version does not know, say) is logged, counted and parked at once."""
        try:
            await self._deliver(state, event, retried)
        except StoreError:
            raise
        except Exception as error:
            log.error("plugin %s: cannot deliver event %s (seq %d), parked: %s",
                      state.name, event.id, event.seq, describe(error))
            self._failed("delivery")
            now = time.time()
            await self.writer.call(
                methodcaller("park", state.name, event, 1, describe(error), now, now))
            state.parked += 1

    async def _deliver(self, state: PluginState, event: Event, retried: bool = False) -> None:
        """Deliver ``event`` until it succeeds or is parked."""
        name, limits = state.name, self.host.delivery[state.name]
        hook = HOOK_OF_KIND[event.kind]
        first_try = time.time()
        attempt = 0
        while True:
            attempt += 1
            delay: float | None
            try:
                with trio.fail_after(limits.timeout):
                    await self._call(name, hook, event)
            except PermanentFailure as error:
                problem, delay = f"permanent failure: {error}", None
            except RetryLater as error:
                problem, delay = f"retry later: {error}", max(0.0, error.seconds)
            except trio.TooSlowError:
                problem = f"timed out after {limits.timeout:g}s"
                delay = backoff(attempt, limits.backoff, limits.max_backoff)
            except BaseException as error:  # anything the plugin raised is its own failure
                if (up := uncontained(error)) is not None:
                    raise up from None
                problem = describe(error)
                delay = backoff(attempt, limits.backoff, limits.max_backoff)
            else:
                state.delivered += 1
                self._count(name, "delivered")
                state.retrying, state.last_error, state.failing = False, None, 0
                state.in_retry = None
                if retried:
                    await self.writer.call(methodcaller("unpark", name, event.seq))
                return
            state.failed_attempts += 1
            state.failing += 1
            problem = state.last_error = redact(problem)  # a URL's credentials never stored
            if (
                delay is None
                or attempt >= limits.max_attempts
                or time.time() + delay - first_try > limits.max_age
            ):
                log.warning(
                    "plugin %s: parked event %s (seq %d) after %d attempt(s): %s",
                    name, event.id, event.seq, attempt, problem,
                )
                await self.writer.call(
                    methodcaller("park", name, event, attempt, problem, first_try, time.time())
                )
                state.saved = max(state.saved, event.seq)
                state.parked += 1
                self._count(name, "parked")
                state.retrying, state.in_retry = False, None
                return
            log.warning(
                "plugin %s: event %s (seq %d) attempt %d failed: %s; next in %.2fs",
                name, event.id, event.seq, attempt, problem, delay,
            )
            state.retrying, state.in_retry = True, (event, attempt, time.time() + delay)
            self._count(name, "retried")
            await trio.sleep(delay)

    async def _call(self, name: str, hook: str, event: Event) -> None:
        """An async hook runs on the loop; a plain one in the plugin's own worker thread.

        The plugin's gate is taken without a trip through the scheduler when it is free (no
        restart holds it): ``async with`` a trio.Lock yields on every acquire, and that one
        yield per event (an epoll call and a pass over every task) was most of a no-op
        delivery's cost. The loop still yields once per batch, reading the next events."""
        gate = self._gates[name]
        try:
            gate.acquire_nowait()
        except trio.WouldBlock:
            await gate.acquire()
        try:
            if self.host.is_async(name, hook):
                await self.host.call(name, hook, event=event)
                return
            call = partial(self.host.call_sync, name, hook, event=event)
            await trio.to_thread.run_sync(
                call, limiter=self._threads[name], abandon_on_cancel=True
            )
        finally:
            gate.release()

    async def restart(self, name: str, settings: object) -> str | None:
        """Restart plugin ``name`` with new settings (``PluginHost.restart``) once the event
        it is given, if any, is done; its delivery waits, then goes on from its cursor."""
        async with self._gates[name]:
            return await self.host.restart(name, settings)

    async def _prune(self) -> None:
        while True:
            before = time.time() - self.config.retention
            pruned = await self.writer.call(methodcaller("prune", self.host.enabled, before))
            if pruned:
                log.info("pruned %d journal event(s) every plugin has passed", pruned)
            await trio.sleep(self.config.prune_interval)


def journal_states(
    store: Store, plugins: Sequence[str], limit: int
) -> list[tuple[Event, dict[str, JournalState]]]:
    """The newest ``limit`` journal events (0: all of it), oldest first, each with how it
    stands for each of ``plugins``: delivered (the plugin's cursor passed it), pending, or
    its failure's status (parked, retry)."""
    cursors = store.cursors()
    failed = {(f.plugin, f.event.seq): f.status for f in store.failures()}
    journal = store.newest_events(limit) if limit else store.events(0, limit=-1)
    return [
        (event, {
            name: failed.get((name, event.seq))
            or ("delivered" if event.seq <= cursors.get(name, 0) else "pending")
            for name in plugins
        })
        for event in journal
    ]


async def _outlast_storage_errors(
    what: str, task: Callable[[], Awaitable[None]], failed: Callable[[], None]
) -> None:
    """Run ``task``, and again after each storage error (a locked, read-only or full
    database), waiting longer each time up to STORAGE_RETRY_MAX: the fault may clear. Any
    other error is logged with its traceback and outlasted the same way: the task never
    dies. ``failed`` counts each error."""
    failures = 0
    while True:
        try:
            await task()
            return
        except Exception as error:
            failures += 1
            failed()
            wait = backoff(failures, STORAGE_RETRY_FIRST, STORAGE_RETRY_MAX)
            if isinstance(error, StoreError):
                log.error("%s: storage error (again in %.1fs): %s", what, wait, error)
            else:
                log.exception("%s: unexpected error (again in %.1fs)", what, wait)
            await trio.sleep(wait)


async def _healthy(state: PluginState) -> str | None:
    if state.standby:
        return None  # another instance delivers
    if not state.running:
        return "delivery task is not running"
    if state.failing >= FAILING_IN_A_ROW:
        return f"the last {state.failing} delivery attempts failed: {state.last_error}"
    return None


def _save_cursors(store: Store, cursors: dict[str, int], now: float) -> None:
    for name, cursor in cursors.items():
        store.save_cursor(name, cursor, now)


@asynccontextmanager
async def open_plugins(
    host: PluginHost, writer: Writer, config: PluginsConfig, leases: Leases
) -> AsyncIterator[Dispatcher]:
    """Start the plugins and their delivery (under ``leases``); on exit stop delivery, then
    the plugins.

    Raises PluginError when a plugin's ``startup`` fails.
    """
    async with trio.open_nursery() as plugin_tasks:
        host.attach(plugin_tasks)
        await host.startup()
        dispatcher = Dispatcher(host, writer, config, leases)  # the plugins that did start
        try:
            async with trio.open_nursery() as delivery:
                await delivery.start(dispatcher.run)
                if host.enabled:
                    log.info("delivering events to plugin(s) %s", ", ".join(host.enabled))
                try:
                    yield dispatcher
                finally:
                    delivery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
                await host.shutdown()
            plugin_tasks.cancel_scope.cancel()
