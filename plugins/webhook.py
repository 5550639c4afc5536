"""webhook: POST every registration and removal, signed, to one or more URLs.

The body is a JSON document (see ``payload``); the headers ``X-Pnbridge-Event-Id``,
``X-Pnbridge-Timestamp`` and ``X-Pnbridge-Signature: v1=HEX`` let the receiver de-duplicate
and check ``HEX == HMAC-SHA256(secret, f"{timestamp}.{body}")``. Answers map to delivery
outcomes: 2xx delivered; 408, 429, 5xx, timeouts and connection errors retried (after
``Retry-After`` when the receiver sent one); any other answer parks the event as failed.
Each instance keeps its client and receivers in ``app.state`` (a ``Webhook``), so two
instances (``[plugins.crm] plugin = "webhook"``) post apart. docs/plugins/webhook.md is the
operator's and the receiver's guide.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import trio
from pnbridge import (
    PAIR_FIELDS,
    Event,
    Finding,
    PermanentFailure,
    PluginContext,
    RetryLater,
    check,
    hookimpl,
    http_reachable,
    parse_retry_after,
    redact,
)

EventKind = Literal["registered", "removed"]
TARGET_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "url": (str, "a string"), "secret": (str, "a string"), "timeout": ((int, float), "a number"),
}
REMEMBERED = 256  # events whose partly successful delivery is remembered for their retry
# At most this much of an answer's body is read (nothing but its status and headers matter);
# the rest is never received: the connection is closed.
MAX_ANSWER = 64 * 1024


def _check_url(url: str) -> str | None:
    try:
        parsed = httpx.URL(url)
    except Exception as error:
        return redact(f"{url!r} is no URL ({error})")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return f"{redact(url)!r} is no http:// or https:// URL"
    return None


def _check_urls(items: list[Any]) -> str | None:
    if not items:
        return "list at least one URL"
    for index, item in enumerate(items):
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict):
            return f"item {index}: expected a URL or a table {{ url = ... }}, got {item!r}"
        for key, value in item.items():
            if key not in TARGET_KEYS:
                return f"item {index}: unknown key {key} (known keys: url, secret, timeout)"
            kind, name = TARGET_KEYS[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"item {index}: {key}: expected {name}, got {value!r}"
        if "url" not in item:
            return f"item {index}: url is missing"
        problem = _check_url(item["url"])
        if problem is None and not item.get("secret", "x"):
            problem = "secret must not be empty"
        if problem is None and item.get("timeout", 1) <= 0:
            problem = "timeout must be more than 0"
        if problem:
            return f"item {index}: {problem}"
    return None


def _not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


@dataclass
class Settings:
    """``[plugins.webhook]``."""

    urls: list[Any] = field(metadata=check(_check_urls))  # URLs or {url, secret, timeout}
    secret: str = field(metadata=check(_not_empty))
    timeout: float = field(default=10.0, metadata=check(_positive))
    events: list[EventKind] = field(default_factory=lambda: ["registered", "removed"])
    redact_tokens: bool = False


@dataclass(frozen=True)
class Target:
    """One receiver: where to POST, the secret to sign with, how long to wait; ``shown`` is
    the URL without its credentials, for errors, logs and the failures table."""

    url: str = field(repr=False)
    secret: str = field(repr=False)
    timeout: float
    shown: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shown", redact(self.url))


class Retry(Exception):
    """At least one receiver failed in a way worth retrying."""


def targets(settings: Settings) -> list[Target]:
    """The receivers of ``settings``, each with its secret and timeout."""
    found = []
    for item in settings.urls:
        options = {"url": item} if isinstance(item, str) else item
        found.append(Target(
            options["url"], options.get("secret", settings.secret),
            float(options.get("timeout", settings.timeout)),
        ))
    return found


def token_digest(token: str | None) -> str | None:
    """What stands for a token with ``redact_tokens``: ``sha256:`` and 16 hex digits."""
    if token is None:
        return None
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def payload(event: Event, redact_tokens: bool) -> dict[str, Any]:
    """The JSON document POSTed for ``event``."""
    data = event.to_dict()
    device = data["after"] or data["before"]
    for side in ("before", "after"):
        if redact_tokens and data[side]:
            for key in PAIR_FIELDS[::2]:  # the tokens
                data[side][key] = token_digest(data[side][key])
    return {
        "id": data["id"], "seq": data["seq"], "kind": data["kind"], "reason": data["reason"],
        "time": data["time"], "username": data["username"], "selector": data["selector"],
        **{key: device[key] for key in PAIR_FIELDS},
        "before": data["before"], "after": data["after"], "source": data["source"],
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Pnbridge-Signature`` value: ``v1=`` HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


@dataclass
class Outcome:
    """How one receiver answered: ``retry`` (with an optional delay) or a permanent error."""

    problem: str
    retry: bool
    delay: float | None = None


class Webhook:
    """The running plugin: settings, the pooled client, which receivers took which event."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient, version: str):
        self.settings = settings
        self.targets = targets(settings)
        self.client = client
        self.user_agent = f"pnbridge-webhook/{version}"
        # Per event being retried: each receiver's refusal (None once it accepted).
        self.answered: OrderedDict[str, dict[str, str | None]] = OrderedDict()

    async def deliver(self, event: Event) -> None:
        """POST ``event`` to every receiver that has not accepted it yet; raise unless all
        have (``Retry``/``RetryLater`` to try again, ``PermanentFailure`` to park it)."""
        if event.kind not in self.settings.events:
            return
        body = json.dumps(
            payload(event, self.settings.redact_tokens), separators=(",", ":"), sort_keys=True
        ).encode()
        answered = self.answered.setdefault(event.id, {})
        self.answered.move_to_end(event.id)
        while len(self.answered) > REMEMBERED:
            self.answered.popitem(last=False)
        retries: dict[str, Outcome] = {}

        async def post(target: Target) -> None:
            outcome = await self._post(target, event, body)
            if outcome is not None and outcome.retry:
                retries[target.shown] = outcome
            else:
                answered[target.url] = outcome.problem if outcome else None

        async with trio.open_nursery() as nursery:
            for target in self.targets:
                if target.url not in answered:
                    nursery.start_soon(post, target)
        if retries:
            problems = "; ".join(f"{url}: {o.problem}" for url, o in retries.items())
            delays = [o.delay for o in retries.values() if o.delay is not None]
            if len(delays) == len(retries):
                raise RetryLater(max(delays), problems)
            raise Retry(problems)
        self.answered.pop(event.id, None)
        refused = [f"{redact(url)}: {problem}" for url, problem in answered.items() if problem]
        if refused:
            raise PermanentFailure("; ".join(refused))

    async def _post(self, target: Target, event: Event, body: bytes) -> Outcome | None:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.user_agent,
            "X-Pnbridge-Event-Id": event.id,
            "X-Pnbridge-Timestamp": timestamp,
            "X-Pnbridge-Signature": sign(target.secret, timestamp, body),
        }
        try:
            response = await self._exchange(target, body, headers)
        except httpx.TimeoutException:
            return Outcome(f"no answer within {target.timeout:g}s", retry=True)
        except httpx.HTTPError as error:
            return Outcome(redact(f"{type(error).__name__}: {error}"), retry=True)
        status = response.status_code
        answer = f"{status} {response.reason_phrase}".strip()
        if 200 <= status < 300:
            return None
        if status in (408, 429) or status >= 500:
            delay = parse_retry_after(response.headers.get("Retry-After"))
            return Outcome(answer, retry=True, delay=delay)
        return Outcome(answer, retry=False)

    async def _exchange(
        self, target: Target, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """POST ``body`` to ``target``; the answer, of whose body at most ``MAX_ANSWER`` bytes
        are read, for at most ``target.timeout`` seconds. A longer or slower one is cut off
        there (its connection closed): the status and headers decide alone."""
        async with self.client.stream(
            "POST", target.url, content=body, headers=headers, timeout=target.timeout
        ) as response:
            read = 0
            with trio.move_on_after(target.timeout):
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > MAX_ANSWER:
                        break
        return response


@hookimpl
def settings_class() -> type[Settings]:
    return Settings


@hookimpl
async def startup(app: PluginContext) -> None:
    settings = app.settings(Settings)
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=len(settings.urls))
    client = httpx.AsyncClient(limits=limits, follow_redirects=False)
    app.state = Webhook(settings, client, app.version)


@hookimpl
async def shutdown(app: PluginContext) -> None:
    if app.state is not None:
        await app.state.client.aclose()
        app.state = None


@hookimpl
async def device_registered(event: Event, app: PluginContext) -> None:
    await app.state.deliver(event)


@hookimpl
async def device_removed(event: Event, app: PluginContext) -> None:
    await app.state.deliver(event)


@hookimpl
async def doctor(app: PluginContext) -> list[Finding]:
    """Each receiver gives an HTTP answer (to a HEAD: no event is sent)."""
    return [
        await http_reachable(target.url, "receiver", f"check the URL in [plugins.{app.name}] "
                             "urls, the receiver, DNS and the firewall", target.timeout)
        for target in targets(app.settings(Settings))
    ]
