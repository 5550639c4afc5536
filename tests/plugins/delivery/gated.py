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


settings: Settings | None = None


@hookimpl
def settings_class():
    return Settings


@hookimpl
def startup(app):
    global settings
    settings = app.settings(Settings)


async def record(event):
    while not os.path.exists(settings.gate):
        await trio.sleep(0.02)
    with open(settings.path, "a") as file:
        file.write(f"{event.kind} {event.seq} {event.selector} {event.id}\n")


@hookimpl
async def device_registered(event):
    await record(event)


@hookimpl
async def device_removed(event):
    await record(event)
