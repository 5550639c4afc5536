"""``pnbridge api-key``: keys of the push API."""

from __future__ import annotations

import re

import click

from ..access import apikeys
from ..config.tables import KEY_NAME


@click.group("api-key")
def api_key() -> None:
    """Keys of the push API."""


def _name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(KEY_NAME, value):
        raise click.BadParameter("1 to 64 of the letters A-Z a-z, digits and . _ -")
    return value


@api_key.command("new")
@click.option("--name", callback=_name, help="The key's name (e.g. the PBX's, kamailio): "
              "the push history records its pushes as api:NAME (else the hash's first 12 "
              "hex digits).")
def api_key_new(name: str | None) -> None:
    """Print a new random key (give it to the PBX) and its hash line (for [api] key_hashes)."""
    key = apikeys.new_key()
    click.echo(f"key:  {key}")
    click.echo(f'hash: "{apikeys.hash_key(key, name)}"   # add to [api] key_hashes')
