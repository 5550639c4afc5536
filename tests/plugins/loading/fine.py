"""fine: notes its startup and its shutdown (a hook without arguments) in its log."""

from dataclasses import dataclass

from pnbridge import hookimpl


@dataclass
class Settings:
    log: str


settings: Settings | None = None


@hookimpl
def settings_class():
    return Settings


@hookimpl
def startup(app):
    global settings
    settings = app.settings(Settings)
    with open(settings.log, "a") as file:
        file.write("startup\n")


@hookimpl
def shutdown():
    with open(settings.log, "a") as file:
        file.write("shutdown\n")
