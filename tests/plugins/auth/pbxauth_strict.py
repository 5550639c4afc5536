"""pbxauth (strict): a PBX's own password check, against the passwords table of its
settings; a username not in the table is refused."""

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
    return username in known and credentials.get("password") == known[username]
