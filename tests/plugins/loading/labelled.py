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


def note(app, text):
    with open(app.settings(Settings).log, "a") as file:
        file.write(text + "\n")


async def background(app):
    try:
        note(app, "background")
        await trio.sleep_forever()
    finally:
        note(app, "cancelled")


@hookimpl
def settings_class():
    return Settings


@hookimpl
async def startup(app):
    settings = app.settings(Settings)
    note(app, f"startup {__name__} {settings.label} {settings.count}")
    app.nursery.start_soon(background, app)


@hookimpl
def device_registered(event, app):
    note(app, "event")


@hookimpl
async def shutdown(app):
    await trio.sleep(0)
    note(app, f"shutdown {__name__}")
