"""``pnbridge users``: the users file of the digest and basic reporter modes, and with
``--console`` the console's operators file (``[console] users_file``)."""

from __future__ import annotations

import os
import sys

import click

from ..access import users
from ..config.tables import Config, load_config
from ..delivery.commands import config_option, fail, table


@click.group("users")
def users_group() -> None:
    """Manage the users file of the digest and basic reporter modes ([auth] users_file), or
    with --console the console's operators ([console] users_file)."""


console_option = click.option(
    "--console", is_flag=True,
    help="The console's operators ([console] users_file), not the phones' users.")


def _users_file(config: Config, console: bool) -> tuple[str, dict[str, users.User]]:
    path = config.console.users_file if console else config.auth.users_file
    if not path:
        fail("no operators file: set [console] users_file in the config" if console else
             "no users file: set [auth] users_file in the config")
    if not os.path.exists(path):
        return path, {}
    return path, users.read(path)


@users_group.command("add")
@config_option
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@console_option
def users_add(config_path: str | None, username: str, password_stdin: bool,
              console: bool) -> None:
    """Add USERNAME, or set a new password for it (asked twice on a terminal)."""
    config = load_config(config_path)
    path, known = _users_file(config, console)
    if problem := users.name_problem(username) or users.write_problem(path):
        fail(problem)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        fail("stdin is no terminal: pass the password with --password-stdin")
    if not password:
        fail("the password is empty")
    existed = username in known
    known[username] = users.new_user(username, config.auth.realm, password)
    users.write(path, known)
    click.echo(f"{'changed' if existed else 'added'} {username} (realm {config.auth.realm}) in "
               f"{path}; a running daemon reads it on SIGHUP")


@users_group.command("remove")
@config_option
@click.argument("username")
@console_option
def users_remove(config_path: str | None, username: str, console: bool) -> None:
    """Remove USERNAME from the users file (or the operators file)."""
    path, known = _users_file(load_config(config_path), console)
    if known.pop(username, None) is None:
        fail(f"no user {username} in {path}")
    users.write(path, known)
    click.echo(f"removed {username} from {path}; a running daemon reads it on SIGHUP")


@users_group.command("list")
@config_option
@console_option
def users_list(config_path: str | None, console: bool) -> None:
    """List the users (a realm other than [auth] realm cannot use digest)."""
    config = load_config(config_path)
    path, known = _users_file(config, console)
    if not os.path.exists(path):
        add = "pnbridge users add --console" if console else "pnbridge users add"
        fail(f"no users file at {path} yet: {add} USERNAME creates it")
    if console:
        table([("OPERATOR",), *((name,) for name in sorted(known))])
        return
    rows = [("USERNAME", "REALM")]
    rows += [
        (u.name, u.realm + ("" if u.realm == config.auth.realm else " (not [auth] realm)"))
        for u in sorted(known.values(), key=lambda u: u.name)
    ]
    table(rows)
