"""hook_raises: a plain event hook that always raises."""

from pnbridge import hookimpl


@hookimpl
def device_registered(event):
    raise ValueError("bad event " + event.id)
