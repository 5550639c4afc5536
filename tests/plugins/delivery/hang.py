"""hang: an async event hook that never returns."""

import trio
from pnbridge import hookimpl


@hookimpl
async def device_registered(event):
    await trio.sleep_forever()
