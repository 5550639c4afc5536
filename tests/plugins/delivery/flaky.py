"""flaky: fails its first 3 calls (a CRM that is down), then appends "kind seq selector id"
lines to its path."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    path: str


@hookimpl
def settings_class():
    return Settings


@hookimpl
def startup(app):
    app.state = {"calls": 0}


@hookimpl
async def device_registered(event, app):
    app.state["calls"] += 1
    if app.state["calls"] <= 3:
        raise ConnectionError(f"CRM down (call {app.state['calls']})")
    with open(app.settings(Settings).path, "a") as file:
        file.write(f"{event.kind} {event.seq} {event.selector} {event.id}\n")
