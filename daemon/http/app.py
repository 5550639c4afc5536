"""The quart-trio apps: the reporter routes (reports.py), the push API (pushapi.py), and the
health and metrics endpoints (health.py), on the same app or an admin app of their own; what
every request goes through on either (the header limit, error answers, latency, the access
log line)."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from quart import Response, g, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..model import Report
from ..ops.log import shorten
from ..push.request import PushRequest
from .health import add_health_routes
from .pushapi import add_push_route, push_line
from .reports import add_report_routes
from .shared import Services, not_post, on_api, plain, raw_path

log = logging.getLogger("pnbridge.reporter")
access_log = logging.getLogger("pnbridge.access")


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
    add_report_routes(app, services)
    return app


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
        if error.code == 405 and on_api():
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
        if kind in ("token", "removal"):
            services.metrics.activity.add("reports")
        if kind == "push":
            push: PushRequest | None = g.get("push")
            services.metrics.push_requests.labels(
                push.verb if push else "-", str(response.status_code)).inc()
            if services.access_log:
                push_line(request.method, response.status_code, push, g.get("fanout"),
                           duration, request.remote_addr or "-")
        elif services.access_log:
            report: Report | None = g.get("report")
            access_log.info(
                "%s route=%s status=%d selector=%s username=%s duration=%.1fms client=%s",
                request.method, g.get("route") or _first_segment(raw_path()),
                response.status_code, shorten(report.selector) if report else "-",
                (report.username or "-") if report else "-", duration * 1000,
                g.get("client", request.remote_addr),
            )
        return response


def _first_segment(path: str) -> str:
    """An unmatched path, cut after its first segment: the rest may hold a token."""
    head, sep, _ = path[1:].partition("/")
    return f"/{head}{'/…' if sep else ''}"
