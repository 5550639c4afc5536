"""The ``pnbridge`` command: one module per command group (and the commands plugins add),
and the one place where an error for the user (a ``PnbridgeError``) becomes
``pnbridge: ...`` lines on stderr and exit status 1."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from ..delivery.discovery import add_commands
from ..errors import CommandError, shown
from ..ops.log import escape, redact
from . import devices, events, install, keys, push, pushes, serve, store, users


class Main(click.Group):
    """The ``pnbridge`` group: its own commands, and those the plugins add
    (``register_commands``), which are looked for when the command line is read; whatever
    a command raises for the user is shown here."""

    plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self.plugins_added:
            self.plugins_added = True
            for problem in add_commands(self):
                click.echo(f"pnbridge: warning: {escape(problem)}", err=True)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BaseException as error:
            errors = shown(error)
            if errors is None:
                raise
            for line in (line for e in errors for line in e.lines()):
                click.echo(f"pnbridge: {redact(escape(line))}", err=True)
            raise SystemExit(1) from None


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pnbridge")
def main() -> None:
    """Push token and account removal reporter for Acrobits softphones."""
    for arg in sys.argv[1:]:  # bytes that are no UTF-8 arrive as lone surrogates
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError(f"argument {ascii(arg)[:60]} is not valid UTF-8") from None


for command in (
    serve.serve, install.check_config, install.doctor, install.config_group,
    install.install_units, devices.devices, events.plugins_list, events.events,
    users.users_group, push.push, keys.api_key, pushes.pushes,
    store.store_group,
):
    main.add_command(command)
