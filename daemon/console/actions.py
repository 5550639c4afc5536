"""The console's actions: each a POST with the session's CSRF token (session.py checks it),
logged with the operator, and answered 303 back to a page whose ``.flash`` says what
happened. Retrying parked events and removing a device are the same store operations as
``pnbridge events retry`` and ``pnbridge devices remove``; a test push is a fan-out of the
daemon's, as the push API's."""

from __future__ import annotations

import logging
import re
import time
from operator import methodcaller
from typing import Any

from quart import Blueprint, Response, request, url_for

from ..errors import BadPush, Busy, Stopping, StoreError, UnknownUser
from ..http.shared import Services
from ..model import Device
from ..ops.log import escape
from ..push.request import parse_request
from ..storage.interface import Store
from .session import error_page, flash, operator, see_other
from .views import storable

log = logging.getLogger("pnbridge.console")

TEST_VERB = "NotifyGenericTextMessage"
MAX_RETRY_EVENTS = 100  # event ids or seqs one retry may name
ECHOED = 5  # of them, named again in the banner


def add_actions(bp: Blueprint, services: Services) -> None:
    """``POST /console/parked/retry`` (form: ``plugin``, optional ``event`` ids or seqs),
    ``/console/devices/test-push`` (form: ``selector``, ``message``) and
    ``/console/devices/remove`` (form: ``selector``). The selector is never a part of the
    path, where a browser would resolve a ``..`` in it to another device's URL."""

    @bp.post("/parked/retry")
    async def retry_parked() -> Response:
        form = await request.form
        plugin = form.get("plugin", "").strip()
        events = tuple(dict.fromkeys(e for value in form.getlist("event")
                                     for e in re.split(r"[\s,]+", value) if e))
        if len(events) > MAX_RETRY_EVENTS:
            return await error_page(400, f"{len(events)} events named: at most "
                                    f"{MAX_RETRY_EVENTS} at once (name none to retry all of "
                                    "the plugin's parked events)")
        dispatcher = services.dispatcher
        if dispatcher is None or plugin not in dispatcher.host.enabled:
            return await error_page(404, f"no plugin {plugin!r} runs in this daemon"
                                    if plugin else "which plugin? the form names none")
        try:
            counts = await services.writer.call(_retry, plugin, events)
        except StoreError as error:
            return await _unavailable(error)
        dispatcher.wake()  # delivered now, not at the next poll
        count = sum(counts)
        _logged("retry parked", f"plugin={escape(plugin)} events={len(events) or 'all'} "
                f"retried={count}")
        unmatched = tuple(e for e, n in zip(events, counts, strict=False) if not n)
        if events and not count:
            flash(f"no parked event of {plugin} matches {_listed(events)}", problem=True)
        else:
            flash(f"{count} parked event{'' if count == 1 else 's'} of {plugin} sent again"
                  + (f"; no parked event matches {_listed(unmatched)}" if unmatched else ""))
        return see_other(url_for("console.parked"))

    @bp.post("/devices/test-push")
    async def test_push() -> Response:
        form = await request.form
        selector = form.get("selector", "")
        if not selector:
            return await error_page(400, "which device? The form names no selector")
        try:
            device = await _device(services, selector)
        except StoreError as error:
            return await _unavailable(error)
        if device is None:
            return await error_page(404, f"no device with selector {selector}")
        back = see_other(url_for("console.device", selector=selector))
        message = form.get("message", "")
        try:
            if not message.strip():
                raise BadPush("message", "required: the text the phone shows")
            wanted = parse_request({"username": device.username, "selector": selector,
                                    "verb": TEST_VERB, "message": message})
        except BadPush as error:
            flash(f"no test push sent: {error}", problem=True)
            return back
        if services.fanouts is None:
            flash("no test push sent: no push transport (enable the pnmediator plugin)",
                  problem=True)
            return back
        source = {"requester": f"console:{operator()}", "route": request.path,
                  "client": request.remote_addr}
        try:
            fanout = services.fanouts.start(wanted, services.api.deadlines.NotifyGenericTextMessage,
                                            source)
            results = await fanout.wait()
        except (Busy, Stopping, StoreError, UnknownUser) as error:
            why = error.problem if isinstance(error, StoreError) else str(error)
            flash(f"no test push sent: {why}", problem=True)
            return back
        found = next((r for r in results if r.selector == selector), None)
        outcome = found.outcome if found else "not pushed"
        said = f" ({found.reason})" if found and found.reason else ""
        _logged("test push", f"selector={escape(selector)} username={escape(device.username)}"
                f" outcome={outcome}")
        flash(f"test push to {selector} of {device.username}: {outcome}{said}",
              problem=outcome != "sent")
        return back

    @bp.post("/devices/remove")
    async def remove_device() -> Response:
        selector = (await request.form).get("selector", "")
        if not selector:
            return await error_page(400, "which device? The form names no selector")
        if not storable(selector):
            return await error_page(404, f"no device with selector {selector}")
        who = operator()
        source: dict[str, Any] = {"console": who, "requester": f"console:{who}"}
        try:
            changes = await services.writer.call(methodcaller(
                "remove", selector=selector, reason="operator", source=source, now=time.time()))
        except StoreError as error:
            return await _unavailable(error)
        if not changes:
            return await error_page(404, f"no device with selector {selector}")
        username = changes[0].device.username
        _logged("remove device", f"selector={escape(selector)} username={escape(username)}")
        flash(f"removed device {selector} of {username}")
        return see_other(url_for("console.user", username=username))


def _retry(store: Store, plugin: str, events: tuple[str, ...]) -> list[int]:
    """Retry ``plugin``'s parked ``events`` (all when none), in one transaction: how many
    each name matched (one count, of all, when none is named)."""
    if not events:
        return [store.retry(plugin)]
    return [store.retry(plugin, (event,)) for event in events]


def _listed(events: tuple[str, ...]) -> str:
    """The first ``ECHOED`` of ``events`` (each cut to 40 characters), and how many more."""
    shown = " ".join(e if len(e) <= 40 else e[:39] + "…" for e in events[:ECHOED])
    return shown + (f" and {len(events) - ECHOED} more" if len(events) > ECHOED else "")


async def _device(services: Services, selector: str) -> Device | None:
    if not storable(selector):
        return None
    device: Device | None = await services.writer.reader.call(methodcaller("device", selector))
    return device


async def _unavailable(error: StoreError) -> Response:
    """503: the store failed the action's operation (as the pages say it)."""
    return await error_page(503, f"storage unavailable, try again in a moment "
                            f"({error.problem})", {"Retry-After": "1"})


def _logged(action: str, details: str) -> None:
    log.info("%s operator=%s %s", action, escape(operator()), details)
