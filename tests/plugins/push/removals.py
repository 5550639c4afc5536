"""removals: appends "selector reason token_msgs-before" for every removal to its path."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    path: str


path = None


@hookimpl
def settings_class():
    return Settings


@hookimpl
def startup(app):
    global path
    path = app.settings(Settings).path


@hookimpl
async def device_removed(event):
    with open(path, "a") as file:
        file.write(f"{event.selector} {event.reason} {event.before.token_msgs}\n")
