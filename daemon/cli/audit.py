"""``pnbridge audit``: read the auditlog plugin's log, filtered."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from ..config.tables import load_config
from ..config.typed import parse_duration
from ..ops.log import escape_json
from .common import config_option, fail, json_option, print_table, read_plugins


class Since(click.ParamType):
    """A point in time: ISO 8601 (UTC unless it says otherwise) or an age, a duration as
    the config's (``parse_duration``: 90s, 2h, 7d, 1h30m)."""

    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
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


@click.command("audit")
@config_option
@click.option("--username", help="Only this user's events.")
@click.option("--selector", help="Only this device's events.")
@click.option("--since", type=Since(), help="Only events since TIME (ISO 8601, or 2h, 7d...).")
@json_option
def audit(
    config_path: str | None, username: str | None, selector: str | None,
    since: float | None, as_json: bool,
) -> None:
    """Read the audit log (and its rotated files) of the auditlog plugin, filtered.

    With --json, prints the matching lines as they are in the log (JSON Lines).
    """
    from ..plugins import auditlog

    host = read_plugins(load_config(config_path))
    settings = host.settings.get("auditlog")
    if settings is None:
        fail("the auditlog plugin is not enabled in this config ([plugins] enabled)")
    if not auditlog.log_files(settings.path):
        fail(f"no audit log at {settings.path} (nothing delivered to auditlog yet, or "
             "[plugins.auditlog] path names another file)")
    try:
        found, bad = auditlog.records(settings.path)
    except OSError as error:
        fail(f"cannot read the audit log: {error}")
    if bad:
        click.echo(f"pnbridge: warning: {bad} unreadable line(s) skipped", err=True)
    matching = [
        r for r in found
        if (username is None or r.get("username") == username)
        and (selector is None or r.get("selector") == selector)
        and (since is None or datetime.fromisoformat(r["time"]).timestamp() >= since)
    ]
    if as_json:
        for record in matching:
            click.echo(escape_json(json.dumps(record, ensure_ascii=False, separators=(",", ":"))))
        return
    rows = [("TIME", "KIND", "REASON", "SELECTOR", "USERNAME", "TOKENS", "SOURCE")]
    rows += [
        (r["time"], r["kind"], r["reason"], r["selector"], r["username"],
         " ".join(t for t in (r.get("token_calls"), r.get("token_msgs")) if t) or "-",
         " ".join(f"{k}={v}" for k, v in r.get("source", {}).items()) or "-")
        for r in matching
    ]
    print_table(rows)
