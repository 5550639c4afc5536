"""The one way the tests send an app's report: to a daemon in the test's trio loop (a
``Daemon`` or an ``httpx.AsyncClient``: awaitable) or to a spawned one (an ``httpx.Client``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, overload

import httpx


def report_fields(selector: str | None, *, username: str | None = "u", token: str | None = "t",
                  calls: str | None = None, msgs: str | None = None,
                  **fields: str | None) -> dict[str, str]:
    """The fields of a report; ``calls`` and ``msgs`` are the app's two tokens with their app
    ids, ``token`` the single ``pushToken``; a field given as None is left out."""
    if calls is not None:
        fields |= {"pushTokenIncomingCall": calls, "pushappid_incoming_call": "com.app.voip"}
    if msgs is not None:
        fields |= {"pushTokenOther": msgs, "pushappid_other": "com.app"}
    every = {"username": username, "selector": selector, "pushToken": token, **fields}
    return {key: value for key, value in every.items() if value is not None}


@overload
def report(target: httpx.Client, selector: str | None = ..., *, path: str = ...,
           form: bool = ..., auth: Any = ..., status: int | None = ...,
           **fields: str | None) -> httpx.Response: ...
@overload
def report(target: Any, selector: str | None = ..., *, path: str = ..., form: bool = ...,
           auth: Any = ..., status: int | None = ...,
           **fields: str | None) -> Awaitable[httpx.Response]: ...
def report(target: Any, selector: str | None = None, *, path: str = "/token/",
           form: bool = False, auth: Any = None, status: int | None = 200,
           **fields: str | None) -> httpx.Response | Awaitable[httpx.Response]:
    """Send a report (GET query, or POST form with ``form``) of ``report_fields``; assert its
    answer's status unless ``status`` is None; the answer."""
    client = getattr(target, "client", target)  # a conftest.Daemon has its client
    data = report_fields(selector, **fields)
    request = (client.build_request("POST", path, data=data) if form
               else client.build_request("GET", path, params=data))
    if isinstance(client, httpx.AsyncClient):
        return _checked_later(client.send(request, auth=auth), status)
    return _checked(client.send(request, auth=auth), status)


def _checked(answer: httpx.Response, status: int | None) -> httpx.Response:
    if status is not None:
        assert answer.status_code == status, (answer.status_code, answer.text)
    return answer


async def _checked_later(sending: Awaitable[httpx.Response], status: int | None
                         ) -> httpx.Response:
    return _checked(await sending, status)
