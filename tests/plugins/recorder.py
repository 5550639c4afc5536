"""recorder: appends "kind seq selector id" for every registration and removal to its path."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    path: str


settings: Settings | None = None


@hookimpl
def settings_class():
    return Settings


@hookimpl
def startup(app):
    global settings
    settings = app.settings(Settings)


def record(event):
    with open(settings.path, "a") as file:
        file.write(f"{event.kind} {event.seq} {event.selector} {event.id}\n")


@hookimpl
async def device_registered(event):
    record(event)


@hookimpl
async def device_removed(event):
    record(event)
