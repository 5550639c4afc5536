"""boom: a transport whose outcome no comparison survives (a plugin bug the fan-out cannot
contain)."""

from pnbridge import PushResult, hookimpl


class Boom:
    def __eq__(self, other):
        raise ValueError("boom")

    __hash__ = None


@hookimpl
async def send_push(push):
    return PushResult(Boom())
