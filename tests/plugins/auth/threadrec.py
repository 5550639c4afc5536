"""threadrec: a plain event hook (it runs in a worker thread, as every thread task of the
daemon does) that appends each registered selector to its path."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    path: str


@hookimpl
def settings_class():
    return Settings


@hookimpl
def device_registered(event, app):
    with open(app.settings(Settings).path, "a") as file:
        file.write(event.selector + "\n")
