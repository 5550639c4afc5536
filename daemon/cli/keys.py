"""``pnbridge api-key``: keys of the push API."""

from __future__ import annotations

import click

from ..access import apikeys


@click.group("api-key")
def api_key() -> None:
    """Keys of the push API."""


@api_key.command("new")
def api_key_new() -> None:
    """Print a new random key (give it to the PBX) and its hash line (for [api] key_hashes)."""
    key = apikeys.new_key()
    click.echo(f"key:  {key}")
    click.echo(f'hash: "{apikeys.hash_key(key)}"   # add to [api] key_hashes')
