"""picky: until the file named by its ``healed`` setting exists, fails selector BAD for good,
never answers for SLOW and raises for ERR; appends "kind seq selector id" lines to its path
for the rest."""

import os
from dataclasses import dataclass

import trio
from pnbridge import PermanentFailure, hookimpl


@dataclass
class Settings:
    path: str
    healed: str


@hookimpl
def settings_class():
    return Settings


@hookimpl
async def device_registered(event, app):
    settings = app.settings(Settings)
    if not os.path.exists(settings.healed):
        if event.selector == "BAD":
            raise PermanentFailure("no such customer")
        if event.selector == "SLOW":
            await trio.sleep_forever()
        if event.selector == "ERR":
            raise ValueError("bad field")
    with open(settings.path, "a") as file:
        file.write(f"{event.kind} {event.seq} {event.selector} {event.id}\n")
