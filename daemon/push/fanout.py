"""The fan-out: a push request (request.py) sent to every device of a user within the verb's
deadline, each device's push retried until then, and what happened to each device.

The transport is whatever sends one push to one device (the ``send_push`` hook). A token it
calls invalid is cleared from its device in the store (the device is removed when no token is
left), which journals an event for the plugins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from operator import methodcaller
from typing import Any

import trio

from ..config.tables import Config
from ..delivery.containment import uncontained
from ..delivery.pluginhost import PluginHost
from ..errors import PluginError, StoreError, UnknownUser
from ..model import Device, DeviceOutcome, HistoryOutcome, Pair, Push, PushRecord, PushResult
from ..ops.log import describe, shorten
from ..ops.metrics import Metrics
from ..retry import backoff
from ..storage.interface import Change, Store
from ..storage.writer import Writer, open_writer
from .history import PushHistory, open_history
from .request import CALL_VERBS, PushRequest, choose_pair

log = logging.getLogger("pnbridge.push")

# Sends one push to one device; None when no transport took it.
Transport = Callable[[Push], Awaitable[PushResult | None]]

# /readyz fails after this many config errors in a row (a push that reaches the transport's
# service clears it); the log names them at most once per CONFIG_ERROR_LOG_EVERY seconds.
CONFIG_ERROR_STREAK = 3
CONFIG_ERROR_LOG_EVERY = 60.0

# The first wait before a retry; it doubles up to RETRY_MAX (or what Retry-After asks),
# jittered (retry.backoff).
RETRY_FIRST = 0.05
RETRY_MAX = 1.0


def transport(host: PluginHost) -> Transport | None:
    """The enabled plugins' ``send_push`` hook, or None when no enabled plugin has one."""
    if not host.implementers("send_push"):
        return None

    async def send(push: Push) -> PushResult | None:
        return await host.call_first("send_push", push=push)

    return send


@dataclass(frozen=True)
class DeviceResult:
    """What happened to one device: ``outcome`` and, unless sent, why."""

    selector: str
    pair: Pair | None
    outcome: DeviceOutcome
    reason: str = ""
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.reason:
            del data["reason"]
        return data


class Pusher:
    """Sends a push request to every device of the user at once, and clears rejected tokens."""

    def __init__(self, writer: Writer, send: Transport, metrics: Metrics,
                 history: PushHistory | None = None):
        self.writer = writer
        self.send = send
        self.metrics = metrics
        self.history = history  # where each device's PushRecord goes
        self.config_errors = 0  # in a row
        self._config_reason = ""
        self._config_logged: float | None = None  # when the last such error line went out
        self._config_unlogged = 0

    async def ready(self) -> str | None:
        """A readiness check: the transport's last answers were not config errors."""
        if self.config_errors < CONFIG_ERROR_STREAK:
            return None
        return f"the last {self.config_errors} pushes failed: {self._config_reason}"

    def _track(self, result: PushResult) -> None:
        """Count, log and remember config errors; an answer from the service clears them."""
        if result.outcome in ("sent", "invalid-token"):
            self.config_errors = 0
            return
        if not result.config_error:
            return
        self.metrics.push_config_errors.inc()
        self.config_errors += 1
        self._config_reason = result.reason
        self._config_unlogged += 1
        now = time.monotonic()
        if self._config_logged is None or now - self._config_logged >= CONFIG_ERROR_LOG_EVERY:
            log.error("push transport: %s (%d such failure(s) since the last line like this)",
                      result.reason, self._config_unlogged)
            self._config_logged, self._config_unlogged = now, 0

    async def push(
        self, request: PushRequest, deadline: float, source: dict[str, Any]
    ) -> list[DeviceResult]:
        """Send ``request`` within ``deadline`` seconds; one result per device, by selector.

        The devices are read on a read-only connection within the deadline too. Raises
        UnknownUser, or the store's error (StoreError when the read took the whole deadline)
        when the devices cannot be read.
        """
        started, begun = time.time(), trio.current_time()
        ends = begun + deadline
        devices = None
        try:
            with trio.move_on_at(ends):
                devices = await self.writer.reader.call(
                    _devices_of, request.username, request.selector
                )
            if devices is None:
                raise StoreError(
                    f"the devices could not be read within the {deadline:g} s deadline")
            if not devices:
                raise UnknownUser(f"no device of user {request.username}" + (
                    f" with selector {request.selector}" if request.selector else ""))
        except BaseException as error:  # one row says the request came, and why no push
            if self.history is not None:
                self.history.add(_unsent(request, error, started,
                                         trio.current_time() - begun, source))
            raise
        results: dict[str, DeviceResult] = {}

        async def one(device: Device) -> None:
            progress = _Progress()
            try:
                result, last = await self._one(request, device, ends, deadline, source,
                                               progress)
            except BaseException as error:  # the daemon stopping (Cancelled), or a bug
                if self.history is not None:  # the push was under way: it leaves a trace
                    self.history.add(_record(
                        request, device, _cut_short(device, progress, error), progress.last,
                        started, trio.current_time() - begun, source))
                raise
            results[device.selector] = result
            if self.history is not None:
                self.history.add(_record(request, device, result, last, started,
                                         trio.current_time() - begun, source))

        async with trio.open_nursery() as nursery:
            for device in devices:
                nursery.start_soon(one, device)
        outcomes = [results[d.selector] for d in devices]
        for result in outcomes:
            self.metrics.pushes.labels(request.verb, result.outcome).inc()
            log.log(
                logging.INFO if result.outcome == "sent" else logging.WARNING,
                "push %s %s selector=%s username=%s pair=%s attempts=%d%s", request.verb,
                result.outcome, shorten(result.selector), request.username, result.pair or "-",
                result.attempts, f": {result.reason}" if result.reason else "",
            )
        return outcomes

    async def _one(
        self, request: PushRequest, device: Device, ends: float, deadline: float,
        source: dict[str, Any], progress: _Progress,
    ) -> tuple[DeviceResult, PushResult | None]:
        """The device's result, and the transport's last answer (None: not sent); the
        attempts so far in ``progress`` meanwhile."""
        pair = progress.pair = choose_pair(device, request.verb)
        if pair is None:
            why = "no token" if request.verb in CALL_VERBS else (
                "no msgs token (a PushKit calls token is never used for messages)")
            return DeviceResult(device.selector, None, "skipped", why), None
        push = Push(
            **request.content(), device=device, pair=pair,
            token=getattr(device, f"token_{pair}"), appid=getattr(device, f"appid_{pair}"),
        )
        attempts = 0
        last = PushResult("retry", "no answer")
        reason = ""
        with trio.move_on_at(ends):
            while True:
                attempts = progress.attempts = attempts + 1
                last = progress.last = await self._attempt(replace(push, attempt=attempts))
                if last.outcome != "retry":
                    break
                wait = max(backoff(attempts, RETRY_FIRST, RETRY_MAX), last.retry_after or 0.0)
                if trio.current_time() + wait >= ends:
                    reason = f"{last.reason}; a retry in {wait:g} s would miss the deadline"
                    break
                await trio.sleep(wait)
        if last.outcome != "retry":
            return await self._settle(push, last, attempts, source), last
        reason = reason or f"no success within the {deadline:g} s deadline (last: {last.reason})"
        return DeviceResult(device.selector, pair, "failed", reason, attempts), last

    async def _attempt(self, push: Push) -> PushResult:
        started = time.perf_counter()
        try:
            result = await self.send(push)
        except BaseException as error:  # anything the plugin raised fails this device only
            if (up := uncontained(error)) is not None:
                raise up from None
            log.exception("push transport failed selector=%s", shorten(push.device.selector))
            result = PushResult("failed", f"transport error: {describe(error)}")
        finally:
            self.metrics.push_latency.labels(push.verb).observe(time.perf_counter() - started)
        if result is None:
            return PushResult("failed", "no plugin sent it (enable a transport plugin)")
        if not isinstance(result, PushResult):
            log.error("push transport returned %.100r, not a PushResult", result)
            return PushResult("failed", f"the transport returned {type(result).__name__}, "
                                        "not a PushResult")
        self._track(result)
        return result

    async def _settle(
        self, push: Push, result: PushResult, attempts: int, source: dict[str, Any]
    ) -> DeviceResult:
        """The device's result; a rejected token is cleared from the store first."""
        device = push.device
        if result.outcome == "sent":
            return DeviceResult(device.selector, push.pair, "sent", attempts=attempts)
        if result.outcome != "invalid-token":
            return DeviceResult(device.selector, push.pair, "failed", result.reason, attempts)
        try:
            change = await self.writer.call(methodcaller(
                "reject_token", device.selector, push.pair, push.token, source, time.time()))
        except Exception as error:
            log.error("cannot clear rejected token selector=%s: %s",
                      shorten(device.selector), error)
            return DeviceResult(device.selector, push.pair, "failed",
                                f"token rejected ({result.reason}), clearing it failed: {error}",
                                attempts)
        return DeviceResult(device.selector, push.pair, "removed",
                            f"token rejected ({result.reason}); {_what_changed(change, push)}",
                            attempts)


@dataclass
class _Progress:
    """Where one device's push is: what a record of it says if it is cut short."""

    pair: Pair | None = None
    attempts: int = 0
    last: PushResult | None = None  # the transport's last answer


def _cut_short(device: Device, progress: _Progress, error: BaseException) -> DeviceResult:
    """A device's result when its push ended by ``error`` (the daemon stopping: Cancelled)
    before its outcome was known: failed."""
    if isinstance(error, trio.Cancelled):
        answered = progress.last is not None and progress.last.outcome != "retry"
        why = ("the daemon stopped before the rejected token was cleared" if answered
               else "the daemon stopped before an answer")
    else:
        why = f"the push was aborted: {describe(error)}"
    return DeviceResult(device.selector, progress.pair, "failed", why, progress.attempts)


def _what_changed(change: Change | None, push: Push) -> str:
    if change is None:
        return "the device has changed since, left as it is"
    if change.outcome == "removed":
        return "device removed"
    return f"{push.pair} pair cleared, device kept"


# A device's outcome as the history words it: a rejected token is invalid-token, whatever
# became of the device (the record's message says).
_HISTORY: dict[DeviceOutcome, HistoryOutcome] = {
    "sent": "sent", "failed": "failed", "removed": "invalid-token", "skipped": "skipped",
}


def _record(
    request: PushRequest, device: Device, result: DeviceResult, last: PushResult | None,
    started: float, latency: float, source: dict[str, Any],
) -> PushRecord:
    """The push history's record of ``device``'s push (its token shortened)."""
    pair = result.pair
    outcome = _HISTORY[result.outcome]
    if last is not None and last.outcome == "invalid-token":  # rejected, clearing it failed
        outcome = "invalid-token"
    token = getattr(device, f"token_{pair}") if pair else None
    return PushRecord(
        time=started, verb=request.verb, id=request.id, username=device.username,
        selector=device.selector, pair=pair, token=shorten(token) if token else None,
        appid=getattr(device, f"appid_{pair}") if pair else None, outcome=outcome,
        code=last.code if last is not None else None,
        message=result.reason or (last.reason if last is not None else ""),
        attempts=result.attempts, latency=latency,
        requester=str(source.get("requester", "")),
    )


def _unsent(
    request: PushRequest, error: BaseException, started: float, latency: float,
    source: dict[str, Any],
) -> PushRecord:
    """The push history's one record of a request that reached no device (``error``: no
    device, the devices unreadable, the daemon stopping): ``skipped``, no selector."""
    if isinstance(error, UnknownUser):
        why = "no device of this user" + (
            f" with selector {request.selector}" if request.selector else "")
    elif isinstance(error, trio.Cancelled):
        why = "the daemon stopped before the devices were read"
    else:
        why = describe(error)
    return PushRecord(
        time=started, verb=request.verb, id=request.id, username=request.username,
        selector="", pair=None, token=None, appid=None, outcome="skipped", code=None,
        message=why, attempts=0, latency=latency, requester=str(source.get("requester", "")),
    )


def _devices_of(store: Store, username: str, selector: str | None) -> list[Device]:
    devices = store.devices(username)
    return [d for d in devices if d.selector == selector] if selector else devices


async def push_once(config: Config, host: PluginHost, request: PushRequest) -> list[DeviceResult]:
    """Send ``request`` outside the daemon (``pnbridge push``): the same fan-out, with the
    plugins that send pushes started before and shut down after (no other runs). Raises
    UnknownUser, or PluginError when no enabled plugin sends pushes. The devices' push
    records are written before it returns (requester ``cli``)."""
    send = transport(host)
    if send is None:
        raise PluginError("no enabled plugin sends pushes (enable pnmediator)")
    host.keep_only(host.implementers("send_push"))  # no other plugin runs for a push
    deadline = getattr(config.api.deadlines, request.verb)
    metrics = Metrics()
    async with (
        open_writer(config.storage) as writer,
        open_history(writer, config.storage, metrics) as history,
        trio.open_nursery() as tasks,
    ):
        host.attach(tasks)
        await host.startup()
        try:
            return await Pusher(writer, send, metrics, history).push(
                request, deadline, {"command": "push", "requester": "cli"}
            )
        finally:
            with trio.CancelScope(shield=True):
                await host.shutdown()
            tasks.cancel_scope.cancel()
