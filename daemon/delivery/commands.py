"""What every ``pnbridge`` command shares, a plugin's own commands (``register_commands``)
too, so they live beside the plugin host rather than in ``cli``: the ``--config`` option,
reading the config and a plugin's instances, errors, tables."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from ..config import paths
from ..config.tables import load_config
from ..config.typed import parse_duration
from ..errors import CommandError
from ..ops.log import clip, escape
from .context import PluginContext
from .pluginhost import load_plugins

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(readable=False),  # load_config names an unreadable file or a directory
    envvar="PNBRIDGE_CONFIG",
    callback=lambda ctx, param, value: value if value is not None else paths.default_config(),
    help=f"TOML config file (default: $PNBRIDGE_CONFIG, else {paths.DEFAULT_CONFIG} when it "
    "exists, else the embedded defaults). The database is its [storage] path; the embedded "
    "default is pnbridge.db in the current directory.",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

# A ``--limit`` option's most (a bigger number overflows the database's integer).
LIMIT_MAX = 1_000_000


class Since(click.ParamType):
    """A ``--since`` option's point in time, as epoch seconds: ISO 8601 (UTC unless it says
    otherwise) or an age, a duration as the config writes one (``parse_duration``: 90s, 2h,
    7d, 1h30m)."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        text = str(value).strip()
        try:
            return time.time() - parse_duration(text)
        except ValueError as error:
            problem = str(error)
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{problem}; or a time in ISO 8601 (2026-01-02T03:04:05Z)", param, ctx)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def fail(*lines: str) -> NoReturn:
    """End the command: the ``pnbridge`` group prints each line as ``pnbridge: LINE`` on
    stderr (escaped, credentials cut) and exits 1, as for any PnbridgeError."""
    raise CommandError(*lines)


def plugin_instances(config_path: str | None, plugin: str) -> dict[str, PluginContext]:
    """The enabled instances of ``plugin`` in the config at ``config_path`` (as ``--config``
    gives it), each its ``app`` by name, not started: for a plugin's command. A config with
    errors (its plugins' settings included) fails the command, naming them."""
    host = load_plugins(load_config(config_path).plugins)  # ConfigError: shown as fail's
    return {name: app for name, app in host.contexts.items() if app.plugin == plugin}


# Characters of a table's cell at most: one long value (a call Id, a message) does not pad
# every line of its column; ``--json`` has it whole.
CELL_MAX = 120


def table(rows: Sequence[tuple[str, ...]]) -> None:
    """Print ``rows`` (the first is the header) as aligned columns, each cell escaped (it
    may hold what a client sent) and cut to CELL_MAX characters (``…`` marks the cut)."""
    table_pages([rows])


def table_pages(pages: Iterable[Sequence[tuple[str, ...]]]) -> None:
    """``table`` of rows that come a page at a time (the first page's first row is the
    header), each page printed as it comes: aligned to the widest cell so far, so a later
    page may widen a column."""
    widths: list[int] = []
    for page in pages:
        cells = [tuple(clip(escape(cell), CELL_MAX) for cell in row) for row in page]
        if not cells:
            continue
        widths = [max(widths[i] if widths else 0, *(len(row[i]) for row in cells))
                  for i in range(len(cells[0]))]
        for row in cells:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                       .rstrip())
