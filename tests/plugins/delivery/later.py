"""later: a plain hook (run in a worker thread) that appends the daemon's trio clock to its
path on every call; the first call asks to be tried again in 0.3 s (RetryLater, as for a
429 with Retry-After)."""

from dataclasses import dataclass

import trio
from pnbridge import RetryLater, hookimpl


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
def device_registered(event, app):
    app.state["calls"] += 1
    with open(app.settings(Settings).path, "a") as file:
        file.write(f"{trio.from_thread.run_sync(trio.current_time)}\n")
    if app.state["calls"] == 1:
        raise RetryLater(0.3, "429 Retry-After: 0.3")
