"""later: a plain hook (run in a worker thread) that appends the daemon's trio clock to its
path on every call; the first call asks to be tried again in 0.3 s (RetryLater, as for a
429 with Retry-After)."""

from dataclasses import dataclass

import trio
from pnbridge import RetryLater, hookimpl


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
def device_registered(event):
    global calls
    calls += 1
    with open(settings.path, "a") as file:
        file.write(f"{trio.from_thread.run_sync(trio.current_time)}\n")
    if calls == 1:
        raise RetryLater(0.3, "429 Retry-After: 0.3")
