"""The install: ``config sample``, ``check-config``, ``doctor``, ``install-units``."""

from __future__ import annotations

import click
import trio

from ..access.auth import security_warnings
from ..access.ratelimit import per_instance_warning
from ..config import paths, running
from ..config.tables import load_config
from ..delivery.commands import config_option, fail
from ..ops.log import escape, redact
from ..storage.engines import engine
from .common import read_plugins


@click.command("check-config")
@config_option
@click.option("--user", "service_user", metavar="NAME",
              help="Check that this user can read (and write) every file the daemon needs "
              f"(default: {paths.SERVICE_USER}, for {paths.DEFAULT_CONFIG}).")
def check_config(config_path: str | None, service_user: str | None) -> None:
    """Validate a config file (and the settings of its plugins); print every error with its key."""
    config = load_config(config_path)
    read_plugins(config)
    engine(config.storage)  # PostgreSQL's driver installed, its password file readable
    try:
        service = paths.service_account(config_path, service_user)
    except ValueError as error:
        fail(str(error))
    limits = per_instance_warning(config)
    for warning in [*security_warnings(config, config_path, service), *filter(None, [limits])]:
        click.echo(f"pnbridge: WARNING: {warning}", err=True)
    for line in running.notes(*running.compare(config)):
        click.echo(f"pnbridge: note: {escape(line)}", err=True)
    if service and (problems := paths.access_problems(config, config_path, service)):
        fail(*(f"error: {problem}" for problem in problems))
    click.echo(f"{config_path or 'embedded defaults'}: OK")


@click.command()
@config_option
@click.option("--user", "user", help="The service user to check access as (default: you).")
@click.option("--root", type=click.Path(file_okay=False),
              help="Check the systemd units of the system image at this directory.")
def doctor(config_path: str | None, user: str | None, root: str | None) -> None:
    """Check the install: config, file access, database, ports, plugins, systemd unit.
    Exit status 0: all ok, 1: a warning, 2: a failure."""
    from ..ops import doctor as checks

    findings = trio.run(checks.run, config_path, user, root)
    for finding in findings:
        click.echo(redact(escape(finding.line())))
    raise SystemExit(checks.exit_status(findings))


@click.group("config")
def config_group() -> None:
    """The example config."""


@config_group.command("sample")
def config_sample() -> None:
    """Print the fully commented example config (every key with its default)."""
    from ..ops.shipped import sample_config

    click.echo(sample_config(), nl=False)


@click.command("install-units")
@click.option("--prefix", default="/", show_default=True, type=click.Path(file_okay=False),
              help="Write under this directory (a system image) instead of /.")
def install_units(prefix: str) -> None:
    """Write the systemd units (ExecStart= this pnbridge) to PREFIX/etc/systemd/system and
    the docs to PREFIX/usr/share/doc/pnbridge."""
    from ..ops.shipped import install_units as write

    try:
        written = write(prefix)
    except OSError as error:
        fail(f"install-units: cannot write {error.filename}: {error.strerror}")
    for path in written:
        click.echo(f"wrote {path}")
