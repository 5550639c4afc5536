"""start_boom: its startup raises a BaseException."""

from pnbridge import hookimpl


class Boom(BaseException):
    pass


@hookimpl
async def startup(app):
    raise Boom("no CRM")
