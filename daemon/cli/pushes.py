"""``pnbridge pushes``: the push history (one row per device per push), read-only."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator, Sequence

import click

from ..config.tables import load_config
from ..delivery.commands import LIMIT_MAX, Since, config_option, json_option, table_pages
from ..model import PushRecord, isotime
from .common import open_store

# The history's columns in a table; ``devices show`` leaves out the two naming the device.
HEADER = ("TIME", "VERB", "ID", "USERNAME", "SELECTOR", "PAIR", "TOKEN", "OUTCOME", "CODE",
          "ATTEMPTS", "LATENCY", "REQUESTER", "MESSAGE")
DEVICE_COLUMNS = ("USERNAME", "SELECTOR")
# The records read (and printed) at a time.
PAGE = 1000


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
@click.option("--limit", type=click.IntRange(0, LIMIT_MAX), default=100, show_default=True,
              help="List the newest N pushes (0: all kept, read and printed "
                   f"{PAGE:,} at a time); the count goes to stderr.")
@json_option
def pushes(config_path: str | None, username: str | None, selector: str | None,
           push_id: str | None, since: float | None, limit: int, as_json: bool) -> None:
    """List the push history, newest first: one row per device a push went to (or was
    skipped for), with pnmediator's answer, the attempts and the latency (ms).

    Reads the database only; works while the daemon runs. Tokens are shortened; a table's
    cells are cut to 120 characters (--json has every value whole).
    """
    store = open_store(load_config(config_path), reading=True)
    listed = _Listed(limit)
    try:
        pages = listed.cut(store.push_pages(
            username=username, selector=selector, id=push_id, since=since,
            page=min(PAGE, limit + 1) if limit else PAGE))
        if as_json:
            _print_json(pages)
        else:
            table_pages(push_rows(page)[0 if first else 1:] for first, page in _firsts(pages))
    finally:
        store.close()
    counted = f"{listed.count:,} push{'' if listed.count == 1 else 'es'}"
    click.echo(f"{counted} (the newest; more match: raise --limit, 0 for all)" if listed.more
               else counted, err=True)


class _Listed:
    """Pages of records cut to the newest ``limit`` (0: all); how many, and whether more
    matched."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.more = False

    def cut(self, pages: Iterator[list[PushRecord]]) -> Iterator[list[PushRecord]]:
        for page in pages:
            if self.limit and self.count + len(page) > self.limit:
                page, self.more = page[:self.limit - self.count], True
            self.count += len(page)
            yield page
            if self.more:
                return


def _firsts(pages: Iterator[list[PushRecord]]) -> Iterator[tuple[bool, list[PushRecord]]]:
    """Each page, and whether it is the first; an empty one when there is none (the table's
    header is printed all the same)."""
    first = True
    for page in pages:
        yield first, page
        first = False
    if first:
        yield True, []


def _print_json(pages: Iterator[list[PushRecord]]) -> None:
    """The records as one JSON array (``json.dumps(..., indent=2)``'s text), printed a
    record at a time."""
    first = True
    for page in pages:
        for record in page:
            text = textwrap.indent(json.dumps(record.to_dict(), indent=2), "  ")
            click.echo(("[\n" if first else ",\n") + text, nl=False)
            first = False
    click.echo("[]" if first else "\n]")
