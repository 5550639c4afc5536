"""Containment: a plugin's failure stays the plugin's. What must go on up all the same (a
cancellation, Ctrl-C, an exit: ``uncontained``), and the nursery a plugin runs its
background tasks in (``app.nursery``), whose failed tasks end alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import trio


class Host(Protocol):
    """What a plugin's nursery needs of the plugin host."""

    tasks: dict[str, set[trio.CancelScope]]

    def failed(self, plugin: str, where: str, error: BaseException) -> None: ...


# What a plugin raises that is not the plugin's failure but the daemon's own business: a
# cancellation (a timeout, the shutdown), Ctrl-C, an exit.
NOT_CONTAINED = (trio.Cancelled, KeyboardInterrupt, SystemExit)


def uncontained(error: BaseException) -> BaseException | None:
    """The part of ``error`` (a plugin's) that must go on up (NOT_CONTAINED, also inside an
    exception group), or None when all of it is the plugin's own failure."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(NOT_CONTAINED)[0]
    return error if isinstance(error, NOT_CONTAINED) else None


class PluginNursery:
    """The nursery one plugin starts its background tasks in (``app.nursery``). A task that
    fails after it started is logged and counted, and ends alone: never the daemon."""

    def __init__(self, nursery: trio.Nursery, host: Host, plugin: str):
        self._nursery = nursery
        self._host = host
        self.plugin = plugin

    @property
    def cancel_scope(self) -> trio.CancelScope:
        return self._nursery.cancel_scope

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        self._nursery.start_soon(self._run, partial(fn, *args), False, name=name or fn)

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Like ``trio.Nursery.start``: a failure before ``task_status.started()`` is
        raised here, to the plugin; one after it is contained."""
        return await self._nursery.start(self._run, partial(fn, *args), True, name=name or fn)

    async def _run(
        self, task: Callable[..., Awaitable[Any]], with_status: bool,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        status = _Status(task_status)
        tasks = self._host.tasks.setdefault(self.plugin, set())
        with trio.CancelScope() as scope:  # cancelled when the plugin restarts alone
            tasks.add(scope)
            try:
                await (task(task_status=status) if with_status else task())
            except BaseException as error:
                if (up := uncontained(error)) is not None:
                    raise up from None
                if with_status and not status.done:
                    raise
                self._host.failed(self.plugin, "task", error)
            finally:
                tasks.discard(scope)


class _Status:
    """A task status that remembers whether the task said it started."""

    def __init__(self, inner: trio.TaskStatus[Any]):
        self.inner = inner
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self.inner.started(value)
