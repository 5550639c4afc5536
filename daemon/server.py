"""The daemon's trio main: the store, the HTTP server, signals, readiness."""

from __future__ import annotations

import contextlib
import logging
import signal
from functools import partial

import hypercorn.config
import hypercorn.trio
import trio

from .config import Config
from .reporter import Reporter
from .web import Services, create_app
from .writer import open_writer

log = logging.getLogger("pnbridge.server")


def hypercorn_config(config: Config) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    hc.bind = list(config.server.listen)
    hc.graceful_timeout = config.server.grace_period
    hc.accesslog = None
    hc.errorlog = logging.getLogger("pnbridge.http")
    return hc


async def run(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set (or SIGINT/SIGTERM with ``handle_signals``), then drain.

    Reports ``started`` with the addresses it listens on. In-flight requests get
    ``[server] grace_period`` seconds to finish; the database is closed last.
    """
    if shutdown is None:
        shutdown = trio.Event()
    receiver = (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        if handle_signals
        else contextlib.nullcontext()
    )
    with receiver as signals:
        async with open_writer(config.storage.path, config.storage.busy_timeout) as writer:
            services = Services(reporter=Reporter(config.reporter), writer=writer)
            app = create_app(services)
            async with trio.open_nursery() as nursery:
                serve = partial(
                    hypercorn.trio.serve, app, hypercorn_config(config),
                    shutdown_trigger=shutdown.wait,
                )
                binds = await nursery.start(serve)
                log.info("listening on %s, database %s", ", ".join(binds), config.storage.path)
                task_status.started(binds)
                if signals is not None:
                    async for signum in signals:
                        log.info("%s received: finishing requests, then stopping",
                                 signal.Signals(signum).name)
                        break
                    shutdown.set()
        log.info("stopped")
