"""The hook contract between the daemon and its plugins (pluggy project ``pnbridge``).

Every hook may be a plain ``def`` or an ``async def``. ``device_registered`` and
``device_removed`` are delivered from the event journal, at least once and in order per
device; a plain one runs in a worker thread (it may block), an ``async`` one on the daemon's
trio loop (it must not). ``startup``, ``shutdown`` and ``send_push`` run on the trio loop
(``send_push`` should be ``async``: a push is on a deadline); a plain ``reload`` runs in a
worker thread; ``doctor`` runs only in ``pnbridge doctor``; ``register_commands`` when the
``pnbridge`` command reads its command line. Every hook but ``settings_class`` and
``register_commands`` may take ``app``, the plugin instance's ``PluginContext``; an
implementation gets only the arguments it names. docs/plugin-hooks.md documents each hook;
tests/test_docs.py fails when one is missing there or in the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Iterable

    import click

    from ..model import Event, Push, PushResult, Report
    from ..ops.findings import Finding, ServiceUser
    from .context import PluginContext

PROJECT = "pnbridge"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RetryLater(Exception):
    """Raised by an event hook: deliver this event again after ``seconds`` (e.g. Retry-After)."""

    def __init__(self, seconds: float, reason: str = ""):
        super().__init__(reason or f"retry in {seconds:g}s")
        self.seconds = seconds


class PermanentFailure(Exception):
    """Raised by an event hook: this event can never succeed; park it without retrying."""


@hookspec
def settings_class() -> type[Any] | None:
    """Return the dataclass that this plugin's ``[plugins.NAME]`` table is read into."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``pnbridge`` group (built-in and entry-point plugins only); each
    reads the config itself (``--config``), when it runs."""


@hookspec
def startup(app: PluginContext) -> None:
    """The daemon is starting: read settings, open clients, start tasks in ``app.nursery``."""


@hookspec
def shutdown(app: PluginContext) -> None:
    """The daemon is stopping (delivery has stopped): close what ``startup`` opened."""


@hookspec
def reload(app: PluginContext) -> None:
    """SIGHUP (e.g. logrotate's postrotate): reopen files and the like."""


@hookspec
def device_registered(event: Event, app: PluginContext) -> None:
    """A device was created, or its username, tokens or app ids changed."""


@hookspec
def device_removed(event: Event, app: PluginContext) -> None:
    """A device was removed; ``event.reason`` says why."""


@hookspec(firstresult=True)
def send_push(push: Push, app: PluginContext) -> PushResult | None:
    """Send one push to one device and say how it went; None leaves it to the next plugin."""


@hookspec(firstresult=True)
def authenticate_report(
    username: str | None, credentials: dict[str, str], report: Report, app: PluginContext
) -> bool | None:
    """Check a report on a route of auth mode ``hook``: True allows, False denies, None abstains."""


@hookspec
def doctor(app: PluginContext, user: ServiceUser) -> Iterable[Finding] | None:
    """``pnbridge doctor``: check what this plugin needs (without ``startup``, sending
    nothing): ``Finding("ok" | "warn" | "fail", what, fix)`` each; ``user`` can say what
    the service user may read and write."""
