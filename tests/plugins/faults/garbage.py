"""garbage: hooks that answer the wrong types."""

from pnbridge import hookimpl


@hookimpl
def device_registered(event):
    return object()


@hookimpl
async def send_push(push):
    return 42
