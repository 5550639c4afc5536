"""pbxauth: a PBX's own password check, against the passwords table of its settings; it has
no opinion (None) on a username not in the table."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    passwords: dict[str, str]  # username -> password


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
    known = settings.passwords
    if username not in known:
        return None
    return credentials.get("password") == known[username]
