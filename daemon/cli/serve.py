"""``pnbridge serve``: run the daemon."""

from __future__ import annotations

import logging
from functools import partial

import click
import trio

from ..access.auth import security_warnings
from ..config import paths
from ..config.tables import load_config
from ..delivery.commands import config_option
from ..errors import CommandError, PnbridgeError, leaves
from ..ops.log import describe, setup_logging
from ..storage.engines import database_name
from .common import read_plugins

log = logging.getLogger("pnbridge")


@click.command()
@config_option
def serve(config_path: str | None) -> None:
    """Run the daemon until SIGINT or SIGTERM."""
    from ..server import run

    config = load_config(config_path)
    setup_logging(config.server.log_level)
    plugins = read_plugins(config)
    if config_path is None:
        log.info(
            "no config file given and no %s: running on the embedded defaults "
            "(listen %s, database ./%s, no plugins)", paths.default_config_location(),
            ", ".join(config.server.listen), database_name(config.storage),
        )
    else:
        log.info("config %s", config_path)
    for warning in security_warnings(config, config_path):
        log.warning(warning)
    try:
        trio.run(partial(
            run, config, handle_signals=True, load_config=partial(load_config, config_path),
            plugins=plugins,
        ))
    except BaseException as error:  # no except*: see tests/test_errors.py
        errors = leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
        if not all(isinstance(e, PnbridgeError | OSError) for e in errors):
            raise
        raise CommandError(*(
            line for e in errors for line in (
                e.lines() if isinstance(e, PnbridgeError) else [f"cannot serve: {describe(e)}"])
        )) from None
