"""Logging: one line per record on stderr; tokens only ever shortened; whatever came from
outside escaped, so no record can forge a line or write a terminal's escape codes."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, the bidi controls that
# reorder what a terminal shows, and lone surrogates (JSON lets them in; UTF-8 cannot hold them).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
# The userinfo of a URL (``scheme://user:password@host``): up to the authority's last ``@``.
# The scheme's length is bounded: a log line of "a.a.a..." must not cost quadratic time.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{0,31}://)[^/?#\s@]*(?:@[^/?#\s@]*)*@")


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: object) -> str:
    """``text`` as one printable line: control characters (C0, DEL, C1), line separators,
    bidi controls and lone surrogates as ``\\xNN`` / ``\\uNNNN``."""
    return _UNSAFE.sub(_escaped, str(text))


def escape_json(text: str) -> str:
    """JSON text with what ``json.dumps(ensure_ascii=False)`` leaves raw (DEL, C1, line
    separators, bidi controls) as ``\\uNNNN``: the same JSON value, safe on a terminal."""
    return _UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it cut: ``http://***@host/path``."""
    return _USERINFO.sub(r"\1***@", text)


def shorten(token: str | None) -> str:
    """A token cut to its ends, enough to tell tokens apart in a log: ``QVBBOT…2J``."""
    if not token:
        return "-"
    if len(token) <= 12:
        return token[:3] + "…"
    return f"{token[:6]}…{token[-2:]}"


def clip(text: str, most: int) -> str:
    """``text`` cut to at most ``most`` characters (whole code points), its end marked with
    ``…`` when cut."""
    return text if len(text) <= most else text[:most - 1] + "…"


class SafeFormatter(logging.Formatter):
    """A formatter for every record of the process (pnbridge's, hypercorn's, quart's): the
    message and its arguments escaped and URL credentials redacted; a traceback's lines
    escaped and indented, so that no line of it can pass for a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = redact(escape(record.message))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("  " + redact(escape(line)) for line in text.split("\n"))


def setup_logging(level: str) -> None:
    """Log to stderr, one line per record: level, logger name, message with key=value
    context; without timestamps under journald, which adds its own."""
    under_journald = "JOURNAL_STREAM" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    """Set the log level (``debug``, ``info``, ``warning`` or ``error``); also on reload."""
    logging.getLogger().setLevel(level.upper())
    # hypercorn's own lines ("Running on ... CTRL + C") only when debugging.
    logging.getLogger("pnbridge.http").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
    # httpx logs each request it sends (a webhook POST, a push) at info: only warnings.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


MAX_PROBLEM = 1000  # characters of an error that are logged and stored


def describe(error: BaseException) -> str:
    """``error`` as plain text, no Python repr, without URL credentials, at most MAX_PROBLEM
    characters; never raises (a plugin's exception may have a ``__str__`` that does). An
    OSError is its words and file (``No such file or directory: /var/log/audit.jsonl``); a
    built-in exception its type and message (``ValueError: bad field``); another class (a
    library's or a plugin's own, e.g. the webhook's ``Retry``) its message, or its name when
    it has none; a group its leaves."""
    try:
        text = redact(_plain(error))
    except Exception:
        text = f"{type(error).__name__} (<str failed>)"
    return text if len(text) <= MAX_PROBLEM else text[:MAX_PROBLEM] + "…"


def _plain(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_plain(leaf) for leaf in error.exceptions)
    if isinstance(error, OSError) and error.strerror:
        files = [str(f) for f in (error.filename, error.filename2) if f is not None]
        return f"{error.strerror}: {' -> '.join(files)}" if files else error.strerror
    message, name = str(error), type(error).__name__
    if type(error).__module__ != "builtins":
        return message or name
    return f"{name}: {message}" if message else name
