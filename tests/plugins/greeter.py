"""A test plugin that adds commands (``register_commands``): ``pnbridge greet`` prints the
greeting of each enabled instance, read from ``--config``; ``pnbridge serve`` is pnbridge's
own, so the plugin's is left out."""

from __future__ import annotations

from dataclasses import dataclass

import click
from pnbridge import config_option, fail, hookimpl, plugin_instances, table


@dataclass
class Settings:
    greeting: str = "hello"


@hookimpl
def settings_class() -> type[Settings]:
    return Settings


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command()
    @config_option
    @click.argument("who")
    def greet(config_path: str | None, who: str) -> None:
        """Greet WHO from each enabled instance."""
        apps = plugin_instances(config_path, "greeter")
        if not apps:
            fail("the greeter plugin is not enabled in this config ([plugins] enabled)")
        table([("INSTANCE", "SAYS")] + [
            (name, f"{app.settings(Settings).greeting}, {who}") for name, app in apps.items()
        ])

    @cli.command()
    def serve() -> None:
        """Not pnbridge's serve."""
