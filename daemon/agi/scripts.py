"""The three scripts as the dialplan calls them (``AGI(agi://HOST:PORT/SCRIPT?QUERY,ARGS)``):
which script, and its arguments from the URL's query, the AGI arguments and the channel's
environment, checked (``BadScript`` naming what is wrong) into one ``Call``."""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass

from ..config.agi import AgiConfig
from ..errors import BadScript
from ..ops.log import escape

SCRIPTS = ("wake", "missed", "answered-elsewhere")
FOLLOW_UPS = {
    "missed": "NotifyIncomingCallMissed",
    "answered-elsewhere": "NotifyIncomingCallAnsweredElsewhere",
}
# What each script takes: positional AGI arguments, then the names the URL's query may use.
POSITIONAL = {"wake": ("user", "timeout"), "missed": ("id", "user"),
              "answered-elsewhere": ("id", "user")}
QUERY = {"wake": ("user", "timeout", "endpoint", "id"), "missed": ("id", "user", "wait"),
         "answered-elsewhere": ("id", "user", "wait")}
# A PJSIP endpoint name as it goes into ${PJSIP_DIAL_CONTACTS(...)}: nothing the dialplan's
# expression syntax would read.
_ENDPOINT = re.compile(r"[A-Za-z0-9_.+@:=\-]{1,128}")
MAX_TEXT = 256  # characters of a user or an id
YES, NO = ("1", "yes", "true"), ("0", "no", "false")


@dataclass(frozen=True)
class Call:
    """A session's script and what it is for."""

    script: str
    user: str
    id: str
    timeout: float = 0.0
    endpoint: str = ""
    wait: bool = False
    display_name: str | None = None


def call_of(env: dict[str, str], config: AgiConfig) -> Call:
    """The script and its arguments, from the URL and the AGI arguments; BadScript
    naming what is wrong."""
    script = script_of(env)
    if script not in SCRIPTS:
        raise BadScript(f"unknown script '{escape(script[:40])}' (known: "
                        f"{', '.join(SCRIPTS)})")
    values = _query(env, script)
    names = POSITIONAL[script]
    args = [env[f"agi_arg_{n}"] for n in range(1, len(env) + 1) if f"agi_arg_{n}" in env]
    if len(args) > len(names):
        raise BadScript(f"{script} takes at most {len(names)} arguments "
                        f"({', '.join(names)}), got {len(args)}")
    for name, value in zip(names, args, strict=False):
        if value == "":
            continue
        if name in values:
            raise BadScript(f"{name} given twice: as an argument and in the URL")
        values[name] = value
    user = values.get("user") or env.get("agi_extension", "")
    _check_text("user", user)
    if script != "wake":
        if not values.get("id"):
            raise BadScript(f"{script} needs the call's id (the wake's PNBRIDGE_PUSH_ID)"
                            " as its first argument")
        _check_text("id", values["id"])
        return Call(script, user, values["id"], wait=_flag(values.get("wait", "no")))
    call_id = values.get("id") or env.get("agi_uniqueid", "")
    _check_text("id", call_id)
    endpoint = values.get("endpoint", user)
    if not _ENDPOINT.fullmatch(endpoint):
        raise BadScript(f"endpoint '{escape(endpoint[:80])}' is not a PJSIP endpoint name"
                        " (letters, digits, _ . + @ : = -); give it as ?endpoint=")
    name = env.get("agi_calleridname", "")[:MAX_TEXT]
    return Call(script, user, call_id, _timeout(values.get("timeout"), config), endpoint,
                display_name=None if name in ("", "unknown") else name)


def _timeout(text: str | None, config: AgiConfig) -> float:
    if text is None:
        return config.default_wait
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise BadScript(f"timeout '{escape(text[:40])}' is not a number of seconds, 0 or more")
    return min(seconds, config.max_wait)


def script_of(env: dict[str, str]) -> str:
    """The script's name: the path of ``agi_network_script`` without its query."""
    script = env.get("agi_network_script")
    if script is None:  # an agi_request URL only
        script = urllib.parse.urlsplit(env.get("agi_request", "")).path
    return script.partition("?")[0].strip("/")


def _query(env: dict[str, str], script: str) -> dict[str, str]:
    query = env.get("agi_network_script", "").partition("?")[2]
    values: dict[str, str] = {}
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query),
                                       max_num_fields=20)
    except ValueError as error:
        raise BadScript(f"the URL's query '{escape(query[:80])}' cannot be read: "
                        f"{escape(str(error)[:80])}") from error
    for name, value in pairs:
        if name not in QUERY[script]:
            raise BadScript(f"{script}: unknown parameter '{escape(name[:40])}' "
                            f"(known: {', '.join(QUERY[script])})")
        if name in values:
            raise BadScript(f"{script}: parameter {name!r} given twice")
        values[name] = value
    return values


def _check_text(name: str, value: str) -> None:
    if not value:
        raise BadScript(f"no {name}")
    if len(value) > MAX_TEXT or not value.isprintable():
        cut = "…" if len(value) > 40 else ""
        raise BadScript(f"{name} '{escape(value[:40])}{cut}' must be printable and at most "
                        f"{MAX_TEXT} characters")


def _flag(text: str) -> bool:
    if text.lower() in YES:
        return True
    if text.lower() in NO:
        return False
    raise BadScript(f"wait '{escape(text[:40])}': expected yes or no")
