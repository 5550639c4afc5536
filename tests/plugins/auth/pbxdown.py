"""pbxdown: an auth hook whose PBX is down for user "raises" and blocks (in its thread) for
user "blocks" until the file named by its ``release`` setting exists."""

import os
import time
from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    release: str


@hookimpl
def settings_class():
    return Settings


@hookimpl
def authenticate_report(username, credentials, report, app):
    if username == "raises":
        raise ConnectionError("PBX database down: " + credentials.get("password", ""))
    if username == "blocks":
        while not os.path.exists(app.settings(Settings).release):  # until the test ends
            time.sleep(0.05)
    return True
