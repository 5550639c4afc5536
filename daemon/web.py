"""The quart-trio app: the reporter routes (every path goes through the route table)."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .events import Report
from .log import shorten
from .reporter import BadReport, Reporter
from .store import Change, Store, StoreError
from .writer import Writer

log = logging.getLogger("pnbridge.reporter")

REPORT_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class Services:
    """What the request handlers use; ``reporter`` may be swapped on reload."""

    reporter: Reporter
    writer: Writer


def plain(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    """An error answer: the status and a one-line reason."""
    return Response(reason + "\n", status=status, headers=headers, content_type="text/plain")


def empty_ok() -> Response:
    """The success every app version accepts: 200, no body, no content type."""
    response = Response(b"", status=200)
    del response.headers["Content-Type"]
    return response


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("pnbridge")
    app.config["MAX_CONTENT_LENGTH"] = services.reporter.max_body
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False

    @app.route("/", defaults={"path": ""}, methods=REPORT_METHODS, provide_automatic_options=False)
    @app.route("/<path:path>", methods=REPORT_METHODS, provide_automatic_options=False)
    async def report(path: str) -> Response:
        reporter = services.reporter
        raw_path = request.scope.get("raw_path") or request.path.encode()
        try:
            found = reporter.routes.match(raw_path.decode("latin-1"), request.method)
        except UnicodeDecodeError:
            return plain(400, "path is not valid UTF-8")
        if found is None:
            return plain(404, "no reporter route here")
        if isinstance(found, set):
            return plain(405, "method not allowed", {"Allow": ", ".join(sorted(found))})
        route, values = found
        body = await request.get_data(cache=False)
        try:
            report = reporter.read(
                route.kind, values, request.scope["query_string"], body,
                request.headers.get("Content-Type"),
            )
        except BadReport as error:
            log.info("rejected route=%s client=%s: %s", route.template, request.remote_addr, error)
            return plain(400, str(error))
        source = {"route": route.template, "client": request.remote_addr}
        try:
            changes = await _store(services.writer, report, source)
        except (sqlite3.Error, StoreError) as error:
            log.error("storage failed route=%s: %s", route.template, error)
            return plain(503, "storage unavailable, try again later")
        _log_changes(report, changes, route.template)
        return empty_ok()

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        return plain(error.code or 500, (error.description or error.name).split("\n")[0])

    return app


async def _store(writer: Writer, report: Report, source: dict) -> list[Change]:
    now = time.time()
    if report.kind == "token":
        return [await writer.call(Store.register, report, source, now)]
    return await writer.call(_remove_reported, report, source, now)


def _remove_reported(store: Store, report: Report, source: dict, now: float) -> list[Change]:
    return store.remove(
        selector=report.selector, username=report.username, tokens=report.tokens,
        reason="app", source=source, now=now,
    )


def _log_changes(report: Report, changes: list[Change], route: str) -> None:
    if not changes:
        log.debug("removal of unknown device selector=%s route=%s", report.selector, route)
    for change in changes:
        device = change.device
        level = logging.DEBUG if change.outcome == "unchanged" else logging.INFO
        log.log(
            level, "%s selector=%s username=%s token_calls=%s token_msgs=%s route=%s",
            change.outcome, device.selector, device.username,
            shorten(device.token_calls), shorten(device.token_msgs), route,
        )
