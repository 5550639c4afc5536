"""The daemon's trio main: the store, the HTTP servers, signals, systemd notification."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import hypercorn.config
import trio
from quart_trio import QuartTrio

from .access.apikeys import ApiKeys
from .access.auth import Guard, load_users, plugin_problems
from .access.digest import Nonces
from .access.operators import Operators, load_operators
from .access.ratelimit import Buckets, Limits
from .agi.service import AgiService
from .config.reload import Reloader
from .config.running import plain, remove_record, restart_values, write_record
from .config.tables import Config
from .config.typed import convert
from .console.app import add_console
from .delivery.dispatch import Dispatcher, open_plugins
from .delivery.pluginhost import RESERVED, PluginHost, load_plugins
from .errors import ConfigError
from .http.app import create_admin_app, create_app
from .http.asgi import close_if_framed_twice, refuse_websockets, shield_sends
from .http.health import database_writable, device_gauge
from .http.shared import Services
from .http.worker import serve
from .ingest.normalize import Reporter
from .ops.expiry import expire_devices
from .ops.instance import Instance
from .ops.log import set_level
from .ops.metrics import Metrics
from .ops.sdnotify import Notifier, keep_watchdog_fed, watchdog_interval
from .push.fanout import Pusher, transport
from .push.history import PushHistory, open_history
from .push.inflight import Fanouts
from .storage.engines import database_name, local_name
from .storage.leasing import facts, open_leases
from .storage.writer import open_writer

log = logging.getLogger("pnbridge.server")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def hypercorn_config(config: Config, binds: list[str], reuse_port: bool = False
                     ) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    hc.bind = list(binds)
    # hypercorn sets SO_REUSEPORT on its TCP sockets when it runs several workers; pnbridge
    # runs none of hypercorn's workers (http/worker.py), so here workers says only that.
    hc.workers = 2 if reuse_port else 1
    _limit(hc, config)
    hc.accesslog = None
    hc.include_server_header = False  # no "server: hypercorn-h11" for fingerprinting
    hc.errorlog = logging.getLogger("pnbridge.http")
    return hc


def _limit(hc: hypercorn.config.Config, config: Config) -> None:
    """Header size and slow-client limits (the body's is the app's MAX_CONTENT_LENGTH)."""
    server = config.server
    hc.graceful_timeout = server.grace_period
    hc.h11_max_incomplete_size = server.max_header_bytes
    hc.h2_max_header_list_size = server.max_header_bytes
    # hypercorn annotates read_timeout as int | None, but hands it to trio.fail_after (a float).
    hc.read_timeout = server.read_timeout  # type: ignore[assignment]
    hc.keep_alive_timeout = server.keep_alive_timeout


def _api_limit(config: Config) -> Buckets:
    return Buckets(config.api.key_rate, config.api.key_burst, capacity=1000)


async def run(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    handle_signals: bool = False,
    load_config: Callable[[], Config] | None = None,
    plugins: PluginHost | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set (or SIGINT/SIGTERM with ``handle_signals``), then drain.

    Reports ``started`` with the addresses the reporter listens on. In-flight requests get
    ``[server] grace_period`` seconds to finish; then plugin delivery stops, the plugins shut
    down, and the database is closed last. With ``handle_signals``, SIGHUP reloads the config
    through ``load_config`` and runs the plugins' ``reload`` hooks. ``plugins`` defaults to
    ``load_plugins(config.plugins)``.
    """
    if plugins is None:
        plugins = load_plugins(config.plugins)
    if problems := plugin_problems(config, plugins):
        raise ConfigError(problems)
    known = await trio.to_thread.run_sync(load_users, config)
    operators = await trio.to_thread.run_sync(load_operators, config)
    if shutdown is None:
        shutdown = trio.Event()
    notifier = Notifier()
    signals_in = (*STOP_SIGNALS, signal.SIGHUP)
    receiver = trio.open_signal_receiver(*signals_in) if handle_signals else None
    metrics = Metrics()
    instance = Instance.create(config.server.instance)
    metrics.instance_info.labels(instance.name).set(1)
    try:
        with receiver or contextlib.nullcontext() as signals:
            async with (
                open_writer(config.storage) as writer,
                # Released last: what they cover has stopped (docs/cluster.md).
                open_leases(writer, instance, config.plugins.lease_time, metrics) as leases,
                # Its task writes the fan-outs' records; what is left, before the store closes.
                open_history(writer, config.storage, metrics, leases) as history,
                open_plugins(plugins, writer, config.plugins, leases) as dispatcher,
                trio.open_nursery() as pushes,
            ):
                services = Services(
                    reporter=Reporter(config.reporter), writer=writer,
                    guard=Guard(config.auth, known, plugins,
                                await Nonces.open(writer, config.auth.nonce_lifetime)),
                    limits=Limits.of(config), max_devices=config.storage.max_devices_per_user,
                    max_headers=config.server.max_headers, access_log=config.server.access_log,
                    api=config.api, api_keys=ApiKeys(config.api), api_limit=_api_limit(config),
                    metrics=metrics,
                )
                if config.console.enabled:
                    services.operators = Operators(config.console, config.auth, operators)
                    services.dispatcher = dispatcher
                pusher = _pusher(config, plugins, services, history)
                services.readiness.add("database", database_writable(writer))
                services.readiness.note("instance", lambda: instance.name)
                for name, fact in facts(leases).items():
                    services.readiness.note(name, fact)
                if pusher is not None:
                    # The fan-outs run in the daemon's nursery, not in the requests'.
                    services.fanouts = Fanouts(pusher, pushes, config.api.max_in_flight)
                    services.readiness.add("push transport", pusher.ready)
                services.metrics.refreshers.append(device_gauge(services.metrics, writer))
                dispatcher.observe(services.metrics, services.readiness)
                await _serve(config, services, shutdown, signals, load_config, notifier,
                             dispatcher, task_status)
                pushes.cancel_scope.cancel()  # what _serve's drain left: logged as cancelled
            log.info("stopped")
    finally:
        notifier.close()


def _pusher(
    config: Config, plugins: PluginHost, services: Services, history: PushHistory
) -> Pusher | None:
    send = transport(plugins)
    if send is None:
        if config.api.keys or config.api.key_hashes:
            log.warning("the push API answers 503: no enabled plugin sends pushes "
                        "(enable pnmediator)")
        return None
    return Pusher(services.writer, send, services.metrics, history)


async def _serve(
    config: Config,
    services: Services,
    shutdown: trio.Event,
    signals: AsyncIterator[int] | None,
    load_config: Callable[[], Config] | None,
    notifier: Notifier,
    dispatcher: Dispatcher,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    admin = config.server.admin_listen
    app = create_app(services, health=not admin, api=not config.api.admin_only)
    servers = [(app, hypercorn_config(config, config.server.listen, config.server.reuse_port))]
    # The console: on the admin listener; on listen too only with [console] on_listen.
    consoles = [app] if config.console.on_listen else []
    if admin:
        admin_app = create_admin_app(services, api=config.api.admin_only)
        servers.append((admin_app, hypercorn_config(config, admin)))
        consoles.append(admin_app)
    for served, _ in servers:
        _body_limits(served, config)
    for served in consoles if config.console.enabled else []:
        add_console(served, services)
    plugins = dispatcher.host
    reloader = Reloader(config, load_config or (lambda: config), plugins)
    reloader.add(partial(_web_step, services, servers))
    restarts: dict[str, Any] = {}  # plugin: its new settings, set by a reload
    reloader.add(partial(_plugin_step, dispatcher, restarts))
    database = local_name(config.storage)
    record = partial(write_record, database, plugins.enabled)
    await trio.to_thread.run_sync(record, restart_values(config, plugins.settings))
    async with trio.open_nursery() as helpers:
        if (interval := watchdog_interval()) is not None:
            helpers.start_soon(keep_watchdog_fed, notifier, interval)
        if signals is not None:
            helpers.start_soon(_on_signals, signals, partial(
                _reload, reloader, notifier, dispatcher, restarts, record), shutdown, plugins)
        if (expire_after := config.storage.expire_seconds) is not None:
            helpers.start_soon(dispatcher.leases.while_held, "maintenance", partial(
                expire_devices, services.writer, expire_after, services.metrics))
        async with trio.open_nursery() as nursery:
            binds = []
            for served, hc in servers:
                binds.append(await nursery.start(partial(
                    serve, refuse_websockets(close_if_framed_twice(shield_sends(served))), hc,
                    services.metrics.connection_errors,
                    shutdown_trigger=shutdown.wait)))
            if config.agi.listen:
                agi = AgiService(config.agi, services.fanouts, services.metrics,
                                 lambda: services.api.deadlines, config.server.reuse_port)
                await nursery.start(agi.serve, shutdown)
            log.info("listening on %s, database %s",
                     ", ".join(binds[0]), database_name(config.storage))
            if admin:
                log.info("health and metrics on %s", ", ".join(binds[1]))
            status = f"listening on {', '.join(binds[0])}"
            notifier.ready(status)
            task_status.started(binds[0])
            await shutdown.wait()
            grace = servers[0][1].graceful_timeout
            ends = trio.current_time() + grace
            log.info("stopping: finishing requests (at most %g s)", grace)
            notifier.stopping(f"stopping: finishing requests (at most {grace:g} s)")
        if services.fanouts is not None:
            # Pushes whose clients left run on to their deadlines, within the same grace.
            with trio.move_on_at(ends):
                await services.fanouts.drained()
        helpers.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(remove_record, database)


async def _on_signals(
    signals: AsyncIterator[int],
    reload: Callable[[], Awaitable[None]],
    shutdown: trio.Event,
    plugins: PluginHost,
) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum in STOP_SIGNALS:
            log.info("%s received: finishing requests, then stopping", name)
            shutdown.set()
        elif not shutdown.is_set():
            await reload()
            await plugins.reload()


async def _reload(
    reloader: Reloader, notifier: Notifier, dispatcher: Dispatcher, restarts: dict[str, Any],
    record: Callable[[dict[str, Any]], None],
) -> None:
    log.info("SIGHUP received: reloading the config")
    notifier.reloading()
    try:
        waiting = await reloader.reload()
    except ConfigError as error:
        for line in error.errors:
            log.error("reload failed, keeping the running config: %s", line)
        more = f" (and {len(error.errors) - 1} more)" if len(error.errors) > 1 else ""
        notifier.ready(f"reload failed, running the old config: {error.errors[0]}{more}")
        return
    status = ["config reloaded"]
    for name, settings in restarts.items():
        if (problem := await dispatcher.restart(name, settings)) is None:
            log.info("plugin %s: restarted with its new settings", name)
            status.append(f"plugin {name} restarted with its new settings")
        else:
            log.error("plugin %s: startup with its new settings failed, running its old "
                      "settings: %s", name, problem)
            status.append(f"plugin {name} kept its old settings: startup failed: {problem}")
    restarts.clear()
    await trio.to_thread.run_sync(
        record, restart_values(reloader.started, dispatcher.host.settings)
    )
    if waiting:
        log.warning("changed but only at the next start: %s", ", ".join(waiting))
        status.append(f"changed but only at the next start: {', '.join(waiting)}")
    log.info("config reloaded")
    notifier.ready("; ".join(status))


def _body_limits(app: QuartTrio, config: Config) -> None:
    """The largest request body and the time it may take to arrive, on either app."""
    app.config["MAX_CONTENT_LENGTH"] = config.reporter.max_body
    app.config["BODY_TIMEOUT"] = config.server.body_timeout


def _plugin_step(
    dispatcher: Dispatcher, restarts: dict[str, Any], new: Config, plugins: PluginHost
) -> Callable[[], None]:
    """The reload step of plugin delivery: each running plugin's ``[plugins.NAME.delivery]``
    limits, the journal's retention, and in ``restarts`` the new settings of each running
    plugin that only takes events (``_reload`` restarts it with them)."""
    host = dispatcher.host
    delivery = {n: plugins.delivery[n] for n in host.enabled if n in plugins.delivery}
    changed: dict[str, Any] = {}
    for name in host.enabled:
        if name not in plugins.settings or not host.restartable(name):
            continue
        errors: list[str] = []
        table = {k: v for k, v in new.plugins.tables.get(name, {}).items()
                 if k not in RESERVED}
        # In the class the running plugin asks for (a plugins-directory file was loaded anew).
        settings = convert(type(host.settings[name]), table, f"plugins.{name}", errors)
        if errors:
            raise ConfigError(errors)
        if plain(settings) != plain(host.settings[name]):
            changed[name] = settings

    def apply() -> None:
        host.delivery.update(delivery)
        dispatcher.config = new.plugins
        restarts.update(changed)

    return apply


def _web_step(
    services: Services, servers: list[tuple[QuartTrio, hypercorn.config.Config]], new: Config,
    _plugins: PluginHost,
) -> Callable[[], None]:
    """The reload step of the web layer: routes, field aliases, auth settings and the users
    file, limits, API keys and deadlines, logging, grace period."""
    reporter = Reporter(new.reporter)
    old = services.guard
    if problems := plugin_problems(new, old.plugins):
        raise ConfigError(problems)
    guard = Guard(new.auth, load_users(new), old.plugins, old.nonces, old.slots)
    limits = Limits.of(new)
    api_keys, api_limit = ApiKeys(new.api), _api_limit(new)
    operators = load_operators(new)

    def apply() -> None:
        if services.operators is not None:
            services.operators.update(new.console, new.auth, operators)
        services.reporter = reporter
        services.guard = guard
        guard.slots.resize(new.auth)
        guard.nonces.lifetime = new.auth.nonce_lifetime
        services.limits = limits
        services.max_devices = new.storage.max_devices_per_user
        services.max_headers = new.server.max_headers
        services.access_log = new.server.access_log
        services.api, services.api_keys, services.api_limit = new.api, api_keys, api_limit
        if services.fanouts is not None:
            services.fanouts.limit = new.api.max_in_flight
        for app, hc in servers:
            _body_limits(app, new)
            _limit(hc, new)
        set_level(new.server.log_level)

    return apply
