"""gated: waits for the file named by its ``gate`` setting before appending each event as
"kind seq selector id" to its path."""

import os
from dataclasses import dataclass

import trio
from pnbridge import hookimpl


@dataclass
class Settings:
    path: str
    gate: str


@hookimpl
def settings_class():
    return Settings


async def record(event, settings):
    while not os.path.exists(settings.gate):
        await trio.sleep(0.02)
    with open(settings.path, "a") as file:
        file.write(f"{event.kind} {event.seq} {event.selector} {event.id}\n")


@hookimpl
async def device_registered(event, app):
    await record(event, app.settings(Settings))


@hookimpl
async def device_removed(event, app):
    await record(event, app.settings(Settings))
