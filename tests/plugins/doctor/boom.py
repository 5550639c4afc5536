"""boom: a doctor check that raises."""

from pnbridge import hookimpl


@hookimpl
async def doctor(app):
    raise RuntimeError("no CRM configured")
