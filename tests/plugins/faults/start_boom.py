"""start_boom: its startup fails."""

from pnbridge import hookimpl


@hookimpl
async def startup(app):
    raise ConnectionError("no CRM")
