"""What a PBX (or ``pnbridge push``) asks for: the verbs, the request checked field by field,
and which token pair of a device each verb goes to."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import BadPush
from ..model import Device, Pair, PushContent

CALL_VERBS = (
    "NotifyIncomingCall", "NotifyIncomingCallMissed", "NotifyIncomingCallAnsweredElsewhere",
)
MESSAGE_VERBS = ("NotifyTextMessage", "NotifyGenericTextMessage")
VERBS = CALL_VERBS + MESSAGE_VERBS
# The largest badge: APNs' badge is a 32-bit signed number (pnmediator passes it on).
MAX_BADGE = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class PushRequest(PushContent):
    """What the PBX (or ``pnbridge push``) asks for: one verb to the devices of a user (or
    of one selector of that user)."""

    username: str
    selector: str | None = None


def parse_request(data: Any) -> PushRequest:
    """Check a push request body (parsed JSON); raise BadPush naming the first bad field."""
    if not isinstance(data, dict):
        raise BadPush("body", "expected a JSON object")
    known = [f.name for f in fields(PushRequest)]
    for name in data:
        if name not in known:
            raise BadPush(name, f"unknown field (known: {', '.join(known)})")
    for name in ("username", "verb"):
        if not data.get(name):
            raise BadPush(name, "required")
    for name in known:
        value = data.get(name)
        if name == "badge":
            if value is not None and (type(value) is not int or not 0 <= value <= MAX_BADGE):
                raise BadPush(name, f"expected a whole number from 0 to {MAX_BADGE}")
        elif value is not None and not isinstance(value, str):
            raise BadPush(name, "expected a string")
        elif value is not None and "\x00" in value:
            raise BadPush(name, "contains a NUL character")  # no store could keep it
    if data["verb"] not in VERBS:
        raise BadPush("verb", f"unknown verb {data['verb']!r} (known: {', '.join(VERBS)})")
    if data["verb"] in CALL_VERBS and not data.get("id"):
        raise BadPush("id", f"required for {data['verb']} (the call's X-Push-ID or Call-ID)")
    return PushRequest(**data)


def choose_pair(device: Device, verb: str) -> Pair | None:
    """The token pair ``verb`` goes to on ``device``, or None when it has no usable one.

    Call verbs use the incoming-call (PushKit) pair, or the other pair when the device has
    none (Android reports one token). Everything else uses the other pair only: iOS punishes
    apps that get a PushKit push that is not a call.
    """
    if verb in CALL_VERBS and device.token_calls:
        return "calls"
    if device.token_msgs:
        return "msgs"
    return None
