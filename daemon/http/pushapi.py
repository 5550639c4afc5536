"""The push API (``POST /api/v1/push``): the key, the per-key limit and the body checked, the
request started among the daemon's fan-outs (push/inflight.py), and its answer: one line of
JSON, one result per device."""

from __future__ import annotations

import logging
from functools import partial
from typing import get_args

import trio
from quart import Response, g, request
from quart_trio import QuartTrio

from ..access.ratelimit import retry_after
from ..errors import BadJSON, BadPush, Busy, Stopping, StoreError, UnknownUser
from ..jsontext import loads
from ..model import DeviceOutcome
from ..ops.log import escape
from ..push.inflight import Fanout
from ..push.request import PushRequest, parse_request
from .shared import (
    API_PATH,
    REPORT_METHODS,
    STORAGE_RETRY,
    Services,
    api_answer,
    api_error,
    not_post,
    raw_path,
)

access_log = logging.getLogger("pnbridge.access")

# The access log's status of a push whose connection was reset before the answer (as
# nginx's). A client that closed with a FIN is answered and logged as such: pnbridge cannot
# tell it from one that half-closed and still reads (worker.Connection._answer_pending).
CLIENT_LEFT = 499


def _not_json(content_type: str | None) -> bool:
    """A Content-Type given that is not JSON's (none at all is taken as JSON)."""
    if content_type is None:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json"))


def add_push_route(app: QuartTrio, services: Services) -> None:
    """``POST /api/v1/push``: the PBX asks to push a verb to every device of a user. The
    fan-out runs in a task of the daemon's (``Fanouts``): a client that leaves before the
    answer does not cut it short; its access log line is written when the fan-out ends."""

    def _not_served() -> Response | None:
        """404 for a path that is not exactly the API's (routing matches the decoded path
        with strict_slashes off, which took ``/api/v1/push/``, ``/api/v1/%70ush`` and
        ``/api/v1/push%2F`` for it), or while the API is off; else None (and the request is
        logged as a push)."""
        if raw_path() != API_PATH:
            return api_error(404, f"no such path: the push API is {API_PATH}")
        g.kind, g.route = "push", API_PATH
        if not services.api_keys:
            return api_error(404, "the push API is off (no [api] keys or key_hashes)")
        return None

    @app.route(API_PATH, methods=[m for m in REPORT_METHODS if m != "POST"],
               provide_automatic_options=False)
    async def push_other() -> Response:
        refused = _not_served()
        return not_post() if refused is None else refused

    @app.route(API_PATH, methods=["POST"], provide_automatic_options=False)
    async def push() -> Response:
        if (refused := _not_served()) is not None:
            return refused
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
        source = {"route": API_PATH, "client": request.remote_addr, "requester": f"api:{key}"}
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
            services.storage_failures.worked()
            return api_error(404, "no device of this user" + (
                " with this selector" if wanted.selector else ""), username=wanted.username)
        except StoreError as error:
            services.storage_failures.failed(
                f"on push database={services.writer.store.where}: {error}")
            return api_error(503, "storage unavailable, try again later", STORAGE_RETRY)
        except Stopping as error:
            return api_error(503, f"{error}, try again later", STORAGE_RETRY)
        except Exception:  # logged by the fan-out's task
            return api_error(500, "the push failed unexpectedly (the log says why)")
        services.storage_failures.worked()
        return api_answer(200, {
            "username": wanted.username, "verb": wanted.verb,
            "devices": [r.to_dict() for r in results],
        })


def push_line(
    method: str, status: int, push: PushRequest | None, fanout: Fanout | None, duration: float,
    client: str,
) -> None:
    """The access log line of a push request: verb, username and outcome counts too."""
    counts = ""
    if fanout is not None and fanout.results is not None:
        found = fanout.counts()
        counts = "".join(f" {o}={found[o]}" for o in get_args(DeviceOutcome))
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
        push_line(method, CLIENT_LEFT, fanout.request, fanout,
                   (fanout.finished or started) - started, client)
