"""The FastAGI service: a TCP listener for Asterisk's ``AGI(agi://HOST:PORT/SCRIPT,...)`` and
its three scripts.

``wake`` pushes NotifyIncomingCall to every device of the callee, asks Asterisk for the
endpoint's contacts until one is there (or the wait is over), and sets the channel variables
the dialplan dials with. ``missed`` and ``answered-elsewhere`` push the follow-up verbs with
the call's id. Every push is one of the daemon's fan-outs (``Fanouts``, as for the push API:
the same Pusher, the same ``[api] max_in_flight``) and runs to its deadline whether or not
Asterisk is still connected.
Sessions are bounded in number and time; whatever one client sends stays in its session.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ..config.tables import AgiConfig, DeadlinesConfig
from ..errors import AgiError, BadScript, Busy, ListenError, StoreError, UnknownUser
from ..ops.log import describe, escape
from ..ops.metrics import Metrics
from ..push.inflight import Fanout, Fanouts
from ..push.request import PushRequest
from .protocol import MAX_VALUE, AgiChannel, Hangup

log = logging.getLogger("pnbridge.agi")

SCRIPTS = ("wake", "missed", "answered-elsewhere")
FOLLOW_UPS = {
    "missed": "NotifyIncomingCallMissed",
    "answered-elsewhere": "NotifyIncomingCallAnsweredElsewhere",
}
# What each script takes: positional AGI arguments, then the names the URL's query may use.
POSITIONAL = {"wake": ("user", "timeout"), "missed": ("id", "user"),
              "answered-elsewhere": ("id", "user")}
QUERY = {"wake": ("user", "timeout", "endpoint", "id"), "missed": ("id", "user", "wait"),
         "answered-elsewhere": ("id", "user", "wait")}
# A PJSIP endpoint name as it goes into ${PJSIP_DIAL_CONTACTS(...)}: nothing the dialplan's
# expression syntax would read.
_ENDPOINT = re.compile(r"[A-Za-z0-9_.+@:=\-]{1,128}")
MAX_TEXT = 256  # characters of a user or an id
YES, NO = ("1", "yes", "true"), ("0", "no", "false")
REFUSED_LOG_EVERY = 10.0
# Errors from accept() that pass (too many open files, memory): wait, then accept again.
_ACCEPT_PAUSE = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclass
class Pending:
    """A session's push: ``done`` is set with its status once the fan-out is over."""

    done: trio.Event = field(default_factory=trio.Event)
    status: str = ""  # sent, none, failed, unknown-user
    sent: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Call:
    """A session's script and what it is for."""

    script: str
    user: str
    id: str
    timeout: float = 0.0
    endpoint: str = ""
    wait: bool = False
    display_name: str | None = None


class AgiService:
    """Listens on ``[agi] listen``; one task per session, pushes in tasks of their own."""

    def __init__(
        self, config: AgiConfig, fanouts: Fanouts | None, metrics: Metrics,
        deadlines: Callable[[], DeadlinesConfig],
    ):
        self.config = config
        self.fanouts = fanouts
        self.metrics = metrics
        self.deadlines = deadlines
        self.active = 0
        self._refused = 0  # since the last log line about them
        self._refused_logged: float | None = None

    async def serve(
        self, shutdown: trio.Event,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until ``shutdown``, then close the sessions; their pushes go on in
        ``fanouts`` (the daemon drains them within its grace period). Reports ``started``
        with the addresses bound."""
        listeners: list[trio.SocketListener] = []
        try:
            for address in self.config.listen:
                host, port = _split(address)
                try:
                    listeners += await trio.open_tcp_listeners(port, host=host)
                except OSError as error:
                    raise ListenError(f"[agi] listen {address}",
                                      error.strerror or describe(error)) from None
            addresses = [_name(listener) for listener in listeners]
            async with trio.open_nursery() as sessions:
                for listener in listeners:
                    sessions.start_soon(self._accept, listener, sessions)
                log.info("FastAGI on %s", ", ".join(addresses))
                task_status.started(addresses)
                await shutdown.wait()
                sessions.cancel_scope.cancel()
        finally:
            _close(listeners)

    async def _accept(self, listener: trio.SocketListener, sessions: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:
                if error.errno not in _ACCEPT_PAUSE:
                    raise
                log.error("FastAGI: cannot accept a connection: %s", describe(error))
                await trio.sleep(0.1)
                continue
            if self.active >= self.config.max_sessions:
                self._refuse(stream)
                await stream.aclose()
                continue
            self.active += 1
            sessions.start_soon(self._session, stream)

    def _refuse(self, stream: trio.SocketStream) -> None:
        """Count a connection beyond max_sessions; log at most one line every REFUSED_LOG_EVERY
        seconds."""
        self.metrics.agi_refused.inc()
        self._refused += 1
        now = time.monotonic()
        if self._refused_logged is None or now - self._refused_logged >= REFUSED_LOG_EVERY:
            log.warning("FastAGI: %d sessions under way ([agi] max_sessions): connection from %s"
                        " closed (%d such since the last line like this)", self.active,
                        _peer(stream), self._refused)
            self._refused, self._refused_logged = 0, now

    async def _session(self, stream: trio.SocketStream) -> None:
        """One session, contained: whatever it raises is logged and counted, never raised."""
        peer, script, outcome = _peer(stream), "-", "error"
        started = time.monotonic()
        channel = AgiChannel(stream, self.config.read_timeout)
        try:
            with trio.move_on_after(self.config.session_timeout) as scope:
                env = await channel.read_environment()
                script = escape(_script_of(env)[:40])
                outcome = await self._run(channel, env, peer)
            if scope.cancelled_caught:
                outcome = "timeout"
                log.warning("FastAGI %s from %s: ended after [agi] session_timeout (%g s)",
                            script, peer, self.config.session_timeout)
        except Hangup as why:
            outcome = "hangup"
            log.info("FastAGI %s from %s: %s after %.1f s%s", script, peer, why,
                     time.monotonic() - started,
                     "; the push goes on to its deadline" if script in SCRIPTS else "")
        except AgiError as error:
            outcome = "garbage"
            log.warning("FastAGI from %s: %s; connection closed", peer, error)
        except Exception as error:  # a bug here must not end the other sessions
            log.exception("FastAGI %s from %s failed: %s", script, peer, describe(error))
        finally:
            self.active -= 1
            self.metrics.agi_sessions.labels(script if script in SCRIPTS else "-", outcome).inc()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _run(self, channel: AgiChannel, env: dict[str, str], peer: str) -> str:
        """Run the session's script; its outcome (PNBRIDGE_STATUS, or error)."""
        try:
            call = self._call_of(env)
        except BadScript as error:
            log.warning("FastAGI from %s: %s", peer, escape(error))
            await channel.verbose(f"pnbridge: {error}")
            await channel.set_variable("PNBRIDGE_REASON", str(error))
            await channel.set_variable("PNBRIDGE_STATUS", "error")
            return "error"
        source = {"agi": call.script, "client": peer, "channel": env.get("agi_channel", "")}
        if call.script == "wake":
            return await self._wake(channel, call, source)
        return await self._follow_up(channel, call, source)

    def _call_of(self, env: dict[str, str]) -> Call:
        """The script and its arguments, from the URL and the AGI arguments; BadScript
        naming what is wrong."""
        script = _script_of(env)
        if script not in SCRIPTS:
            raise BadScript(f"unknown script '{escape(script[:40])}' (known: "
                            f"{', '.join(SCRIPTS)})")
        values = _query(env, script)
        names = POSITIONAL[script]
        args = [env[f"agi_arg_{n}"] for n in range(1, len(env) + 1) if f"agi_arg_{n}" in env]
        if len(args) > len(names):
            raise BadScript(f"{script} takes at most {len(names)} arguments "
                            f"({', '.join(names)}), got {len(args)}")
        for name, value in zip(names, args, strict=False):
            if value == "":
                continue
            if name in values:
                raise BadScript(f"{name} given twice: as an argument and in the URL")
            values[name] = value
        user = values.get("user") or env.get("agi_extension", "")
        _check_text("user", user)
        if script != "wake":
            if not values.get("id"):
                raise BadScript(f"{script} needs the call's id (the wake's PNBRIDGE_PUSH_ID)"
                                " as its first argument")
            _check_text("id", values["id"])
            return Call(script, user, values["id"], wait=_flag(values.get("wait", "no")))
        call_id = values.get("id") or env.get("agi_uniqueid", "")
        _check_text("id", call_id)
        endpoint = values.get("endpoint", user)
        if not _ENDPOINT.fullmatch(endpoint):
            raise BadScript(f"endpoint '{escape(endpoint[:80])}' is not a PJSIP endpoint name"
                            " (letters, digits, _ . + @ : = -); give it as ?endpoint=")
        name = env.get("agi_calleridname", "")[:MAX_TEXT]
        return Call(script, user, call_id, self._timeout(values.get("timeout")), endpoint,
                    display_name=None if name in ("", "unknown") else name)

    def _timeout(self, text: str | None) -> float:
        if text is None:
            return self.config.default_wait
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not 0 <= seconds < math.inf:
            raise BadScript(f"timeout '{escape(text[:40])}' is not a number of seconds, 0 or more")
        return min(seconds, self.config.max_wait)

    def _start(self, request: PushRequest, source: dict[str, str]) -> Pending:
        """Start the push among the daemon's fan-outs (it outlives the session); its
        Pending, settled when the fan-out is over."""
        pending = Pending()
        if self.fanouts is None:
            self._settle(pending, request, "failed", 0,
                         "no push transport: enable a send_push plugin (pnmediator)")
            return pending
        try:
            fanout = self.fanouts.start(request, getattr(self.deadlines(), request.verb),
                                        source)
        except Busy as error:
            self._settle(pending, request, "failed", 0, str(error))
            return pending
        fanout.then(lambda done: self._settle(pending, request, *_outcome(done)))
        return pending

    def _settle(self, pending: Pending, request: PushRequest, status: str, sent: int,
                reason: str) -> None:
        pending.status, pending.sent, pending.reason = status, sent, reason
        pending.done.set()
        log.info("FastAGI push %s username=%s id=%s: %s%s", request.verb,
                 escape(request.username), escape(request.id), status,
                 f" ({escape(reason)})" if reason else "")

    async def _wake(self, channel: AgiChannel, call: Call, source: dict[str, str]) -> str:
        request = PushRequest(username=call.user, verb="NotifyIncomingCall", id=call.id,
                              display_name=call.display_name)
        pending = self._start(request, source)
        await channel.set_variable("PNBRIDGE_PUSH_ID", call.id)  # for missed, even if cut
        started = time.monotonic()
        contacts = ""
        with trio.move_on_after(call.timeout):
            contacts = await self._contacts(channel, call.endpoint, pending)
        await pending.done.wait()  # within the push's deadline
        waited = time.monotonic() - started
        log.info("FastAGI wake username=%s id=%s: %s, %d device(s) sent, contacts %s after"
                 " %.1f s", escape(call.user), escape(call.id), pending.status, pending.sent,
                 "found" if contacts else "none", waited)
        await channel.set_variable("PNBRIDGE_DEVICES", str(pending.sent))
        await channel.set_variable("PNBRIDGE_CONTACTS", _fit(contacts))
        if pending.reason:
            await channel.set_variable("PNBRIDGE_REASON", pending.reason)
        await channel.set_variable("PNBRIDGE_STATUS", pending.status)
        return pending.status

    async def _contacts(self, channel: AgiChannel, endpoint: str, pending: Pending) -> str:
        """The endpoint's dial string, asked of Asterisk every poll_interval until it is not
        empty; "" at once when the push went to no device (nobody is woken)."""
        while True:
            reply = await channel.command(
                f'GET FULL VARIABLE "${{PJSIP_DIAL_CONTACTS({endpoint})}}"')
            if reply.code != 200:
                await channel.verbose(f"pnbridge: Asterisk answered {reply.code} "
                                      f"{reply.extra} to GET FULL VARIABLE: not waiting")
                return ""
            if channel.hungup:
                raise Hangup("the channel hung up")
            if reply.result == "1" and reply.data:
                return reply.data
            if pending.done.is_set() and pending.status != "sent":
                return ""
            await channel.hangup_within(self.config.poll_interval)

    async def _follow_up(self, channel: AgiChannel, call: Call, source: dict[str, str]) -> str:
        request = PushRequest(username=call.user, verb=FOLLOW_UPS[call.script], id=call.id)
        pending = self._start(request, source)
        await channel.set_variable("PNBRIDGE_PUSH_ID", call.id)
        if not call.wait:
            await channel.set_variable("PNBRIDGE_STATUS", "queued")
            return "queued"
        await pending.done.wait()
        await channel.set_variable("PNBRIDGE_DEVICES", str(pending.sent))
        if pending.reason:
            await channel.set_variable("PNBRIDGE_REASON", pending.reason)
        await channel.set_variable("PNBRIDGE_STATUS", pending.status)
        return pending.status


def _outcome(fanout: Fanout) -> tuple[str, int, str]:
    """The PNBRIDGE_STATUS of a finished fan-out, the devices sent, and why when not sent."""
    error = fanout.error
    if isinstance(error, UnknownUser):
        return "unknown-user", 0, "no device of this user"
    if isinstance(error, sqlite3.Error | StoreError):
        log.error("FastAGI: storage failed on push: %s", describe(error))
        return "failed", 0, "storage unavailable"
    if error is not None:
        return "failed", 0, describe(error)
    counts = fanout.counts()
    if counts["sent"]:
        return "sent", counts["sent"], ""
    if counts["failed"]:
        return "failed", 0, "; ".join(r.reason for r in fanout.results or ()
                                      if r.outcome == "failed")
    return "none", 0, "no device has a token for calls"


def _fit(contacts: str) -> str:
    """The dial string cut to whole contacts (``&``-separated) that fit one AGI command."""
    if len(contacts) <= MAX_VALUE:
        return contacts
    kept = contacts[:MAX_VALUE + 1].rpartition("&")[0]
    log.warning("FastAGI: the contacts are longer than %d characters; dialling %d of %d",
                MAX_VALUE, kept.count("&") + 1 if kept else 0, contacts.count("&") + 1)
    return kept


def _script_of(env: dict[str, str]) -> str:
    """The script's name: the path of ``agi_network_script`` without its query."""
    script = env.get("agi_network_script")
    if script is None:  # an agi_request URL only
        script = urllib.parse.urlsplit(env.get("agi_request", "")).path
    return script.partition("?")[0].strip("/")


def _query(env: dict[str, str], script: str) -> dict[str, str]:
    query = env.get("agi_network_script", "").partition("?")[2]
    values: dict[str, str] = {}
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query),
                                       max_num_fields=20)
    except ValueError as error:
        raise BadScript(f"the URL's query '{escape(query[:80])}' cannot be read: {error}"
                        ) from error
    for name, value in pairs:
        if name not in QUERY[script]:
            raise BadScript(f"{script}: unknown parameter '{escape(name[:40])}' "
                            f"(known: {', '.join(QUERY[script])})")
        if name in values:
            raise BadScript(f"{script}: parameter {name!r} given twice")
        values[name] = value
    return values


def _check_text(name: str, value: str) -> None:
    if not value:
        raise BadScript(f"no {name}")
    if len(value) > MAX_TEXT or not value.isprintable():
        cut = "…" if len(value) > 40 else ""
        raise BadScript(f"{name} '{escape(value[:40])}{cut}' must be printable and at most "
                        f"{MAX_TEXT} characters")


def _flag(text: str) -> bool:
    if text.lower() in YES:
        return True
    if text.lower() in NO:
        return False
    raise BadScript(f"wait '{escape(text[:40])}': expected yes or no")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _close(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()


def _name(listener: trio.SocketListener) -> str:
    host, port, *_ = listener.socket.getsockname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"

