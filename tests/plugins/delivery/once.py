"""once: a plain event hook whose first call fails."""

from pnbridge import hookimpl


@hookimpl
def startup(app):
    app.state = {"calls": 0}


@hookimpl
def device_registered(event, app):
    app.state["calls"] += 1
    if app.state["calls"] == 1:
        raise OSError("first call fails")
