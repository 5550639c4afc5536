"""pnbridge: the server side of the Acrobits softphone's token and removal reporters.

This module is the public plugin API, all of it (``__all__``); plugins import nothing else
of pnbridge (tests/test_public_api.py checks the built-ins). docs/writing-plugins.md shows
how each is used, docs/plugin-hooks.md the hooks.
"""

from .config.typed import check, parse_duration
from .delivery.commands import Since, config_option, fail, json_option, plugin_instances, table
from .delivery.context import PluginContext, PluginMetric, PluginMetrics
from .delivery.hookspecs import PermanentFailure, RetryLater, hookimpl
from .model import PAIR_FIELDS, Device, Event, Push, PushResult, Report
from .ops.findings import Finding, ServiceUser, http_reachable
from .ops.log import escape, escape_json, redact, shorten
from .retry import parse_retry_after

__version__ = "0.1.0"

__all__ = [
    "PAIR_FIELDS", "Device", "Event", "Finding", "PermanentFailure", "PluginContext",
    "PluginMetric", "PluginMetrics", "Push", "PushResult", "Report", "RetryLater", "ServiceUser",
    "Since", "__version__", "check", "config_option", "escape", "escape_json", "fail",
    "hookimpl", "http_reachable", "json_option", "parse_duration", "parse_retry_after",
    "plugin_instances", "redact", "shorten", "table",
]
