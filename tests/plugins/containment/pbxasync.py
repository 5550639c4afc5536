"""pbxasync: an async auth hook raising a BaseException in a task group for user "group"."""

import trio
from pnbridge import hookimpl


class Boom(BaseException):
    pass


@hookimpl
async def authenticate_report(username, credentials, report):
    if username == "group":
        async def fail():
            raise Boom("in a group")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
