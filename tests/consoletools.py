"""What the console's tests share: a daemon config with the console on an admin listener,
the operators and the phones' users in files apart, and logging in with httpx."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import httpx
from configs import free_port
from pnbridge.access import users
from reports import report

OPERATOR, PASSWORD = "ops", "operator password 1"
PHONE, PHONE_PASSWORD = "+4930123456", "phone password 1"
KEY = "k" * 24
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def console_config(tmp_path: Path, *, console: dict[str, Any] | None = None,
                   **tables: Any) -> dict[str, Any]:
    """The console on an admin listener of its own; the operators and the phones' users in
    files apart (the phones report with basic auth)."""
    operators, phones = tmp_path / "operators", tmp_path / "phones"
    if not operators.exists():
        users.write(operators, {OPERATOR: users.new_user(OPERATOR, "pnbridge", PASSWORD)})
    if not phones.exists():
        users.write(phones, {PHONE: users.new_user(PHONE, "pnbridge", PHONE_PASSWORD)})
    config: dict[str, Any] = {
        "server": {"admin_listen": [f"127.0.0.1:{free_port()}"]},
        "auth": {"reporter": "basic", "users_file": str(phones)},
        "api": {"keys": [KEY]},
        "console": {"enabled": True, "users_file": str(operators), **(console or {})},
    }
    for name, table in tables.items():
        config[name] = {**config.get(name, {}), **table}
    return config


def admin_url(daemon) -> str:
    return f"http://{daemon.config.server.admin_listen[0]}"


def console_url(page: str, **args: str) -> str:
    """A console page's URL: ``console_url("device", selector="a/../b")`` (the value in the
    query, never in the path)."""
    return f"/console/{page}" + (f"?{urlencode(args, quote_via=quote)}" if args else "")


def target(href: str, base: str = "http://console.test/console/") -> tuple[str, dict[str, str]]:
    """Where a browser goes for ``href`` on a page at ``base``: the path (resolved as the
    browser resolves it, dot-segments and all) and the query's fields (each once)."""
    url = urlsplit(urljoin(base, href))
    fields = parse_qs(url.query, keep_blank_values=True)
    assert all(len(values) == 1 for values in fields.values()), href
    return url.path, {name: values[0] for name, values in fields.items()}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append({"class": found.get("class", ""),
                               "action": found.get("action", "")})
        elif tag == "input" and self.forms and found.get("type") == "hidden":
            self.forms[-1][found.get("name", "")] = found.get("value", "")
        elif tag == "a" and "href" in found:
            self.hrefs.append(found["href"])


def forms_of(html: str) -> list[dict[str, str]]:
    """Each form of a page: its ``class``, ``action`` and hidden fields (unescaped)."""
    parser = _Links()
    parser.feed(html)
    return parser.forms


def hrefs_of(html: str) -> list[str]:
    """Each link's ``href`` (unescaped)."""
    parser = _Links()
    parser.feed(html)
    return parser.hrefs


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def flash_of(html: str) -> str:
    found = re.search(r'class="flash( error)?"[^>]*>([^<]*)<', html)
    assert found, html
    return found.group(2)


async def login(client: httpx.AsyncClient, _headers: dict[str, str] | None = None,
                **form: str) -> httpx.Response:
    """GET the login page (its session and token), then POST the form (with ``_headers``)."""
    page = await client.get("/console/login")
    assert page.status_code == 200
    assert re.search(r'<form id="login" method="post"', page.text)
    fields = {"username": OPERATOR, "password": PASSWORD, **form}
    return await client.post("/console/login", data={"csrf": csrf_of(page.text), **fields},
                             headers=_headers)


@asynccontextmanager
async def logged_in(daemon) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the admin listener, logged in as the operator."""
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
        assert (await login(client)).status_code == 303
        yield client


async def token_of(client: httpx.AsyncClient) -> str:
    """The session's CSRF token, from a page's forms."""
    return csrf_of((await client.get("/console/")).text)


async def phone_report(daemon, selector: str, token: str = "tok-9f8e7d6c5b4a3210") -> None:
    await report(daemon, selector, username=PHONE, token=None, msgs=token,
                 auth=(PHONE, PHONE_PASSWORD))




def login_sync(client: httpx.Client, **form: str) -> httpx.Response:
    """``login`` for a daemon in another process."""
    page = client.get("/console/login")
    assert page.status_code == 200
    fields = {"username": OPERATOR, "password": PASSWORD, **form}
    return client.post("/console/login", data={"csrf": csrf_of(page.text), **fields})
