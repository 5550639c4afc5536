"""owntransport: a push transport for tokens starting "own:"; it keeps what it was sent."""

from pnbridge import PushResult, hookimpl

seen = []


@hookimpl
async def send_push(push):
    if not push.token.startswith("own:"):
        return None
    seen.append(push)
    if push.token == "own:gone":
        return PushResult("invalid-token", "unknown subscriber")
    return PushResult("sent")
