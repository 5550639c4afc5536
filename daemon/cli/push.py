"""``pnbridge push``: send a push as the push API does."""

from __future__ import annotations

import json
from typing import Any

import click
import trio

from ..config.tables import load_config
from ..delivery.commands import config_option, fail, json_option, table
from ..errors import BadPush
from ..ops.log import setup_logging
from ..push.fanout import push_once
from ..push.request import MAX_BADGE, VERBS, parse_request
from .common import open_store, read_plugins


@click.command("push")
@config_option
@click.argument("verb", type=click.Choice(VERBS))
@click.option("--username", required=True, help="The user whose devices get the push.")
@click.option("--selector", help="Only this device of the user.")
@click.option("--id", "push_id", help="The call's id (required for the call verbs).")
@click.option("--message", help="The text to show.")
@click.option("--badge", type=click.IntRange(0, MAX_BADGE), help="The app badge number.")
@click.option("--sound", help="The sound to play.")
@click.option("--display-name", help="The caller's or sender's name.")
@click.option("--thread-id", help="The conversation, to group notifications.")
@json_option
def push(config_path: str | None, verb: str, username: str, as_json: bool,
         **fields: Any) -> None:
    """Send VERB to the devices of a user, as the push API does; print what happened to each.

    The enabled plugins that send pushes (pnmediator) start and stop around it; no other
    plugin runs (an auditlog would create its file as you). Each device's push is kept in
    the push history (who asked: cli; see pnbridge pushes) before it returns. Exits 0 when
    at least one device was sent the push, else 1.
    """
    config = load_config(config_path)
    setup_logging("error")
    fields["id"] = fields.pop("push_id")
    given = {k: v for k, v in fields.items() if v is not None}
    try:
        wanted = parse_request({"username": username, "verb": verb, **given})
    except BadPush as error:
        fail(f"--{error.field.replace('_', '-')}: {error.problem}")
    open_store(config).close()
    host = read_plugins(config)
    results = trio.run(push_once, config, host, wanted)
    if as_json:
        click.echo(json.dumps({"username": username, "verb": verb,
                               "devices": [r.to_dict() for r in results]}, indent=2))
    else:
        rows = [("SELECTOR", "PAIR", "OUTCOME", "ATTEMPTS", "REASON")]
        rows += [(r.selector, r.pair or "-", r.outcome, str(r.attempts), r.reason or "-")
                 for r in results]
        table(rows)
    if not any(r.outcome == "sent" for r in results):
        raise SystemExit(1)
