"""The types reports, devices and journal events travel in; what plugins receive."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, get_args

ReportKind = Literal["token", "removal"]
EventKind = Literal["registered", "removed"]
Pair = Literal["calls", "msgs"]

# The outcome words: one word for each kind of outcome, written only here. Metric labels,
# log lines, the CLI and the push API's answers use them (docs/install.md lists the labels).
# What one store operation did to one device.
ChangeOutcome = Literal["created", "changed", "unchanged", "removed"]
# A reporter request (pnbridge_reports_total): what it changed; else no such device to remove
# (unknown), a bad report (rejected, 400), refused credentials or another user's device
# (unauthorized, 401/403), over a rate limit (limited, 429), storage or auth down (failed, 503).
ReportOutcome = Literal[ChangeOutcome, "unknown", "rejected", "unauthorized", "limited", "failed"]
# One delivery attempt of an event to a plugin (pnbridge_deliveries_total): it took it, it
# failed and is tried again, or it failed for good and the event is parked.
DeliveryOutcome = Literal["delivered", "retried", "parked"]
# An event a plugin did not take: parked, or to be sent again (``pnbridge events retry``).
FailureStatus = Literal["parked", "retry"]
# How a journal event stands for one plugin: passed to it, not reached yet, or not taken.
JournalState = Literal["delivered", "pending", FailureStatus]
# How one push went, as the transport (send_push) says.
PushOutcome = Literal["sent", "invalid-token", "failed", "retry"]
# How a reporter route checks its reports ([auth] reporter, a route's auth).
AuthMode = Literal["digest", "basic", "secret", "hook", "none"]
# What happened to one device of a push (pnbridge_pushes_total, the push API's answer): sent;
# failed; its rejected token cleared (removed); no token for the verb (skipped).
DeviceOutcome = Literal["sent", "failed", "removed", "skipped"]
# How one device's push went, as the push history keeps it: the transport's last verdict
# (sent, invalid-token, failed: a retry that ran out of time is failed) or no token for the
# verb (skipped). A device whose token was rejected (DeviceOutcome "removed") is
# "invalid-token" here; what became of the device is in the record's message.
HistoryOutcome = Literal["sent", "invalid-token", "failed", "skipped"]

# A device's two token pairs, as fields of Report and Device (and columns, and export
# columns): token_calls, appid_calls, token_msgs, appid_msgs.
PAIR_FIELDS = tuple(f"{part}_{pair}" for pair in get_args(Pair) for part in ("token", "appid"))
TOKEN_FIELDS = tuple(f"token_{pair}" for pair in get_args(Pair))

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

    def known(self) -> dict[str, Any]:
        """What this report knows of its device: the username, pair fields and extras it
        has. A value not known yet (None, no extras) is left out: it keeps the stored one,
        and a report whose known values are all stored changes nothing."""
        names = ("username", *PAIR_FIELDS, "extras")
        return {name: value for name in names if (value := getattr(self, name))}


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


@dataclass(frozen=True, kw_only=True)
class PushContent:
    """What a push says: the verb and its fields, None when the PBX did not give them."""

    verb: str
    id: str | None = None
    message: str | None = None
    badge: int | None = None
    sound: str | None = None
    display_name: str | None = None
    thread_id: str | None = None

    def content(self) -> dict[str, Any]:
        """The verb and its fields, by name (to make another PushContent of them)."""
        return {f.name: getattr(self, f.name) for f in fields(PushContent)}


@dataclass(frozen=True, kw_only=True)
class Push(PushContent):
    """One push to one device, as the ``send_push`` hook receives it: the PBX's content
    (PushContent), and the device's token pair it goes to.

    ``pair`` says which of the device's token pairs ``token`` and ``appid`` are.
    ``attempt`` counts from 1.
    """

    device: Device
    pair: Pair
    token: str
    appid: str | None
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
    code: int | None = None  # the service's answer (pnmediator's HTTP status), when it gave one


@dataclass(frozen=True)
class PushRecord:
    """One device's push as the push history keeps it (``pnbridge pushes``, the console).

    ``token`` is the token the push went to, shortened (``ops.log.shorten``): the history
    never holds a full token. ``code`` and ``message`` are the transport's last answer (the
    HTTP status and reason pnmediator gave) or why nothing was sent. ``latency`` is seconds
    from the fan-out's start to the device's result, retries included. ``requester`` says who
    asked: ``api:<key name or id>``, ``agi``, ``cli``, ``console:<operator>``.
    """

    time: float
    verb: str
    id: str | None
    username: str
    selector: str
    pair: Pair | None
    token: str | None
    appid: str | None
    outcome: HistoryOutcome
    code: int | None
    message: str
    attempts: int
    latency: float
    requester: str

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, its time in ISO 8601 UTC."""
        data = asdict(self)
        data["time"] = isotime(self.time)
        return data
