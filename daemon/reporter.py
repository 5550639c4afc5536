"""Turn any request the app can send into one ``Report``.

Values come from the URL query, the body and the route's path template, in rising order
of precedence; a null-ish value never replaces a known one. The body is read by what it
holds, not only by what its Content-Type claims: apps are often configured with the wrong
one, or none.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

from .config import ReporterConfig
from .events import Report, ReportKind
from .fields import (
    FIELDS,
    SELECTOR,
    TOKEN_FIELDS,
    USERNAME,
    FieldMap,
    clean_token,
    is_nullish,
)
from .routes import RouteTable

MAX_VALUE_LENGTH = 4096

Pairs = Iterable[tuple[str, Any]]


class BadReport(ValueError):
    """A report that cannot be taken; its message is the one-line reason for the 400."""


class Reporter:
    """The reporter routes and field mapping of one configuration."""

    def __init__(self, config: ReporterConfig):
        self.fields = FieldMap(config.fields, config.credential_fields)
        configured = [
            (r.path, r.kind, tuple(r.methods) if r.methods else None) for r in config.routes
        ]
        self.routes = RouteTable.build(configured, self.fields, config.default_routes)
        self.max_body = config.max_body

    def read(
        self,
        kind: ReportKind,
        path_values: dict[str, str],
        query: bytes,
        body: bytes,
        content_type: str | None,
    ) -> Report:
        """The report in one request; raises BadReport with the reason it cannot be taken."""
        try:
            query_text = query.decode("utf-8")
        except UnicodeDecodeError:
            raise BadReport("query string is not valid UTF-8") from None
        sources = (parse_form(query_text), parse_body(body, content_type), path_values.items())
        return self.build(kind, sources)

    def build(self, kind: ReportKind, sources: Iterable[Pairs]) -> Report:
        """Merge ``sources`` (lowest precedence first) into a validated Report."""
        values: dict[str, str | None] = dict.fromkeys(FIELDS)
        extras: dict[str, Any] = {}
        credentials: dict[str, str] = {}
        for pairs in sources:
            for name, value in pairs:
                canonical = self.fields.canonical(name)
                if canonical is not None:
                    text = _field_text(canonical, value)
                    if text is not None and canonical in TOKEN_FIELDS:
                        text = clean_token(text)
                    if not is_nullish(text):
                        values[canonical] = text
                elif self.fields.is_credential(name):
                    credentials[name] = value if isinstance(value, str) else json.dumps(value)
                else:
                    extras[name] = value
        for name in (USERNAME, SELECTOR):
            if values[name] is not None:
                values[name] = values[name].strip()
        report = Report(kind=kind, extras=extras, credentials=credentials, **values)
        _validate(report)
        return report


def _field_text(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        raise BadReport(f"{name} must be a string")
    if text is not None:
        text = text.strip("\r\n\t")  # line breaks of a pasted PostData template
        if len(text) > MAX_VALUE_LENGTH:
            raise BadReport(f"{name} is longer than {MAX_VALUE_LENGTH} characters")
        if not text.isprintable():
            raise BadReport(f"{name} contains control characters")
    return text


def _validate(report: Report) -> None:
    if report.kind == "token":
        if not report.username:
            raise BadReport("missing username")
        if not report.selector:
            raise BadReport("missing selector")
        if not report.tokens:
            raise BadReport("no push token (token_calls or token_msgs)")
    elif not report.selector and not (report.username and report.tokens):
        raise BadReport("missing selector (or username and push token)")


def parse_form(text: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` as pairs, decoded as form encoding (tokens get their "+" back later)."""
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            pairs.append(
                (unquote_plus(name, errors="strict").strip(), unquote_plus(value, errors="strict"))
            )
        except UnicodeDecodeError:
            raise BadReport("percent-encoded value is not valid UTF-8") from None
    return pairs


def parse_body(body: bytes, content_type: str | None) -> list[tuple[str, Any]]:
    """The fields of a form or JSON body, whichever it holds; raises BadReport otherwise."""
    if not body.strip():
        return []
    mime, charset = _content_type(content_type)
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    try:
        text = body.decode(charset)
    except UnicodeDecodeError:
        raise BadReport(f"body is not valid {charset}") from None
    text = text.lstrip("\ufeff").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise BadReport("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadReport("JSON body must be an object")
        return list(data.items())
    if text.startswith("[") and "json" in mime:
        raise BadReport("JSON body must be an object")
    if "=" in text:
        return parse_form(text)
    raise BadReport("body is neither form fields nor a JSON object")


def _content_type(header: str | None) -> tuple[str, str]:
    """The media type and charset of a Content-Type header (form and UTF-8 without one)."""
    if not header:
        return "application/x-www-form-urlencoded", "utf-8"
    mime, _, params = header.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or "utf-8"
    return mime.strip().lower(), charset
