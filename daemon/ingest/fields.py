"""The canonical report fields, the alias table that maps what apps send onto them, and
the rules for values (null-ish, tokens, credentials)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..model import PAIR_FIELDS

USERNAME = "username"
SELECTOR = "selector"
TOKEN_CALLS = "token_calls"
APPID_CALLS = "appid_calls"
TOKEN_MSGS = "token_msgs"
APPID_MSGS = "appid_msgs"

FIELDS = (USERNAME, SELECTOR, *PAIR_FIELDS)

# Every name the Acrobits documents use, and their common spellings. Matching ignores
# case, "_" and "-", so "appId_msgs", "app_id_msgs" and "APPID-MSGS" are one name.
DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    USERNAME: ("username", "user"),
    SELECTOR: ("selector",),
    TOKEN_CALLS: ("token_calls", "pushTokenIncomingCall", "pushTokenCalls", "voipToken"),
    APPID_CALLS: ("appid_calls", "app_id_calls", "pushappid_incoming_call", "pushappid_calls"),
    TOKEN_MSGS: ("token_msgs", "pushToken", "pushTokenOther", "pushTokenMsgs", "token"),
    APPID_MSGS: ("appid_msgs", "app_id_msgs", "pushappid", "pushappid_other", "appid"),
}

# Fields that carry credentials: checked by authentication, never stored or logged.
DEFAULT_CREDENTIALS = (
    "password", "passwd", "pass", "pwd", "secret", "authPassword", "auth_password",
    "apiKey", "api_key", "accessToken", "access_token",
)

_NULLISH = frozenset({"", "null", "(null)", "<null>", "nil", "(nil)", "<nil>", "none", "undefined"})
# An app that does not know a value yet may send its template variable unsubstituted.
_UNSUBSTITUTED = re.compile(r"%[A-Za-z_][\w\[\]]*%")


def fold(name: str) -> str:
    """The form names are compared in: lower case, without "_" and "-"."""
    return name.lower().replace("_", "").replace("-", "")


def is_nullish(value: str | None) -> bool:
    """True for a value that means "not known yet": the normalizer makes it None, which
    never replaces a stored one (``Report.known``)."""
    if value is None:
        return True
    stripped = value.strip()
    return stripped.lower() in _NULLISH or _UNSUBSTITUTED.fullmatch(stripped) is not None


def clean_token(value: str) -> str:
    """A token is base64: a space can only be a "+" that was decoded as form encoding
    (even at either end, so spaces become "+" before anything is stripped)."""
    return value.replace(" ", "+").strip()


class FieldMap:
    """Resolves a request's field names to canonical fields, credentials or extras."""

    def __init__(
        self,
        extra_aliases: Mapping[str, Iterable[str]] | None = None,
        extra_credentials: Iterable[str] = (),
    ):
        self._canonical: dict[str, str] = {}
        for canonical, names in DEFAULT_ALIASES.items():
            for name in (canonical, *names):
                self._canonical[fold(name)] = canonical
        for canonical, extra in (extra_aliases or {}).items():
            for name in extra:
                self._canonical[fold(name)] = canonical
        self._credentials = {fold(n) for n in (*DEFAULT_CREDENTIALS, *extra_credentials)}

    def canonical(self, name: str) -> str | None:
        """The canonical field ``name`` stands for, or None."""
        return self._canonical.get(fold(name))

    def is_credential(self, name: str) -> bool:
        return fold(name) in self._credentials


def alias_conflicts(extra_aliases: Mapping[str, Iterable[str]]) -> list[str]:
    """Problems with operator aliases: unknown canonical names, one alias for two fields.

    An operator alias may take over a default one (the operator knows their apps)."""
    problems = []
    owner: dict[str, str] = {}
    for canonical, names in extra_aliases.items():
        if canonical not in FIELDS:
            problems.append(f"{canonical}: not a field (fields: {', '.join(FIELDS)})")
            continue
        for name in names:
            other = owner.get(fold(name))
            if other is not None and other != canonical:
                problems.append(f"{canonical}: alias {name!r} already means {other}")
            owner[fold(name)] = canonical
    return problems
