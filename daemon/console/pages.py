"""The console's read-only pages: the overview, search, a user, a device, a call, the parked
events. Each page's data is gathered off the loop (views.py); the templates escape all of
it, and build every link with ``url_for`` (a username or call Id may hold ``/``, ``%``,
``+``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from quart import Blueprint, Response, render_template, request, url_for

from ..errors import StoreError
from ..http.shared import Services
from ..model import isotime
from . import views
from .session import error_page, see_other

log = logging.getLogger("pnbridge.console")

T = TypeVar("T")
MAX_QUERY = 256  # characters of a search: longer than any username, selector or call Id


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

    @bp.get("/")
    async def overview() -> str:
        dispatcher = services.dispatcher
        cursors = ({name: state.cursor for name, state in dispatcher.states.items()}
                   if dispatcher is not None else None)
        page = await read(views.overview(reader(), services.readiness,
                                         services.metrics.activity, time.time(), cursors))
        return await render_template("overview.html", o=page)

    @bp.get("/search")
    async def search() -> Response | str:
        q = request.args.get("q", "").strip()
        if not q:
            return await error_page(400, "search for what? Give a username, a selector or "
                                    "a call Id")
        if len(q) > MAX_QUERY:
            return await error_page(400, f"the search is longer than {MAX_QUERY} characters: "
                                    "no username, selector or call Id is")
        found = await read(views.search(reader(), q))
        if found.count == 1:
            if found.users:
                return see_other(url_for("console.user", username=found.users[0][0]))
            if found.selector:
                return see_other(url_for("console.device", selector=q))
            return see_other(url_for("console.call", id=q))
        return await render_template("search.html", found=found, q=q)

    @bp.get("/users/<path:username>")
    async def user(username: str) -> Response | str:
        page = await read(views.user(reader(), username))
        if page is None:
            return await error_page(404, f"no user {username!r}: no device, event or push "
                                    "of theirs is stored")
        return await render_template("user.html", u=page)

    @bp.get("/devices/<path:selector>")
    async def device(selector: str) -> Response | str:
        page = await read(views.device(reader(), selector))
        if page is None:
            return await error_page(404, f"no device {selector!r}: no device, event or push "
                                    "with this selector is stored")
        return await render_template("device.html", d=page)

    @bp.get("/calls/<path:id>")
    async def call(id: str) -> Response | str:
        page = await read(views.call_page(reader(), id))
        if page is None:
            return await error_page(404, f"no call {id!r}: no push with this Id is in the "
                                    "history")
        return await render_template("call.html", c=page)

    @bp.get("/parked")
    async def parked() -> str:
        by_plugin = await read(views.parked(reader()))
        return await render_template("parked.html", by_plugin=by_plugin)
