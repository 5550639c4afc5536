"""The quart-trio apps: the reporter routes (every path goes through the route table), and
the health and metrics endpoints, on the same app or an admin app of their own."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType

import trio
from quart import Response, g, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..access.apikeys import ApiKeys
from ..access.auth import Guard, Verdict
from ..access.ratelimit import Buckets, Limits, client_address, retry_after
from ..config.tables import ApiConfig
from ..errors import (
    BadJSON,
    BadPush,
    BadReport,
    Busy,
    NotOwner,
    Stopping,
    StoreError,
    Unavailable,
    UnknownUser,
)
from ..ingest.normalize import Reporter
from ..ingest.register import log_changes, owned_by, register
from ..jsontext import loads
from ..model import Report
from ..ops.log import escape, shorten
from ..ops.metrics import Metrics
from ..ops.readiness import Readiness
from ..push.inflight import Fanout, Fanouts
from ..push.request import PushRequest, parse_request
from ..storage.writer import Writer
from .health import add_health_routes

log = logging.getLogger("pnbridge.reporter")
access_log = logging.getLogger("pnbridge.access")

REPORT_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
API_PATH = "/api/v1/push"
# The access log's status of a push whose connection was reset before the answer (as
# nginx's). A client that closed with a FIN is answered and logged as such: pnbridge cannot
# tell it from one that half-closed and still reads (worker.Connection._answer_pending).
CLIENT_LEFT = 499


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


# A storage fault (a lock, a full or read-only disk) is usually over in moments.
STORAGE_RETRY = {"Retry-After": "1"}


def plain(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    """An error answer: the status and a one-line reason (escaped: it may quote the request);
    on the push API, its JSON error."""
    if _on_api():
        return api_error(status, reason, headers)
    return Response(escape(reason) + "\n", status=status, headers=headers,
                    content_type="text/plain")


def _on_api() -> bool:
    """Whether the request in hand is the push API's (where every answer is JSON)."""
    if not has_request_context():
        return False
    if request.url_rule is not None:
        return request.url_rule.rule == API_PATH
    return _raw_path() == API_PATH  # no route took it (an unknown method)


def unauthorized(verdict: Verdict) -> Response:
    """401, with the Digest or Basic challenges the mode has."""
    response = plain(401, "authentication required")
    for value in verdict.challenges:
        response.headers.add("WWW-Authenticate", value)
    return response


def empty_ok() -> Response:
    """The success every app version accepts: 200, no body, no content type."""
    response = Response(b"", status=200)
    del response.headers["Content-Type"]
    return response


class App(QuartTrio):
    """A quart-trio app whose log of an unexpected exception holds no request data."""

    def log_exception(
        self, exception_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None]
    ) -> None:
        """Log an unhandled exception (the answer is 500) by the route's template or rule and
        the exception's type: Quart's own line holds the decoded path, which on path-style
        routes is a token or a password, and the message may quote request data. The
        traceback goes to debug."""
        kind = exception_info[0].__name__ if exception_info[0] else "exception"
        where = "-"
        if has_request_context():
            rule = request.url_rule.rule if request.url_rule else "-"
            where = f"{request.method} route={g.get('route') or rule}"
        log.error("unexpected %s on %s: answered 500", kind, where)
        log.debug("unexpected %s on %s", kind, where, exc_info=exception_info)


def create_app(services: Services, *, health: bool = True, api: bool = True) -> QuartTrio:
    """The reporter app; with ``health``, it also serves /healthz, /readyz and /metrics; with
    ``api``, the push API."""
    app = App("pnbridge")
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    _instrument(app, services)
    if health:
        add_health_routes(app, services.readiness, services.metrics)
    if api:
        add_push_route(app, services)

    @app.route("/", defaults={"path": ""}, methods=REPORT_METHODS, provide_automatic_options=False)
    @app.route("/<path:path>", methods=REPORT_METHODS, provide_automatic_options=False)
    async def report(path: str) -> Response:
        reporter = services.reporter
        raw_path = (request.scope.get("raw_path") or request.path.encode()).decode("latin-1")
        query = request.scope["query_string"]
        try:
            found = reporter.routes.match(raw_path, request.method)
        except UnicodeDecodeError:
            return plain(400, "path is not valid UTF-8")
        if found is None:
            return plain(404, "no reporter route here")
        if isinstance(found, set):
            return plain(405, "method not allowed", {"Allow": ", ".join(sorted(found))})
        route, values = found
        g.kind, g.route = route.kind, route.template
        reports = services.metrics.reports
        limits = services.limits
        client = g.client = client_address(
            request.remote_addr, request.headers.get("X-Forwarded-For"), limits.trusted
        )
        if wait := limits.per_client.take(limits.client_key(client)):
            reports.labels(route.kind, "limited").inc()
            return plain(429, "too many requests", {"Retry-After": retry_after(wait)})
        body = await _body()
        try:
            report = reporter.read(
                route.kind, values, query, body, request.headers.get("Content-Type")
            )
        except BadReport as error:
            log.info("rejected route=%s client=%s: %s", route.template, client, error)
            reports.labels(route.kind, "rejected").inc()
            return plain(400, str(error))
        g.report = report
        guard = services.guard
        mode = route.auth or guard.config.reporter
        # Keyed on who the credentials claim to be: guesses at one password are limited
        # whatever username field (or none) the reports carry.
        claimed = guard.claimed(mode, request.headers, report)
        if claimed is not None and (wait := limits.per_username.take(claimed)):
            reports.labels(route.kind, "limited").inc()
            return plain(429, "too many requests", {"Retry-After": retry_after(wait)})
        target = raw_path + ("?" + query.decode("latin-1") if query else "")
        try:
            verdict = await guard.check(mode, request.method, target, request.headers, report)
        except Unavailable:
            reports.labels(route.kind, "failed").inc()
            return plain(503, "authentication unavailable, try again later", STORAGE_RETRY)
        report = g.report = owned_by(report, verdict.user)
        if not verdict.allowed:
            log.info("unauthorized route=%s client=%s username=%s mode=%s",
                     route.template, client, report.username or "-", mode)
            reports.labels(route.kind, "unauthorized").inc()
            return unauthorized(verdict)
        source = {"route": route.template, "client": client}
        try:
            changes = await register(services.writer, report, source, owner=verdict.user,
                                     max_devices=services.max_devices)
        except NotOwner:
            log.info("unauthorized route=%s client=%s username=%s: the device is another user's",
                     route.template, client, report.username)
            reports.labels(route.kind, "unauthorized").inc()
            return plain(403, "this device belongs to another user")
        except (sqlite3.Error, StoreError) as error:
            log.error("storage failed route=%s database=%s: %s", route.template,
                      services.writer.store.path, error)
            reports.labels(route.kind, "failed").inc()
            return plain(503, "storage unavailable, try again later", STORAGE_RETRY)
        log_changes(report, changes, route.template)
        outcomes: list[str] = [c.outcome for c in changes]
        for outcome in outcomes or ["unknown"]:
            reports.labels(route.kind, outcome).inc()
        return empty_ok()

    return app


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


def _not_json(content_type: str | None) -> bool:
    """A Content-Type given that is not JSON's (none at all is taken as JSON)."""
    if content_type is None:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json"))


def _not_api_path() -> Response | None:
    """404 unless the path, as sent, is exactly ``/api/v1/push``: routing matches the decoded
    path with strict_slashes off, which took ``/api/v1/push/``, ``/api/v1/%70ush`` and
    ``/api/v1/push%2F`` for it."""
    if _raw_path() == API_PATH:
        return None
    return api_error(404, f"no such path: the push API is {API_PATH}")


def add_push_route(app: QuartTrio, services: Services) -> None:
    """``POST /api/v1/push``: the PBX asks to push a verb to every device of a user. The
    fan-out runs in a task of the daemon's (``Fanouts``): a client that leaves before the
    answer does not cut it short; its access log line is written when the fan-out ends."""

    @app.route(API_PATH, methods=[m for m in REPORT_METHODS if m != "POST"],
               provide_automatic_options=False)
    async def push_other() -> Response:
        if elsewhere := _not_api_path():
            return elsewhere
        g.kind, g.route = "push", API_PATH
        if not services.api_keys:
            return api_error(404, "the push API is off (no [api] keys or key_hashes)")
        return not_post()

    @app.route(API_PATH, methods=["POST"], provide_automatic_options=False)
    async def push() -> Response:
        if elsewhere := _not_api_path():
            return elsewhere
        g.kind, g.route = "push", API_PATH
        if not services.api_keys:
            return api_error(404, "the push API is off (no [api] keys or key_hashes)")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        key = services.api_keys.match(given.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            return api_error(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
        if wait := services.api_limit.take(key):
            return api_error(429, "too many requests with this key",
                             {"Retry-After": retry_after(wait)})
        if _not_json(request.headers.get("Content-Type")):
            return api_error(415, "the body must be JSON (Content-Type: application/json)")
        try:
            data = loads(await request.get_data(cache=False))
        except BadJSON as error:
            return api_error(400, str(error), field=error.field)
        try:
            wanted = g.push = parse_request(data)
        except BadPush as error:
            return api_error(400, str(error), field=error.field)
        fanouts = services.fanouts
        if fanouts is None:
            return api_error(503, "no push transport: enable a send_push plugin (pnmediator)")
        deadline = getattr(services.api.deadlines, wanted.verb)
        source = {"route": API_PATH, "client": request.remote_addr}
        try:
            fanout = g.fanout = fanouts.start(wanted, deadline, source)
        except Busy as error:
            return api_error(503, f"too many pushes under way, try again later: {error}",
                             STORAGE_RETRY)
        try:
            results = await fanout.wait()
        except trio.Cancelled:  # connection reset: the fan-out runs on, logged when it ends
            fanout.then(partial(_client_left, services, request.method,
                                request.remote_addr or "-", g.started))
            raise
        except UnknownUser:
            return api_error(404, "no device of this user" + (
                " with this selector" if wanted.selector else ""), username=wanted.username)
        except (sqlite3.Error, StoreError) as error:
            log.error("storage failed on push database=%s: %s", services.writer.store.path,
                      error)
            return api_error(503, "storage unavailable, try again later", STORAGE_RETRY)
        except Stopping as error:
            return api_error(503, f"{error}, try again later", STORAGE_RETRY)
        except Exception:  # logged by the fan-out's task
            return api_error(500, "the push failed unexpectedly (the log says why)")
        return api_answer(200, {
            "username": wanted.username, "verb": wanted.verb,
            "devices": [r.to_dict() for r in results],
        })


def _push_line(
    method: str, status: int, push: PushRequest | None, fanout: Fanout | None, duration: float,
    client: str,
) -> None:
    """The access log line of a push request: verb, username and outcome counts too."""
    counts = ""
    if fanout is not None and fanout.results is not None:
        found = fanout.counts()
        counts = "".join(f" {o}={found[o]}" for o in ("sent", "failed", "removed", "skipped"))
    access_log.info(
        "%s route=%s status=%d verb=%s username=%s%s duration=%.1fms client=%s", method,
        API_PATH, status, push.verb if push else "-", escape(push.username) if push else "-",
        counts, duration * 1000, client,
    )


def _client_left(
    services: Services, method: str, client: str, started: float, fanout: Fanout
) -> None:
    """What a push whose client left before the answer leaves behind, once it is over."""
    services.metrics.push_requests.labels(fanout.request.verb, "client-left").inc()
    if services.access_log:
        _push_line(method, CLIENT_LEFT, fanout.request, fanout,
                   (fanout.finished or started) - started, client)


def create_admin_app(services: Services, *, api: bool = False) -> QuartTrio:
    """The app of ``[server] admin_listen``: /healthz, /readyz and /metrics; with ``api``
    (``[api] admin_only``), the push API too."""
    app = App("pnbridge-admin")
    _instrument(app, services)
    add_health_routes(app, services.readiness, services.metrics)
    if api:
        add_push_route(app, services)
    return app


def _instrument(app: QuartTrio, services: Services) -> None:
    """The header count limit, error answers, the latency histogram and the access log line,
    for either app."""

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        if error.code == 405 and _on_api():
            return not_post()
        return plain(error.code or 500, (error.description or error.name).split("\n")[0])

    @app.before_request
    async def start() -> Response | None:
        g.started = time.perf_counter()
        if len(request.headers) > services.max_headers:
            return plain(431, f"more than {services.max_headers} header fields")
        return None

    @app.after_request
    async def record(response: Response) -> Response:
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        kind = g.get("kind", "none")
        services.metrics.request_latency.labels(kind).observe(duration)
        if kind == "push":
            push: PushRequest | None = g.get("push")
            services.metrics.push_requests.labels(
                push.verb if push else "-", str(response.status_code)).inc()
            if services.access_log:
                _push_line(request.method, response.status_code, push, g.get("fanout"),
                           duration, request.remote_addr or "-")
        elif services.access_log:
            report: Report | None = g.get("report")
            access_log.info(
                "%s route=%s status=%d selector=%s username=%s duration=%.1fms client=%s",
                request.method, g.get("route") or _first_segment(_raw_path()),
                response.status_code, shorten(report.selector) if report else "-",
                (report.username or "-") if report else "-", duration * 1000,
                g.get("client", request.remote_addr),
            )
        return response


async def _body() -> bytes:
    """The request's body; an HTTP/1 request without Content-Length or Transfer-Encoding has
    none (RFC 9112, 6.3), which spares the wait for it on every GET."""
    if (request.http_version in ("1.0", "1.1") and not request.content_length
            and "Transfer-Encoding" not in request.headers):
        return b""
    return await request.get_data(cache=False, as_text=False, parse_form_data=False)


def _raw_path() -> str:
    """The request's path as sent (percent-encoded): what the access log shows."""
    return (request.scope.get("raw_path") or request.path.encode()).decode("latin-1")


def _first_segment(path: str) -> str:
    """An unmatched path, cut after its first segment: the rest may hold a token."""
    head, sep, _ = path[1:].partition("/")
    return f"/{head}{'/…' if sep else ''}"
