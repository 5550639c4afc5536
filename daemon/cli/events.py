"""``pnbridge events`` (the journal and each plugin's delivery state, ``events retry``) and
``pnbridge plugins``."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import click

from ..config import running
from ..config.tables import Config, load_config
from ..delivery.commands import LIMIT_MAX, config_option, fail, json_option, table
from ..delivery.discovery import discover, with_instances
from ..delivery.dispatch import journal_states
from ..errors import StoreError
from ..model import isotime
from ..ops.instance import holder_name
from ..ops.log import escape, redact
from ..storage.engines import engine
from ..storage.interface import Failure, Lease, Store
from .common import open_store

# What the events table and its JSON call a parked event (as --failed does).
SHOWN = {"parked": "failed"}


@click.command("plugins")
@config_option
@json_option
def plugins_list(config_path: str | None, as_json: bool) -> None:
    """List every plugin found, whether it is enabled, and the hooks it implements."""
    config = load_config(config_path)
    errors: list[str] = []
    found = with_instances(discover(config.plugins.paths, errors), config.plugins)
    for line in errors:
        click.echo(f"pnbridge: warning: {escape(line)}", err=True)
    enabled = config.plugins.enabled
    record, differ = running.compare(config)
    for line in running.notes(record, differ):
        click.echo(f"pnbridge: {escape(line)}", err=True)
    runs = {p.name: record is not None and p.name in record.enabled for p in found.values()}
    leases = _leases(config)
    if as_json:  # "running": null when no daemon runs on this database
        click.echo(json.dumps([{**p.to_dict(p.name in enabled),
                                "running": runs[p.name] if record else None,
                                "delivery": leases.get(f"delivery:{p.name}")}
                               for p in found.values()], indent=2))
        return
    # DELIVERED BY: once a daemon took a lease on this database (docs/cluster.md).
    rows = [("NAME", "ENABLED", *["RUNNING"][:bool(record)],
             *["DELIVERED BY"][:bool(leases)], "HOOKS", "SOURCE")]
    rows += [
        (p.name, "yes" if p.name in enabled else "no",
         *["yes" if runs[p.name] else "no"][:bool(record)],
         *[_holder(leases.get(f"delivery:{p.name}"))][:bool(leases)],
         f"error: {p.error}" if p.error else ", ".join(p.hooks) or "-", p.source)
        for p in found.values()
    ]
    table(rows)
    if "maintenance" in leases:
        click.echo(f"maintenance (expiry, pruning): {escape(_holder(leases['maintenance']))}")


def _leases(config: Config) -> dict[str, dict[str, Any]]:
    """Who holds each lease (``lease_shown``); empty when there is no database (a warning
    when it cannot be read)."""
    database = engine(config.storage)
    if not database.exists():
        return {}
    try:
        store = database.open(reading=True)
        try:
            return _shown(store)
        finally:
            store.close()
    except StoreError as error:
        click.echo(f"pnbridge: warning: who delivers what is not known: "
                   f"{escape(error.problem)}", err=True)
        return {}


def _shown(store: Store) -> dict[str, dict[str, Any]]:
    now = time.time()
    return {lease.name: lease_shown(lease, now) for lease in store.leases()}


def lease_shown(lease: Lease, now: float) -> dict[str, Any]:
    """A lease as the commands show it: the holder's instance name, until when, and
    whether that has passed (its holder stopped renewing it: a peer takes it over)."""
    return {"instance": holder_name(lease.holder), "until": isotime(lease.expires_at),
            "expired": lease.expires_at < now}


def _holder(shown: dict[str, Any] | None) -> str:
    """``NAME until TIME`` (``ran out`` once expired), or ``-``."""
    if shown is None:
        return "-"
    return f"{shown['instance']} {'ran out' if shown['expired'] else 'until'} {shown['until']}"


@click.group("events", invoke_without_command=True)
@config_option
@click.option("--plugin", help="Only this plugin's delivery state.")
@click.option("--failed", is_flag=True, help="Only events parked as failed.")
@click.option("--limit", type=click.IntRange(0, LIMIT_MAX), default=100, show_default=True,
              help="List the newest N events of the journal (0: all of it).")
@json_option
@click.pass_context
def events(
    ctx: click.Context, config_path: str | None, plugin: str | None, failed: bool, limit: int,
    as_json: bool,
) -> None:
    """List the event journal (the newest --limit events) and each enabled plugin's delivery
    state."""
    if ctx.invoked_subcommand is not None:
        return
    config = load_config(config_path)
    store = open_store(config, reading=True)
    if failed:
        parked = store.failures(plugin)
        store.close()
        _show_failures(parked, as_json)
        return
    record, differ = running.compare(config)
    for line in running.notes(record, differ):
        click.echo(f"pnbridge: {escape(line)}", err=True)
    plugins = [plugin] if plugin else record.enabled if record else config.plugins.enabled
    listed = [
        (event, {name: SHOWN.get(state, state) for name, state in states.items()})
        for event, states in journal_states(store, plugins, limit)
    ]
    leases = _shown(store)
    store.close()
    for name in plugins:  # on stderr, as the notes above: the table and JSON stay as they are
        click.echo(f"pnbridge: {escape(name)} delivered by "
                   f"{escape(_holder(leases.get(f'delivery:{name}')))}", err=True)
    if as_json:
        data = [{**event.to_dict(), "plugins": status} for event, status in listed]
        click.echo(json.dumps(data, indent=2))
        return
    rows = [("SEQ", "TIME", "KIND", "REASON", "SELECTOR", "USERNAME", "PLUGINS")]
    rows += [
        (str(e.seq), isotime(e.time), e.kind, e.reason, e.selector, e.username,
         " ".join(f"{name}:{state}" for name, state in status.items()) or "-")
        for e, status in listed
    ]
    table(rows)


def _show_failures(parked: list[Failure], as_json: bool) -> None:
    parked = [replace(f, error=redact(f.error)) for f in parked]  # stored by older versions
    if as_json:
        click.echo(json.dumps([f.to_dict() for f in parked], indent=2))
        return
    rows = [("SEQ", "ID", "KIND", "SELECTOR", "PLUGIN", "STATUS", "ATTEMPTS", "ERROR")]
    rows += [
        (str(f.event.seq), f.event.id, f.event.kind, f.event.selector, f.plugin,
         SHOWN.get(f.status, f.status), str(f.attempts), f.error)
        for f in parked
    ]
    table(rows)


@events.command("retry")
@config_option
@click.option("--plugin", help="Only events parked by this plugin.")
@click.argument("event", nargs=-1)
def events_retry(config_path: str | None, plugin: str | None, event: tuple[str, ...]) -> None:
    """Send parked events (seq or id; all when none given) again.

    A running daemon picks them up within a second; otherwise at its next start.
    """
    store = open_store(load_config(config_path))
    with store.transaction():
        count = store.retry(plugin, event)
    store.close()
    if event and not count:
        fail("no parked event matches " + " ".join(event))
    click.echo(f"{count} parked event(s) will be sent again")
