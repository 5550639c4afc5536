"""A test plugin that uses each part of its ``app``: it counts the events it sees in
``app.state`` and in a metric, logs through ``app.log``, and writes one JSON line per event
(its instance's name and count) to the file in its settings."""

from __future__ import annotations

import json
from dataclasses import dataclass

import trio
from pnbridge import Event, PluginContext, hookimpl


@dataclass
class Settings:
    path: str


@hookimpl
def settings_class() -> type[Settings]:
    return Settings


@hookimpl
async def startup(app: PluginContext) -> None:
    app.state = {"seen": 0, "ticks": 0}
    app.log.info("started %s (plugin %s, pnbridge %s)", app.name, app.plugin, app.version)
    app.nursery.start_soon(tick, app)


async def tick(app: PluginContext) -> None:
    app.state["ticks"] += 1
    await trio.sleep_forever()


def record(event: Event, app: PluginContext) -> None:
    app.state["seen"] += 1
    app.metrics.counter("events", "Events the probe saw, by kind.", ["kind"]) \
        .labels(event.kind).inc()
    app.metrics.gauge("seen", "Events the probe saw.").set(app.state["seen"])
    line = {"name": app.name, "plugin": app.plugin, "seen": app.state["seen"],
            "ticks": app.state["ticks"], "selector": event.selector}
    with open(app.settings(Settings).path, "a") as file:
        file.write(json.dumps(line) + "\n")


@hookimpl
async def device_registered(event: Event, app: PluginContext) -> None:
    record(event, app)


@hookimpl
def device_removed(event: Event, app: PluginContext) -> None:
    record(event, app)
