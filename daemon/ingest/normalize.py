"""Turn any request the app can send into one ``Report``.

Values come from the URL query, the body and the route's path template, in rising order
of precedence; a null-ish value never replaces a known one. The body is read by what it
holds, not only by what its Content-Type claims: apps are often configured with the wrong
one, or none.
"""

from __future__ import annotations

import codecs
import encodings
import functools
import json
import pkgutil
import re
from collections.abc import Callable, Iterable
from encodings.aliases import aliases as CODEC_ALIASES
from typing import Any
from urllib.parse import unquote, unquote_plus

from ..config.tables import ReporterConfig
from ..errors import BadJSON, BadReport
from ..jsontext import label, loads
from ..model import TOKEN_FIELDS, Report, ReportKind
from .fields import (
    FIELDS,
    SELECTOR,
    USERNAME,
    FieldMap,
    clean_token,
    is_nullish,
)
from .routes import RouteTable

MAX_VALUE_LENGTH = 4096

Pairs = Iterable[tuple[str, Any]]


class Reporter:
    """The reporter routes and field mapping of one configuration."""

    def __init__(self, config: ReporterConfig):
        self.fields = FieldMap(config.fields, config.credential_fields)
        configured = [
            (r.path, r.kind, tuple(r.methods) if r.methods else None, r.auth)
            for r in config.routes
        ]
        self.routes = RouteTable.build(configured, self.fields, config.default_routes)
        self.max_extras = config.max_extras
        self.max_extra_bytes = config.max_extra_bytes
        self.max_extras_bytes = config.max_extras_bytes

    def _literal_plus(self, name: str) -> bool:
        """A username never holds a space: its "+" is a "+" even in form encoding (the app
        does not encode an E.164 number's "+")."""
        return self.fields.canonical(name) == USERNAME

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
        sources = (
            parse_form(query_text, self._literal_plus),
            parse_body(body, content_type, self._literal_plus),
            path_values.items(),
        )
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
            if (found := values[name]) is not None:
                values[name] = found.strip()
        self.check_extras(extras)
        report = Report(kind=kind, extras=extras, credentials=credentials, **values)
        _validate(report)
        return report

    def check_extras(self, extras: dict[str, Any]) -> None:
        """Raise BadReport unless ``extras`` keep to the [reporter] limits: each a value, or a
        list or object of values; each (name and value, as stored) and all of them small."""
        if len(extras) > self.max_extras:
            raise BadReport(f"extras: more than {self.max_extras} fields (max_extras)")
        total = 0
        for name, value in extras.items():
            items = value.values() if isinstance(value, dict) else value
            if isinstance(value, dict | list) and any(isinstance(v, dict | list) for v in items):
                raise BadReport(f"{label(name)}: nested too deep (an extra field holds a value,"
                                " or a list or object of values)")
            size = len(json.dumps(name)) + len(json.dumps(value))
            if size > self.max_extra_bytes:
                raise BadReport(f"{label(name)}: longer than {self.max_extra_bytes} bytes as"
                                " stored (max_extra_bytes)")
            total += size
        if total > self.max_extras_bytes:
            raise BadReport(f"extras: longer than {self.max_extras_bytes} bytes in all as stored"
                            " (max_extras_bytes)")


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


def parse_form(
    text: str, literal_plus: Callable[[str], bool] | None = None
) -> list[tuple[str, str]]:
    """``a=1&b=2`` as pairs, decoded as form encoding (tokens get their "+" back later); the
    values of the names ``literal_plus`` picks keep theirs."""
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            name = unquote_plus(name, errors="strict").strip()
            keep = literal_plus is not None and literal_plus(name)
            pairs.append((name, (unquote if keep else unquote_plus)(value, errors="strict")))
        except UnicodeDecodeError:
            raise BadReport("percent-encoded value is not valid UTF-8") from None
    return pairs


def parse_body(
    body: bytes, content_type: str | None, literal_plus: Callable[[str], bool] | None = None
) -> list[tuple[str, Any]]:
    """The fields of a form or JSON body, whichever it holds; raises BadReport otherwise."""
    if not body.strip():
        return []
    mime, name = _content_type(content_type)
    charset = text_encoding(name)
    if charset is None:
        raise BadReport("Content-Type: the charset is not a known text encoding (e.g. utf-8)")
    try:
        text = body.decode(charset)
    except Exception:  # a codec may raise anything on bytes it cannot take
        raise BadReport(f"body is not valid {charset}") from None
    if _SURROGATE.search(text):  # UTF-7 decodes "+2AA-" to one
        raise BadReport(f"body is not valid {charset} (a lone surrogate)")
    text = text.lstrip("\ufeff").strip()
    if text.startswith("{"):
        try:
            data = loads(text)
        except BadJSON as error:
            raise BadReport(str(error)) from None
        if not isinstance(data, dict):
            raise BadReport("JSON body must be an object")
        return list(data.items())
    if text.startswith("[") and "json" in mime:
        raise BadReport("JSON body must be an object")
    if "=" in text:
        return parse_form(text, literal_plus)
    raise BadReport("body is neither form fields nor a JSON object")


# Every codec module of the standard library; a charset name is looked up only among them.
_CODEC_MODULES = frozenset(m.name for m in pkgutil.iter_modules(encodings.__path__))
# Codec modules that are no charset: bytes-to-bytes transforms (never even imported here;
# their own flag says so too), an escape syntax, host name transforms, one that always
# fails, Windows-only ones.
_NOT_CHARSETS = frozenset({
    "base64_codec", "bz2_codec", "hex_codec", "quopri_codec", "rot_13", "uu_codec",
    "zlib_codec", "aliases", "charmap", "idna", "mbcs", "oem", "punycode", "raw_unicode_escape",
    "undefined", "unicode_escape",
})
_SURROGATE = re.compile("[\ud800-\udfff]")
_CHARSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,39}")


@functools.lru_cache(maxsize=64)
def text_encoding(name: str) -> str | None:
    """The codec of the charset ``name`` when it is one of the standard library's text
    encodings, else None. Only a stdlib codec module is ever looked up (through the stdlib's
    alias table), so a name cannot reach another codec search function or import anything
    else, and nothing raises."""
    if not _CHARSET_NAME.fullmatch(name):
        return None
    normal = encodings.normalize_encoding(name).lower()
    module = CODEC_ALIASES.get(normal) or CODEC_ALIASES.get(normal.replace(".", "_")) or normal
    if module not in _CODEC_MODULES or module in _NOT_CHARSETS:
        return None
    try:
        info = codecs.lookup(module)
    except Exception:  # e.g. a module of another platform
        return None
    return info.name if getattr(info, "_is_text_encoding", False) else None


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
