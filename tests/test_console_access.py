"""The operator console's access on a real daemon: login (operators file, API key), the
session cookie, CSRF, the security headers, where the console is served, its config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from configs import free_port
from pnbridge.access import users

OPERATOR, PASSWORD = "ops", "operator password 1"
PHONE, PHONE_PASSWORD = "+4930123456", "phone password 1"
KEY = "k" * 24
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def console_config(tmp_path: Path, **console: Any) -> dict[str, Any]:
    """The console on an admin listener of its own, operators file and phone users apart."""
    operators = tmp_path / "operators"
    if not operators.exists():
        users.write(operators, {OPERATOR: users.new_user(OPERATOR, "pnbridge", PASSWORD)})
    phones = tmp_path / "phones"
    if not phones.exists():
        users.write(phones, {PHONE: users.new_user(PHONE, "pnbridge", PHONE_PASSWORD)})
    return {
        "server": {"admin_listen": [f"127.0.0.1:{free_port()}"]},
        "auth": {"reporter": "basic", "users_file": str(phones)},
        "api": {"keys": [KEY]},
        "console": {"enabled": True, "users_file": str(operators), **console},
    }


def admin_url(daemon) -> str:
    return f"http://{daemon.config.server.admin_listen[0]}"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def login(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    """GET the login page (its session and token), then POST the form."""
    page = await client.get("/console/login")
    assert page.status_code == 200
    form = {"username": OPERATOR, "password": PASSWORD, **form}
    return await client.post("/console/login", data={"csrf": csrf_of(page.text), **form})


@pytest.fixture
async def console(start_daemon, tmp_path):
    """A daemon with the console, and a client of its admin listener (not logged in)."""
    daemon = await start_daemon(console_config(tmp_path))
    async with httpx.AsyncClient(base_url=admin_url(daemon)) as client:
        yield daemon, client


async def test_pages_redirect_to_login_without_a_session(console):
    _, client = console
    for path in ["/console/", "/console/search?q=x", "/console/users/alice",
                 "/console/devices/abc", "/console/calls/x%2Fy", "/console/parked"]:
        answer = await client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].endswith("/console/login")
    for path in ["/console/logout"]:
        answer = await client.post(path, data={"csrf": "x"})
        assert answer.status_code == 303, path


async def test_operator_logs_in_and_out(console):
    _, client = console
    answer = await login(client)
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/console/")
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    page = await client.get("/console/")
    assert page.status_code == 200
    assert 'id="logout"' in page.text and 'id="search"' in page.text
    stolen = dict(client.cookies)
    out = await client.post("/console/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert (await client.get("/console/")).status_code == 303
    # The cookie of the session logged out no longer opens it.
    async with httpx.AsyncClient(base_url=str(client.base_url), cookies=stolen) as other:
        assert (await other.get("/console/")).status_code == 303
