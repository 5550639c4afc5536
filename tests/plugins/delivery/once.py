"""once: a plain event hook whose first call fails."""

from pnbridge import hookimpl

calls = 0


@hookimpl
def device_registered(event):
    global calls
    calls += 1
    if calls == 1:
        raise OSError("first call fails")
