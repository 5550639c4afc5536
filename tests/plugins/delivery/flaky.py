"""flaky: fails its first 3 calls (a CRM that is down), then appends "kind seq selector id"
lines to its path."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    path: str


settings: Settings | None = None
calls = 0


@hookimpl
def settings_class():
    return Settings


@hookimpl
def startup(app):
    global settings
    settings = app.settings(Settings)


@hookimpl
async def device_registered(event):
    global calls
    calls += 1
    if calls <= 3:
        raise ConnectionError(f"CRM down (call {calls})")
    with open(settings.path, "a") as file:
        file.write(f"{event.kind} {event.seq} {event.selector} {event.id}\n")
