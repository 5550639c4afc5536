"""``pnbridge pushes``: the push history (one row per device per push), read-only."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click

from ..config.tables import load_config
from ..delivery.commands import Since, config_option, json_option, table
from ..model import PushRecord, isotime
from .common import open_store

# The history's columns in a table; ``devices show`` leaves out the two naming the device.
HEADER = ("TIME", "VERB", "ID", "USERNAME", "SELECTOR", "PAIR", "TOKEN", "OUTCOME", "CODE",
          "ATTEMPTS", "LATENCY", "REQUESTER", "MESSAGE")
DEVICE_COLUMNS = ("USERNAME", "SELECTOR")


def push_rows(records: Sequence[PushRecord], *, device: bool = True) -> list[tuple[str, ...]]:
    """``records`` as table rows, the header first (LATENCY in milliseconds); without the
    USERNAME and SELECTOR columns unless ``device``. The selector is whole, as in the other
    commands' tables (``devices show`` and ``--selector`` take it); the token is as kept,
    shortened; a request that reached no device has no selector (``-``)."""
    rows = [(isotime(r.time), r.verb, r.id or "-", r.username, r.selector or "-",
             r.pair or "-", r.token or "-", r.outcome, "-" if r.code is None else str(r.code),
             str(r.attempts), f"{r.latency * 1000:.0f}", r.requester, r.message or "-")
            for r in records]
    keep = [i for i, name in enumerate(HEADER) if device or name not in DEVICE_COLUMNS]
    return [tuple(row[i] for i in keep) for row in [HEADER, *rows]]


@click.command("pushes")
@config_option
@click.option("--username", help="Only this user's pushes.")
@click.option("--selector", help="Only this device's pushes.")
@click.option("--id", "push_id", help="Only the pushes of this call (the push's Id).")
@click.option("--since", type=Since(),
              help="Only pushes since TIME: ISO 8601 (UTC unless it says otherwise) or an "
                   "age (1h30m, 2h, 7d).")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="List the newest N pushes (0: all kept); the count goes to stderr.")
@json_option
def pushes(config_path: str | None, username: str | None, selector: str | None,
           push_id: str | None, since: float | None, limit: int, as_json: bool) -> None:
    """List the push history, newest first: one row per device a push went to (or was
    skipped for), with pnmediator's answer, the attempts and the latency (ms).

    Reads the database only; works while the daemon runs. Tokens are shortened.
    """
    store = open_store(load_config(config_path), reading=True)
    try:
        found = store.pushes(username=username, selector=selector, id=push_id, since=since,
                             limit=limit + 1 if limit else sys.maxsize)
    finally:
        store.close()
    more = bool(limit) and len(found) > limit
    found = found[:limit] if more else found
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in found], indent=2))
    else:
        table(push_rows(found))
    counted = f"{len(found):,} push{'' if len(found) == 1 else 'es'}"
    click.echo(f"{counted} (the newest; more match: raise --limit, 0 for all)" if more
               else counted, err=True)
