"""boom: its startup fails."""

from pnbridge import hookimpl


@hookimpl
async def startup(app):
    raise RuntimeError("no connection to the CRM")
