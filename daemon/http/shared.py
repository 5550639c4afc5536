"""What the HTTP adapters share: the services their handlers call (``Services``) and the
error answers, plain text on the reporter routes and JSON on the push API."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from quart import Response, has_request_context, request

from ..access.apikeys import ApiKeys
from ..access.auth import Guard
from ..access.operators import Operators
from ..access.ratelimit import Buckets, Limits
from ..config.tables import ApiConfig
from ..delivery.dispatch import Dispatcher
from ..ingest.normalize import Reporter
from ..ops.log import escape
from ..ops.lograte import RepeatedFailure
from ..ops.metrics import Metrics
from ..ops.readiness import Readiness
from ..push.inflight import Fanouts
from ..storage.writer import Writer

REPORT_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
API_PATH = "/api/v1/push"


@dataclass
class Services:
    """What the request handlers use; all but ``writer`` may change on reload."""

    reporter: Reporter
    writer: Writer
    guard: Guard
    limits: Limits
    max_devices: int = 0
    max_headers: int = 64
    metrics: Metrics = field(default_factory=Metrics)
    readiness: Readiness = field(default_factory=Readiness)
    access_log: bool = True
    api: ApiConfig = field(default_factory=ApiConfig)
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    api_limit: Buckets = field(default_factory=lambda: Buckets(0, 1))
    fanouts: Fanouts | None = None  # None: no transport plugin (the API answers 503)
    # The operator console: who may log in (None: the console is off), and the delivery
    # it wakes after a retry of parked events.
    operators: Operators | None = None
    dispatcher: Dispatcher | None = None
    # Reports and pushes the store failed: logged at most once per 10 s while it is down.
    storage_failures: RepeatedFailure = field(default_factory=lambda: RepeatedFailure(
        logging.getLogger("pnbridge.reporter"), "storage"))


# A storage fault (a lock, a full or read-only disk) is usually over in moments.
STORAGE_RETRY = {"Retry-After": "1"}


def plain(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    """An error answer: the status and a one-line reason (escaped: it may quote the request);
    on the push API, its JSON error."""
    if on_api():
        return api_error(status, reason, headers)
    return Response(escape(reason) + "\n", status=status, headers=headers,
                    content_type="text/plain")


def on_api() -> bool:
    """Whether the request in hand is the push API's (where every answer is JSON)."""
    if not has_request_context():
        return False
    if request.url_rule is not None:
        return request.url_rule.rule == API_PATH
    return raw_path() == API_PATH  # no route took it (an unknown method)


def raw_path() -> str:
    """The request's path as sent (percent-encoded): what the access log shows."""
    return (request.scope.get("raw_path") or request.path.encode()).decode("latin-1")


def api_answer(status: int, data: dict, headers: dict[str, str] | None = None) -> Response:
    """An answer of the push API: one line of compact JSON (ASCII only) ending in ``\\n``,
    which a PBX's client that reads the first line (Kamailio's http_client) reads whole."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=True) + "\n"
    return Response(body, status=status, headers=headers, content_type="application/json")


def api_error(
    status: int, reason: str, headers: dict[str, str] | None = None, **more: str
) -> Response:
    """An error answer of the push API: ``{"error": reason, ...}``."""
    return api_answer(status, {"error": reason, **more}, headers)


def not_post() -> Response:
    """405 for any method but POST on the push API."""
    return api_error(405, "method not allowed: the push API takes POST", {"Allow": "POST"})
