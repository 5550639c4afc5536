"""pnbridge: the server side of the Acrobits softphone's token and removal reporters.

What plugins import: ``from pnbridge import hookimpl, RetryLater, PermanentFailure``
(and ``Event``, ``Device`` for type hints, ``PAIR_FIELDS`` naming a device's token pair
fields, ``shorten`` to log a token), and for a push transport ``Push`` and ``PushResult``;
``parse_retry_after`` reads a ``Retry-After`` header as every built-in plugin does.
Nothing else is meant for plugins.
"""

from .delivery.hookspecs import PermanentFailure, RetryLater, hookimpl
from .model import PAIR_FIELDS, Device, Event, Push, PushResult
from .ops.log import shorten
from .retry import parse_retry_after

__version__ = "0.1.0"

__all__ = [
    "PAIR_FIELDS", "Device", "Event", "PermanentFailure", "Push", "PushResult", "RetryLater",
    "__version__", "hookimpl", "parse_retry_after", "shorten",
]
