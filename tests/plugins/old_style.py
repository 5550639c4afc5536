"""A plugin written before hooks had ``app`` (docs/writing-plugins.md's example as it was):
its settings in a module global, event hooks that take only ``event``."""

from __future__ import annotations

from dataclasses import dataclass

from pnbridge import Event, hookimpl


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


@hookimpl
def device_registered(event: Event):
    append(event)


@hookimpl
async def device_removed(event):
    append(event)


def append(event: Event) -> None:
    assert settings is not None
    with open(settings.path, "a", encoding="utf-8") as file:
        file.write(f"{event.kind} {event.selector}\n")
