"""quiet: a plugin without a doctor check."""

from pnbridge import hookimpl


@hookimpl
def device_registered(event):
    pass
