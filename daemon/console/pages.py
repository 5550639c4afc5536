"""The console's read-only pages: the overview, search, a user, a device, a call, the parked
events. Each page's data is gathered off the loop (views.py); the templates escape all of
it, and build every link with ``url_for`` (a username or call Id may hold ``/``, ``%``,
``+``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from quart import Blueprint, Response, current_app, render_template, request, url_for

from ..errors import StoreError
from ..http.shared import Services
from ..ingest.normalize import MAX_VALUE_LENGTH
from ..model import isotime
from . import views
from .session import error_page, see_other

log = logging.getLogger("pnbridge.console")

T = TypeVar("T")


def utc_text(epoch: float) -> str:
    """``epoch`` as UTC text, to the second (console.js shows it in the viewer's time)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def duration(seconds: float | None) -> str:
    """A lag or latency for people: ``850 ms``, ``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} d {hours % 24} h"


def max_query() -> int:
    """The longest search: a username or selector of a report (``MAX_VALUE_LENGTH``) or a
    call Id of a push request (the body's limit, ``[reporter] max_body``)."""
    body = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return max(MAX_VALUE_LENGTH, int(body))


def add_pages(bp: Blueprint, services: Services) -> None:
    """The pages' endpoints: ``overview``, ``search``, ``user``, ``device``, ``call``,
    ``parked``."""
    bp.add_app_template_filter(isotime, "isotime")
    bp.add_app_template_filter(utc_text, "utc_text")
    bp.add_app_template_filter(duration, "duration")

    async def read(gathering: Awaitable[T]) -> T:
        try:
            return await gathering
        except StoreError as error:
            log.error("console: storage failed on %s: %s", request.endpoint, error.problem)
            raise

    @bp.errorhandler(StoreError)
    async def unreadable(error: StoreError) -> Response:
        """A page whose query the store failed: 503, in the operator's words."""
        return await error_page(
            503, f"storage unavailable, try again in a moment ({error.problem})",
            {"Retry-After": "1"})

    def reader() -> views.ReadCall:
        return services.writer.reader.call

    def retrying() -> dict[str, views.Retrying]:
        """The event each plugin's delivery retries in memory now (the dispatcher's)."""
        dispatcher = services.dispatcher
        states = dispatcher.states.items() if dispatcher is not None else ()
        return {name: views.Retrying(event.seq, event.id, attempts, state.last_error, next_try)
                for name, state in states if state.in_retry is not None
                for event, attempts, next_try in [state.in_retry]}

    @bp.get("/")
    async def overview() -> str:
        dispatcher = services.dispatcher
        cursors = ({name: state.cursor for name, state in dispatcher.states.items()}
                   if dispatcher is not None else None)
        page = await read(views.overview(reader(), services.readiness,
                                         services.metrics.activity, time.time(), cursors,
                                         retrying()))
        return await render_template("overview.html", o=page)

    @bp.get("/search")
    async def search() -> Response | str:
        q = request.args.get("q", "").strip()
        if not q:
            return await error_page(400, "search for what? Give a username, a selector or "
                                    "a call Id")
        if len(q) > (most := max_query()):
            return await error_page(
                400, f"the search is longer than {most} characters: no username or selector "
                f"is (at most {MAX_VALUE_LENGTH}), nor a call Id (a push request is at most "
                f"{most} bytes)")
        found = await read(views.search(reader(), q))
        if found.count == 1:
            if found.users:
                return see_other(url_for("console.user", username=found.users[0][0]))
            if found.selector:
                return see_other(url_for("console.device", selector=q))
            return see_other(url_for("console.call", id=q))
        return await render_template("search.html", found=found, q=q)

    # A username, selector or call Id is never a part of the path: "..", "a/../b" or "%2e"
    # there would be resolved away by the browser (a form posted to another device's URL).
    @bp.get("/user")
    async def user() -> Response | str:
        username = request.args.get("username", "")
        if not username:
            return await error_page(400, "which user? The address names none (?username=)")
        page = await read(views.user(reader(), username))
        if page is None:
            return await error_page(404, f"no user {username!r}: no device, event or push "
                                    "of theirs is stored")
        return await render_template("user.html", u=page)

    @bp.get("/device")
    async def device() -> Response | str:
        selector = request.args.get("selector", "")
        if not selector:
            return await error_page(400, "which device? The address names none (?selector=)")
        page = await read(views.device(reader(), selector))
        if page is None:
            return await error_page(404, f"no device {selector!r}: no device, event or push "
                                    "with this selector is stored")
        return await render_template("device.html", d=page)

    @bp.get("/call")
    async def call() -> Response | str:
        id = request.args.get("id", "")
        if not id:
            return await error_page(400, "which call? The address names no Id (?id=)")
        page = await read(views.call_page(reader(), id))
        if page is None:
            return await error_page(404, f"no call {id!r}: no push with this Id is in the "
                                    "history")
        return await render_template("call.html", c=page)

    @bp.get("/parked")
    async def parked() -> str:
        plugins = await read(views.parked(reader(), retrying()))
        return await render_template("parked.html", plugins=plugins,
                                     shown=views.PARKED_SHOWN)
