"""threadrec: a plain event hook (it runs in a worker thread, as every thread task of the
daemon does) that appends each registered selector to its path."""

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


@hookimpl
def device_registered(event):
    with open(settings.path, "a") as file:
        file.write(event.selector + "\n")
