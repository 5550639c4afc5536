"""fine: notes its startup and its shutdown in its log."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    log: str


@hookimpl
def settings_class():
    return Settings


def note(app, text):
    with open(app.settings(Settings).log, "a") as file:
        file.write(text + "\n")


@hookimpl
def startup(app):
    note(app, "startup")


@hookimpl
def shutdown(app):
    note(app, "shutdown")
