"""pbxauth: a PBX's own password check, against the passwords table of its settings; on a
username not in the table it has no opinion (None), or refuses it with ``refuse_unknown``."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    passwords: dict[str, str]  # username -> password
    refuse_unknown: bool = False


@hookimpl
def settings_class():
    return Settings


@hookimpl
def authenticate_report(username, credentials, report, app):
    settings = app.settings(Settings)
    if username not in settings.passwords:
        return False if settings.refuse_unknown else None
    return credentials.get("password") == settings.passwords[username]
