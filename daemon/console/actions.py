"""The console's actions: each a POST with the session's CSRF token, answered 303 back to
a page that shows its outcome in ``.flash``."""

from __future__ import annotations

from quart import Blueprint

from ..http.shared import Services


def add_actions(bp: Blueprint, services: Services) -> None:
    """``POST /console/parked/retry``, ``/console/devices/<selector>/test-push`` and
    ``/console/devices/<selector>/remove`` (to come)."""
