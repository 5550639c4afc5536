"""pnbridge: the server side of the Acrobits softphone's token and removal reporters.

What plugins import: ``from pnbridge import hookimpl, RetryLater, PermanentFailure``
(and ``Event``, ``Device`` for type hints, ``shorten`` to log a token), and for a push
transport ``Push`` and ``PushResult``. Nothing else is meant for plugins.
"""

from .delivery.hookspecs import PermanentFailure, RetryLater, hookimpl
from .model import Device, Event, Push, PushResult
from .ops.log import shorten

__version__ = "0.1.0"

__all__ = [
    "Device", "Event", "PermanentFailure", "Push", "PushResult", "RetryLater", "__version__",
    "hookimpl", "shorten",
]
