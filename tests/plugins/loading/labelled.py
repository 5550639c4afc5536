"""labelled: notes its startup (with its module name and settings), a background task, each
event and its shutdown in the file named by its ``log`` setting; enabled twice under two
names, as first and second."""

from dataclasses import dataclass

import trio
from pnbridge import hookimpl


@dataclass
class Settings:
    log: str
    label: str
    count: int = 1


settings: Settings | None = None


def note(text):
    with open(settings.log, "a") as file:
        file.write(text + "\n")


async def background():
    try:
        note("background")
        await trio.sleep_forever()
    finally:
        note("cancelled")


@hookimpl
def settings_class():
    return Settings


@hookimpl
async def startup(app):
    global settings
    settings = app.settings(Settings)
    note(f"startup {__name__} {settings.label} {settings.count}")
    app.nursery.start_soon(background)


@hookimpl
def device_registered(event):
    note("event")


@hookimpl
async def shutdown(app):
    await trio.sleep(0)
    note(f"shutdown {__name__}")
