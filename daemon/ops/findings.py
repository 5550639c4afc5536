"""What a check finds (``Finding``): the vocabulary of ``pnbridge doctor`` (doctor.py) and of
the plugins' ``doctor`` hooks, with the checks they share: what the service user may do to a
path (``ServiceUser``) and whether a URL answers (``http_reachable``)."""

from __future__ import annotations

import os
import pwd
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import httpx

from ..config import paths
from .log import describe

Status = Literal["ok", "warn", "fail"]
TIMEOUT = 5.0  # seconds for each network check


class Finding(NamedTuple):
    """One check's result: ``status``, ``what`` was found, and ``fix`` (warn and fail)."""

    status: Status
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.what}" + (f"  ({self.fix})" if self.fix else "")


@dataclass(frozen=True)
class ServiceUser:
    """The user the daemon runs as; what it may do to a path follows from the modes, owners
    and groups on the way (``paths.allowed``: as the kernel decides it, without ACLs)."""

    account: paths.Account

    @classmethod
    def named(cls, name: str | None) -> ServiceUser:
        """The user ``name`` (default: the current user). Raises KeyError when unknown."""
        found = paths.account(name or pwd.getpwuid(os.getuid()).pw_name)
        if found is None:
            raise KeyError(name)
        return cls(found)

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def uid(self) -> int:
        return self.account.uid

    def problem(self, path: str | Path, want: int) -> str | None:
        """Why this user cannot ``want`` (R_OK | W_OK...) ``path``, or None when it can. A
        path that does not exist yet needs its directory writable (it is created there)."""
        path = Path(os.path.abspath(path))
        if problem := paths.unreachable(path, self.account):
            return f"{self.name} {problem}"
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return self.problem(path.parent, os.W_OK | os.X_OK) if want & os.W_OK else (
                f"{path} does not exist")
        except OSError as error:
            return f"{path}: {error.strerror}"
        if not paths.allowed(info, self.account, want):
            needed = "/".join(n for bit, n in ((os.R_OK, "read"), (os.W_OK, "write"),
                                               (os.X_OK, "enter")) if want & bit)
            return f"{self.name} cannot {needed} {path} ({paths.describe(path)})"
        if want & os.W_OK and os.statvfs(path).f_flag & os.ST_RDONLY:
            return f"{path} is on a read-only file system"
        return None

    def check(self, path: str | Path, want: int, what: str, fix: str) -> Finding:
        """A finding: ok when this user can ``want`` ``path``, else fail with ``fix``."""
        problem = self.problem(path, want)
        return Finding("ok", f"{what} {path}") if problem is None else Finding(
            "fail", f"{what}: {problem}", fix)


async def http_reachable(url: str, what: str, fix: str, timeout: float = TIMEOUT,
                         proxy: str = "") -> Finding:
    """ok when ``url`` gives any HTTP answer to a HEAD (TLS handshake included for https);
    fail when nothing answers there. Sends nothing else."""
    shown = _shown(url)
    try:
        async with httpx.AsyncClient(timeout=timeout, proxy=proxy or None, trust_env=False,
                                     follow_redirects=False) as client:
            answer = await client.head(url)
    except httpx.TimeoutException:
        return Finding("fail", f"{what} {shown}: no answer within {timeout:g} s", fix)
    except (httpx.HTTPError, OSError) as error:
        return Finding("fail", f"{what} {shown}: unreachable: {_reason(error)}", fix)
    return Finding("ok", f"{what} {shown} answers (HTTP {answer.status_code})")


def _shown(url: str) -> str:
    """``url`` without credentials, query or fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _reason(error: BaseException) -> str:
    while error.__context__ is not None and not str(error):
        error = error.__context__
    return f"{type(error).__name__}: {error}" if str(error) else describe(error)
