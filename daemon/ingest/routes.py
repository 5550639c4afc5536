"""Reporter route templates: ``/pushToken/{username}/{selector}/{token_msgs}&appid={appid_msgs}``.

A template is matched against the raw (still percent-encoded) request path, so an encoded
``%2F`` in a value never splits it. A placeholder for a token may hold ``/`` (tokens are
base64 and the app may not encode them); every other placeholder stops at ``/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from ..errors import TemplateError
from ..model import TOKEN_FIELDS, AuthMode
from .fields import FieldMap

Kind = Literal["token", "removal"]

# The app's <Prefix>Method may name GET, POST, PUT, HEAD or DELETE.
DEFAULT_METHODS: dict[Kind, tuple[str, ...]] = {
    "token": ("GET", "POST", "PUT", "HEAD"),
    "removal": ("GET", "POST", "PUT", "HEAD", "DELETE"),
}
ALLOWED_METHODS = ("GET", "POST", "PUT", "HEAD", "PATCH", "DELETE")

DEFAULT_TEMPLATES: dict[Kind, tuple[str, ...]] = {
    "token": ("/token", "/token/", "/token/{username}", "/token/{username}/"),
    "removal": (
        "/removeToken", "/removeToken/", "/removeToken/{username}", "/removeToken/{username}/",
    ),
}

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-\[\]]*")


@dataclass(frozen=True)
class Route:
    """One reporter route: which report it takes, on which methods, at which path."""

    template: str
    kind: Kind
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    auth: AuthMode | None = None  # the route's auth mode; None: the default ([auth] reporter)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The placeholder values of ``raw_path`` (percent-decoded), or None.

        Raises UnicodeDecodeError when a value's percent-encoding is not UTF-8.
        """
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {
            name: unquote(value, errors="strict") for name, value in found.groupdict().items()
        }


def compile_template(template: str, fields: FieldMap | None = None) -> re.Pattern[str]:
    """The regex for ``template``; raises TemplateError saying what is wrong with it."""
    fields = fields or FieldMap()
    if not template.startswith("/"):
        raise TemplateError("a route path starts with '/'")
    if "?" in template or "#" in template:
        raise TemplateError(
            "a route path has no '?' or '#': query strings and bodies are read on every route"
        )
    parts: list[str] = []
    seen: set[str] = set()
    pos = 0
    for found in _PLACEHOLDER.finditer(template):
        literal = template[pos : found.start()]
        if "{" in literal or "}" in literal:
            raise TemplateError(f"unbalanced brace in {template!r}")
        parts.append(re.escape(literal))
        name = found.group(1)
        if not _NAME.fullmatch(name):
            raise TemplateError(f"{{{name}}} is not a field name")
        group = _group_name(name)
        if group in seen:
            raise TemplateError(f"{{{name}}} appears twice")
        seen.add(group)
        if fields.canonical(name) in TOKEN_FIELDS:
            parts.append(f"(?P<{group}>.*?)")
        else:
            parts.append(f"(?P<{group}>[^/]*?)")
        pos = found.end()
    tail = template[pos:]
    if "{" in tail or "}" in tail:
        raise TemplateError(f"unbalanced brace in {template!r}")
    parts.append(re.escape(tail))
    return re.compile("".join(parts))


def _group_name(name: str) -> str:
    # Regex group names must be identifiers; keep the field name recoverable.
    return name.replace("-", "__dash__").replace("[", "__lb__").replace("]", "__rb__")


def field_name(group: str) -> str:
    """The field name a route's match group stands for."""
    return group.replace("__dash__", "-").replace("__lb__", "[").replace("__rb__", "]")


class RouteTable:
    """The reporter routes in the order they are tried: the operator's first, then defaults."""

    def __init__(self, routes: list[Route]):
        self.routes = routes

    @classmethod
    def build(
        cls,
        configured: list[tuple[str, Kind, tuple[str, ...] | None, AuthMode | None]],
        fields: FieldMap,
        defaults: bool = True,
    ) -> RouteTable:
        routes = [
            Route(t, kind, methods or DEFAULT_METHODS[kind], compile_template(t, fields), auth)
            for t, kind, methods, auth in configured
        ]
        if defaults:
            for kind, templates in DEFAULT_TEMPLATES.items():
                for template in templates:
                    pattern = compile_template(template, fields)
                    routes.append(Route(template, kind, DEFAULT_METHODS[kind], pattern))
        return cls(routes)

    def match(self, raw_path: str, method: str) -> tuple[Route, dict[str, str]] | set[str] | None:
        """The route and its values; else the methods the path allows (for a 405); else None."""
        allowed: set[str] = set()
        for route in self.routes:
            values = route.match(raw_path)
            if values is None:
                continue
            if method in route.methods:
                return route, {field_name(k): v for k, v in values.items()}
            allowed.update(route.methods)
        return allowed or None
