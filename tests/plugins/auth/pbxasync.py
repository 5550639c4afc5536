"""pbxasync: an async auth hook, asked first, that raises for "async-raises" and never
answers for "async-blocks"; it leaves everyone else to the next hook."""

import trio
from pnbridge import hookimpl


@hookimpl(tryfirst=True)
async def authenticate_report(username, credentials, report):
    if username == "async-raises":
        raise RuntimeError("boom")
    if username == "async-blocks":
        await trio.sleep_forever()
    return None
