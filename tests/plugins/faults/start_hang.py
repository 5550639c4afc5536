"""start_hang: its startup never returns."""

import trio
from pnbridge import hookimpl


@hookimpl
async def startup(app):
    await trio.sleep_forever()
