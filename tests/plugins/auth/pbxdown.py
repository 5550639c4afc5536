"""pbxdown: an auth hook whose PBX is down for user "raises" and blocks (in its thread) for
user "blocks" until the file named by its ``release`` setting exists."""

import os
import time
from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    release: str


settings: Settings | None = None


@hookimpl
def settings_class():
    return Settings


@hookimpl
def startup(app):
    global settings
    settings = app.settings(Settings)


@hookimpl
def authenticate_report(username, credentials, report):
    if username == "raises":
        raise ConnectionError("PBX database down: " + credentials.get("password", ""))
    if username == "blocks":
        while not os.path.exists(settings.release):  # until the test ends: "forever"
            time.sleep(0.05)
    return True
