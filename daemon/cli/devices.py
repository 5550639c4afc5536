"""``pnbridge devices``: list, show, remove, export and import stored devices."""

from __future__ import annotations

import json
import time
from typing import Any, BinaryIO

import click

from ..config.tables import load_config
from ..delivery.commands import LIMIT_MAX, config_option, fail, json_option, table
from ..errors import StoreError
from ..ingest import transfer
from ..ingest.normalize import Reporter
from ..model import Device, Event, isotime
from ..ops.log import escape, shorten
from .common import open_output, open_store, progress
from .pushes import push_rows

# How many journal events and pushes devices show lists.
SHOWN = 10


@click.group()
def devices() -> None:
    """List, show and remove stored devices (no running daemon needed)."""


@devices.command("list")
@config_option
@click.option("--username", help="Only this user's devices.")
@click.option("--limit", type=click.IntRange(0, LIMIT_MAX), default=0, show_default=True,
              help="List the first N devices (0: all); the count goes to stderr.")
@json_option
def devices_list(config_path: str | None, username: str | None, limit: int,
                 as_json: bool) -> None:
    """List devices (by username and selector); how many there are goes to stderr."""
    store = open_store(load_config(config_path), reading=True)
    found = store.devices(username, limit or -1)
    total = store.count_devices(username) if limit else len(found)
    store.close()
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in found], indent=2))
    else:
        rows = [("SELECTOR", "USERNAME", "CALLS TOKEN", "MSGS TOKEN", "LAST SEEN")]
        rows += [
            (d.selector, d.username, shorten(d.token_calls), shorten(d.token_msgs),
             isotime(d.last_seen))
            for d in found
        ]
        table(rows)
    shown = f"{len(found):,} of " if len(found) < total else ""
    click.echo(f"{shown}{total:,} device{'' if total == 1 else 's'}", err=True)


@devices.command("show")
@config_option
@click.argument("selector")
@json_option
def devices_show(config_path: str | None, selector: str, as_json: bool) -> None:
    """Show one device in full (last_seen: its last report), its newest journal events (what
    its reports changed) and its last pushes."""
    store = open_store(load_config(config_path), reading=True)
    try:
        device = store.device(selector)
        events = store.device_events(selector=selector, limit=SHOWN) if device else []
        pushed = store.pushes(selector=selector, limit=SHOWN) if device else []
    finally:
        store.close()
    if device is None:
        fail(f"no device with selector {selector}")
    if as_json:
        click.echo(json.dumps({**device.to_dict(), "events": [_event(e) for e in events],
                               "pushes": [r.to_dict() for r in pushed]}, indent=2))
        return
    for key, value in _describe(device).items():
        click.echo(f"{key + ':':<13} {escape(value)}")
    click.echo(f"\njournal events, newest first:{'' if events else ' none'}")
    if events:
        table([("TIME", "KIND", "REASON", "SOURCE")] + [
            (isotime(e.time), e.kind, e.reason, json.dumps(e.source, separators=(",", ":")))
            for e in events])
    click.echo(f"\npushes, newest first:{'' if pushed else ' none'}")
    if pushed:
        table(push_rows(pushed, device=False))


def _event(event: Event) -> dict[str, Any]:
    """A journal event as ``devices show --json`` lists it (the device is shown once)."""
    return {key: value for key, value in event.to_dict().items()
            if key not in ("before", "after", "selector", "username")}


def _describe(device: Device) -> dict[str, Any]:
    data = device.to_dict()
    data["extras"] = json.dumps(data["extras"]) if data["extras"] else "-"
    return {k: "-" if v is None else v for k, v in data.items()}


@devices.command("remove")
@config_option
@click.argument("selector")
def devices_remove(config_path: str | None, selector: str) -> None:
    """Remove a device (a removal event with reason "operator")."""
    store = open_store(load_config(config_path))
    with store.transaction():
        changes = store.remove(
            selector=selector, reason="operator",
            source={"command": "devices remove"}, now=time.time(),
        )
    store.close()
    if not changes:
        fail(f"no device with selector {selector}")
    click.echo(escape(f"removed {selector} (username {changes[0].device.username})"))


@devices.command("export")
@config_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True, help="JSON lines (one device a line) or CSV with a header.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write here (created with mode 0600: it holds tokens) instead of stdout.")
def devices_export(config_path: str | None, fmt: transfer.Format, output: str) -> None:
    """Write every device to stdout (or --output), for pnbridge devices import elsewhere."""
    store = open_store(load_config(config_path), reading=True)
    found = store.devices()
    store.close()
    try:
        with open_output(output) as out, progress(len(found), "exporting", out) as advance:
            count = transfer.export(found, fmt, out, advance)
    except OSError as error:
        fail(f"--output: cannot write {output}: {error.strerror or error}")
    click.echo(f"exported {count} device(s)", err=True)


@devices.command("import")
@config_option
@click.argument("file", type=click.File("rb"))
def devices_import(config_path: str | None, file: BinaryIO) -> None:
    """Import devices from FILE (JSON lines or CSV, as export writes them; - for stdin).

    The whole file is read first: one that is not UTF-8 is refused, nothing imported. Bad
    rows are reported with their line number and left out; the rest is written in one
    transaction, keeping the times the file gives. Beyond [storage] max_devices_per_user,
    a user's most recently seen devices are kept. Importing the same file twice changes
    nothing; each new or changed device is an event. The exit status is 1 when a row was
    left out.
    """
    config = load_config(config_path)
    source = {"command": "devices import", "file": file.name}
    now = time.time()
    text = transfer.decode(file.read(), file.name)
    with progress(len(text.encode()), "importing") as advance:
        rows, problems = transfer.read_file(
            Reporter(config.reporter), text, file.name, now, advance
        )
    store = open_store(config, create=True)
    try:
        with store.transaction():
            plan = transfer.plan(store, rows, config.storage.max_devices_per_user, now)
            with progress(len(plan.rows), "writing") as advance:
                outcomes = transfer.write(store, plan, source, now, advance)
    except StoreError as error:
        fail(f"cannot write database {store.where}: {error}: nothing imported")
    finally:
        store.close()
    for line in problems + plan.notes:
        click.echo(f"pnbridge: {escape(line)}", err=True)
    click.echo(escape(f"imported {file.name}: {transfer.summary(outcomes, len(problems), plan)}"))
    if problems or plan.over_cap:
        raise SystemExit(1)
