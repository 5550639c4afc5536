"""Access to the console: the signed session cookie, the login and logout, the redirect to
the login page without a session, the CSRF token of every POST, the flash message carried
to the next page, and the security headers of every console answer."""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Response, g, render_template, request, url_for
from quart_trio import QuartTrio

from ..access.operators import Operators
from ..access.ratelimit import client_address, is_trusted, retry_after
from ..errors import Unavailable
from ..http.shared import Services
from ..ops.log import escape

log = logging.getLogger("pnbridge.console")

COOKIE = "pnbridge_console"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MAX_FLASH = 500  # characters of a banner (the log has the whole story)
# Reached without a session: the login page and the static files.
OPEN = {"console.login", "console.login_post", "console.static"}


def current() -> dict[str, Any]:
    """The request's session (the guard let it in: it exists)."""
    session: dict[str, Any] = g.console
    return session


def operator() -> str:
    """The operator logged in: a name of the operators file, or ``key:<id>``."""
    return str(current()["op"])


def flash(message: str, problem: bool = False) -> None:
    """Show ``message`` in ``.flash`` on the next page (carried in the session, so cut to
    ``MAX_FLASH`` characters: a browser drops a cookie over 4 KB); a ``problem`` (nothing
    was done) as ``.flash.error``."""
    if len(message) > MAX_FLASH:
        message = message[:MAX_FLASH - 1] + "…"
    current()["flash"] = [message, problem]
    g.console_save = True


def see_other(url: str) -> Response:
    """303 to ``url``: where a page is after a POST, or the login page."""
    return Response("", status=303, headers={"Location": url})


async def error_page(status: int, reason: str, headers: dict[str, str] | None = None
                     ) -> Response:
    """A short HTML page saying what is wrong."""
    body = await render_template("error.html", status=status, reason=reason)
    return Response(body, status=status, headers=headers, content_type="text/html")


def add_session(app: QuartTrio, bp: Blueprint, services: Services) -> None:
    """The login and logout routes, the guard of every other console route, the cookie and
    the headers."""
    operators = services.operators
    assert operators is not None, "the console needs services.operators"
    prefix = bp.url_prefix or ""

    @app.after_request
    async def secure(response: Response) -> Response:
        path = request.path
        if path == prefix or path.startswith(prefix + "/"):
            response.headers.update(HEADERS)
            if request.endpoint != "console.static":
                response.headers["Cache-Control"] = "no-store"
        return response

    @bp.before_request
    async def guard() -> Response | None:
        if request.endpoint == "console.static":
            return None
        g.console = operators.open(request.cookies.get(COOKIE), services.api_keys)
        if request.endpoint in OPEN:
            return None
        if g.console is None or not g.console.get("op"):
            return see_other(url_for("console.login"))
        if request.method == "POST":
            return await _refused_post(services, g.console)
        return None

    @bp.after_request
    async def save(response: Response) -> Response:
        session = g.get("console")
        if g.get("console_clear"):
            response.delete_cookie(COOKIE, path=prefix)
        elif session is not None and g.get("console_save"):
            response.set_cookie(
                COOKIE, operators.seal(session), expires=session["exp"], path=prefix,
                secure=_over_https(services), httponly=True, samesite="Strict")
        return response

    @bp.app_context_processor
    async def context() -> dict[str, Any]:
        session = g.get("console")
        if session is None:
            return {}
        shown, problem = session.pop("flash", None) or (None, False)
        if shown is not None:
            g.console_save = True
        return {"csrf": session["csrf"], "operator": session.get("op"), "flash": shown,
                "flash_problem": problem}

    @bp.get("/login")
    async def login() -> Response | str:
        if g.console is not None and g.console.get("op"):
            return see_other(url_for("console.overview"))
        return await _login_page(operators)

    @bp.post("/login")
    async def login_post() -> Response | str:
        client = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                                services.limits.trusted)  # logged, never the limit's key
        peer = request.remote_addr or "unix"
        if wait := operators.logins.take(services.limits.client_key(peer)):
            log.warning("too many logins peer=%s client=%s", escape(peer), escape(client))
            return await error_page(429, "too many login attempts from this address: wait a "
                                    "little", {"Retry-After": retry_after(wait)})
        if g.console is None:
            return await error_page(403, "no login session: open the login page again "
                                    "(the console needs cookies)")
        if (refused := await _refused_post(services, g.console)) is not None:
            return refused
        form = await request.form
        name, key = form.get("username", ""), form.get("key", "").strip()
        if wait := operators.login_names.take("(key)" if key else f"user:{name}"):
            log.warning("too many logins username=%s client=%s",
                        "(key)" if key else escape(name or "-"), escape(client))
            return await error_page(429, "too many login attempts with a key: wait a little"
                                    if key else "too many login attempts for this username: "
                                    "wait a little", {"Retry-After": retry_after(wait)})
        try:
            who = await _check(operators, services, name, form.get("password", ""), key)
        except Unavailable as error:
            return await error_page(503, f"{error}: try again in a moment")
        if who is None:
            log.warning("login refused username=%s client=%s",
                        escape(name or "-") if not key else "(key)", escape(client))
            return await _login_page(operators, 401, "wrong username and password, or key")
        log.info("login operator=%s client=%s", escape(who), escape(client))
        g.console = operators.new_session(who, services.api_keys.fingerprint(key) if key
                                          else None)
        g.console_save = True
        return see_other(url_for("console.overview"))

    @bp.post("/logout")
    async def logout() -> Response:
        operators.revoke(current())
        log.info("logout operator=%s", escape(operator()))
        g.console_clear = True
        return see_other(url_for("console.login"))


async def _check(operators: Operators, services: Services, name: str, password: str,
                 key: str) -> str | None:
    """The operator the form's credentials name, or None: a push API key in ``key``, or an
    operator of the operators file and their password (never a phone's account)."""
    if key:
        return await operators.check_key(services.api_keys, key)
    return name if await operators.check_password(name, password) else None


async def _login_page(operators: Operators, status: int = 200, problem: str | None = None
                      ) -> Response:
    """The login form, in a session of its own (its CSRF token) when there is none yet."""
    if g.console is None or g.console.get("op"):
        g.console = operators.new_session(None)
        g.console_save = True
    body = await render_template("login.html", problem=problem)
    return Response(body, status=status, content_type="text/html")


def _from_trusted_proxy(services: Services) -> bool:
    peer = request.remote_addr
    return not peer or is_trusted(peer, services.limits.trusted)  # no address: a unix socket


def _over_https(services: Services) -> bool:
    """Whether the browser used HTTPS: to pnbridge, or to a trusted proxy that says so in
    X-Forwarded-Proto (then the cookie is ``Secure``)."""
    if request.scheme == "https":
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https" and _from_trusted_proxy(services)


def _own_hosts(services: Services) -> set[str]:
    """The host (and port) the browser sent the form to: the Host header, or what a
    trusted proxy says in X-Forwarded-Host (one that passes Host on needs none)."""
    hosts = {request.host.lower()}
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded and _from_trusted_proxy(services):
        hosts.add(forwarded.split(",")[0].strip().lower())
    return hosts


async def _refused_post(services: Services, session: dict[str, Any]) -> Response | None:
    """403 for a POST whose CSRF token is missing or wrong, or sent from another origin
    (the host only: behind a TLS proxy the browser's scheme is not the request's)."""
    origin = request.headers.get("Origin")
    # "null": a form sent under Referrer-Policy no-referrer (ours) says nothing of its origin.
    sent_from = origin if origin not in (None, "null") else None
    if origin is None:
        sent_from = request.headers.get("Referer") or None
    if sent_from is not None and urlsplit(sent_from).netloc.lower() not in _own_hosts(services):
        return await error_page(403, "refused: the form was sent from another site")
    given = (await request.form).get("csrf", "")
    if not given:
        return await error_page(403, "refused: the form has no CSRF token (reload the page)")
    if not hmac.compare_digest(given.encode(), str(session.get("csrf", "")).encode()):
        return await error_page(403, "refused: the form's CSRF token is wrong or expired "
                                "(reload the page)")
    return None
