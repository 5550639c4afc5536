"""The types reports, devices and journal events travel in; what plugins receive."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ReportKind = Literal["token", "removal"]
EventKind = Literal["registered", "removed"]
Pair = Literal["calls", "msgs"]
PushOutcome = Literal["sent", "invalid-token", "failed", "retry"]
# How a reporter route checks its reports ([auth] reporter, a route's auth).
AuthMode = Literal["digest", "basic", "secret", "hook", "none"]

# Why an event happened. Registrations: a new device, a change of username, token or app id,
# or pnmediator rejected one token pair while the other remains (that pair is cleared).
REGISTERED_REASONS = ("new", "changed", "invalid-token")
# Removals: the app logged out, an operator removed it, pnmediator rejected its token,
# it was not seen for too long, or the user's device cap pushed it out.
REMOVED_REASONS = ("app", "operator", "invalid-token", "expired", "evicted")


def isotime(epoch: float) -> str:
    """``epoch`` seconds as ISO 8601 UTC with milliseconds: 2026-01-02T03:04:05.678Z."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class Report:
    """One request of the Push Token Reporter or Account Removal Reporter, normalized.

    A None token or app id means "not known yet". ``credentials`` are there to be checked,
    never stored or logged (they are left out of ``repr``).
    """

    kind: ReportKind
    username: str | None = None
    selector: str | None = None
    token_calls: str | None = None
    appid_calls: str | None = None
    token_msgs: str | None = None
    appid_msgs: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(t for t in (self.token_calls, self.token_msgs) if t)


@dataclass(frozen=True)
class Device:
    """A stored device: one account (selector) on one app install, with its two token pairs."""

    selector: str
    username: str
    token_calls: str | None
    appid_calls: str | None
    token_msgs: str | None
    appid_msgs: str | None
    extras: dict[str, Any]
    created_at: float
    updated_at: float
    last_seen: float

    def to_dict(self) -> dict[str, Any]:
        """The device as JSON-ready data, times in ISO 8601 UTC."""
        data = asdict(self)
        for key in ("created_at", "updated_at", "last_seen"):
            data[key] = isotime(data[key])
        return data


@dataclass(frozen=True)
class Event:
    """A journal entry: a device registered (new or changed) or removed, and why.

    ``id`` is stable across restarts and redeliveries: receivers de-duplicate on it.
    ``seq`` orders the journal. ``source`` says where it came from, e.g.
    ``{"route": "/token/", "client": "192.0.2.7"}`` or ``{"command": "devices remove"}``.
    """

    id: str
    seq: int
    kind: EventKind
    reason: str
    selector: str
    username: str
    before: Device | None
    after: Device | None
    time: float
    source: dict[str, Any]

    @property
    def device(self) -> Device:
        """The device as it is after the event (as it was, for a removal)."""
        found = self.after or self.before
        assert found is not None
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind,
            "reason": self.reason,
            "selector": self.selector,
            "username": self.username,
            "time": isotime(self.time),
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict() if self.after else None,
            "source": self.source,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Push:
    """One push to one device, as the ``send_push`` hook receives it.

    ``pair`` says which of the device's token pairs ``token`` and ``appid`` are. The verb's
    fields are None when the PBX did not give them. ``attempt`` counts from 1.
    """

    verb: str
    device: Device
    pair: Pair
    token: str
    appid: str | None
    id: str | None = None
    message: str | None = None
    badge: int | None = None
    sound: str | None = None
    display_name: str | None = None
    thread_id: str | None = None
    attempt: int = 1


@dataclass(frozen=True)
class PushResult:
    """What ``send_push`` returns: how one push went.

    ``sent``; ``invalid-token`` (the token will never work again: pnbridge clears it);
    ``failed`` (permanent for this push); ``retry`` (transient: pnbridge tries again within
    the verb's deadline, not before ``retry_after`` seconds when given). ``config_error``
    marks a failure that says the transport's configuration is likely wrong (pnmediator's
    url answering a 404 that is not pnmediator's): it is logged at error, counted, and
    shown by /readyz when it repeats.
    """

    outcome: PushOutcome
    reason: str = ""
    retry_after: float | None = None
    config_error: bool = False
