"""boom: raises in every hook: BaseExceptions, in a thread, in a task group, in
background tasks, an exception whose repr fails, a recursion, a MemoryError."""

import trio
from pnbridge import hookimpl


class Boom(BaseException):
    """Not an Exception: what a careless plugin (or a library it calls) may raise."""


class BadRepr(Exception):
    def __repr__(self):
        raise RuntimeError("no repr")


def recurse(n):
    return recurse(n + 1) + 1


async def fail_later():
    await trio.sleep(0.2)
    raise Boom("background task\nFORGED line")


async def fail_after_start(task_status=trio.TASK_STATUS_IGNORED):
    task_status.started()
    await trio.sleep(0.2)
    raise OSError(5, "Input/output error")


@hookimpl
async def startup(app):
    app.nursery.start_soon(fail_later)
    await app.nursery.start(fail_after_start)


@hookimpl
def device_registered(event):
    if event.selector == "RECURSE":
        recurse(0)
    if event.selector == "MEMORY":
        raise MemoryError()
    if event.selector == "REPR":
        raise BadRepr()
    raise Boom("in a thread")


@hookimpl
async def device_removed(event):
    async def child():
        raise Boom("in a group")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)


@hookimpl
async def send_push(push):
    raise Boom("push")


@hookimpl
async def reload(app):
    raise Boom("reload")


@hookimpl
async def shutdown(app):
    raise Boom("shutdown")
