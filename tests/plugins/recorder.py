"""recorder: appends "kind seq selector id" for every registration and removal to its path."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    path: str


@hookimpl
def settings_class():
    return Settings


def record(event, app):
    with open(app.settings(Settings).path, "a") as file:
        file.write(f"{event.kind} {event.seq} {event.selector} {event.id}\n")


@hookimpl
async def device_registered(event, app):
    record(event, app)


@hookimpl
async def device_removed(event, app):
    record(event, app)
