"""removals: appends "selector reason token_msgs-before" for every removal to its path."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    path: str


@hookimpl
def settings_class():
    return Settings


@hookimpl
async def device_removed(event, app):
    with open(app.settings(Settings).path, "a") as file:
        file.write(f"{event.selector} {event.reason} {event.before.token_msgs}\n")
