"""The reporter routes: every path (and method) the route table has, a report read from the
request (ingest/normalize.py), let in by its route's auth mode (access/), and registered
(ingest/register.py); the answer is 200 with no body once it is stored."""

from __future__ import annotations

import logging

from quart import Response, g, request
from quart_trio import QuartTrio

from ..access.auth import Verdict
from ..access.ratelimit import client_address, retry_after
from ..errors import BadReport, NotOwner, StoreError, Unavailable
from ..ingest.register import log_changes, owned_by, register
from .shared import REPORT_METHODS, STORAGE_RETRY, Services, plain

log = logging.getLogger("pnbridge.reporter")


def add_report_routes(app: QuartTrio, services: Services) -> None:
    """The catch-all routes of the reporter (the health and API routes win over them)."""

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
        except StoreError as error:
            services.storage_failures.failed(
                f"route={route.template} database={services.writer.store.where}: {error}")
            reports.labels(route.kind, "failed").inc()
            return plain(503, "storage unavailable, try again later", STORAGE_RETRY)
        services.storage_failures.worked()
        log_changes(report, changes, route.template)
        outcomes: list[str] = [c.outcome for c in changes]
        for outcome in outcomes or ["unknown"]:
            reports.labels(route.kind, outcome).inc()
        return empty_ok()


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


async def _body() -> bytes:
    """The request's body; an HTTP/1 request without Content-Length or Transfer-Encoding has
    none (RFC 9112, 6.3), which spares the wait for it on every GET."""
    if (request.http_version in ("1.0", "1.1") and not request.content_length
            and "Transfer-Encoding" not in request.headers):
        return b""
    return await request.get_data(cache=False, as_text=False, parse_form_data=False)
