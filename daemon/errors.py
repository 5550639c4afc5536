"""Every error pnbridge shows to a user, with one base class.

A ``PnbridgeError``'s message is written for the person reading it (an operator at the
CLI, a PBX or an app in an HTTP answer, a log line): it names the key, field, file or
address at fault and says what is wrong, without a traceback. The CLI turns any of them
into ``pnbridge: ...`` lines in one place (``pnbridge.cli``). What a plugin raises to steer
its delivery (``RetryLater``, ``PermanentFailure``) is no error shown to a user: it lives
with the hooks.
"""

from __future__ import annotations


class PnbridgeError(Exception):
    """An error whose message is shown to a user as it is."""

    def lines(self) -> list[str]:
        """The message as the CLI prints it, one ``pnbridge: `` line each."""
        return [str(self)]


def leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions inside ``group`` and its nested groups."""
    found: list[BaseException] = []
    for error in group.exceptions:
        found.extend(leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found


def shown(error: BaseException) -> list[PnbridgeError] | None:
    """The errors to show for ``error``: itself when it is a PnbridgeError, those inside it
    when it is an exception group of nothing else; else None."""
    if isinstance(error, PnbridgeError):
        return [error]
    if isinstance(error, BaseExceptionGroup):
        found = leaves(error)
        errors = [e for e in found if isinstance(e, PnbridgeError)]
        if len(errors) == len(found):
            return errors
    return None


class CommandError(PnbridgeError):
    """A command cannot do what it was asked; each of ``lines`` is one line of its message."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self._lines = list(lines)

    def lines(self) -> list[str]:
        return self._lines


# -- configuration ----------------------------------------------------------------------


class ConfigError(PnbridgeError):
    """A configuration that cannot run; ``errors`` holds one ``key: problem`` line each."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors

    def lines(self) -> list[str]:
        return [f"error: {line}" for line in self.errors]


class TemplateError(PnbridgeError, ValueError):
    """A route template that cannot be compiled."""


class UsersFileError(PnbridgeError, ValueError):
    """A users file that cannot be read or has a malformed line."""


# -- reports and pushes from outside ----------------------------------------------------


class BadJSON(PnbridgeError, ValueError):
    """JSON that is not taken; ``field`` names the top-level field (or ``body``)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class BadReport(PnbridgeError, ValueError):
    """A report that cannot be taken; its message is the one-line reason for the 400."""


class Unavailable(PnbridgeError):
    """The check cannot be made now (the hook failed or is slow, too many checks queue):
    the answer is 503, whatever the credentials."""


class BadPush(PnbridgeError):
    """A push request that cannot be sent; ``field`` names the culprit."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownUser(PnbridgeError):
    """The user (or the selector of that user) has no device."""


class Busy(PnbridgeError):
    """As many push requests are under way as ``[api] max_in_flight`` allows."""


class Stopping(PnbridgeError):
    """The daemon stopped before the push request's fan-out finished."""


# -- storage ----------------------------------------------------------------------------


class CopyInterrupted(PnbridgeError):
    """``pnbridge store copy`` stopped between two chunks when asked to (Ctrl-C); running
    the same copy again finishes it."""


class StoreError(PnbridgeError):
    """The database cannot be opened, is of a schema this version does not know, or cannot
    do an operation (locked, read-only, full, corrupt). The store engine raises it for its
    own errors, chained to them (``from``), so that nothing outside ``storage/`` knows the
    engine. The message is the engine's; ``problem`` says what is wrong in an operator's
    words (the message itself unless the engine words it)."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message

    def lines(self) -> list[str]:
        return [self.problem]


class NotOwner(PnbridgeError):
    """A report for a device (selector) that belongs to another username."""


class Unreadable(PnbridgeError):
    """The file as a whole cannot be read (it is not UTF-8): nothing of it is imported."""


# -- PBX adapters -----------------------------------------------------------------------


class AgiError(PnbridgeError):
    """Asterisk's side sent what AGI does not (garbage, a line too long) or too slowly."""


class BadScript(PnbridgeError):
    """The script or its arguments cannot be run; the message says why, for the dialplan."""


# -- plugins and the server -------------------------------------------------------------


class PluginError(PnbridgeError):
    """A plugin failed where the daemon cannot go on without it (startup)."""


class ListenError(PnbridgeError, OSError):
    """An address of ``[server] listen`` or ``admin_listen`` cannot be bound: names that
    address and why, in words ("cannot listen on 127.0.0.1:8080: Address already in use")."""

    def __init__(self, bind: str, reason: str) -> None:
        super().__init__(f"cannot listen on {bind}: {reason}")
