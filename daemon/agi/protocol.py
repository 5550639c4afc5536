"""Asterisk's side of a FastAGI session, as documented (res_agi): the environment block
(``agi_name: value`` lines, then an empty line), a command per line, each answered by
``200 result=N [(data)] [more]`` or an error (``510``, ``511`` on a dead channel, a
multi-line ``520-`` usage), and the ``HANGUP`` line Asterisk sends when the channel hangs
up. Every read has a timeout and a length limit: what Asterisk never sends is garbage."""

from __future__ import annotations

import re
from dataclasses import dataclass

import trio

from ..errors import AgiError
from ..ops.log import escape

MAX_LINE = 8192  # bytes of one line from Asterisk
MAX_ENV_LINES = 512  # lines of the environment, repeated ones included (128 arguments)
MAX_ENV_BYTES = 65536  # bytes of the environment
MAX_SESSION_BYTES = 1 << 20  # bytes Asterisk may send in one session (a few KiB are usual)
MAX_HANGUPS = 4  # HANGUP lines in a session (Asterisk sends one)
MAX_USAGE_LINES = 64  # lines of a "520-" usage answer
# Bytes of one command line, its newline included: Asterisk's run_agi() reads a command
# into char buf[AGI_BUF_LEN = 2048] (2047 bytes) and runs the rest of a longer line as the
# next command. Every line is built by command_line(), which cuts the value to fit.
MAX_COMMAND = 2000

_ENV_LINE = re.compile(r"(agi_[A-Za-z0-9_]+):(?: (.*))?")
_REPLY = re.compile(r"(\d{3})(?: result=(-?\d+)(?: \((.*)\))?(.*))?(?: .*)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Hangup(Exception):
    """The channel hung up (a ``HANGUP`` line, a ``511`` answer) or the connection ended."""


@dataclass(frozen=True)
class Reply:
    """One answer to a command: ``code`` 200 and ``result`` (with ``data``, the text in
    parentheses) when it ran, else the error code and its text in ``extra``."""

    code: int
    result: str = ""
    data: str | None = None
    extra: str = ""


def quote(value: str, room: int = MAX_COMMAND) -> bytes:
    """``value`` as one argument of an AGI command, in UTF-8: in double quotes, ``"`` and
    ``\\`` escaped, control characters dropped (a line break would end the command), cut on
    a character boundary (never between a backslash and what it escapes) to at most ``room``
    bytes, the quotes included."""
    out = bytearray(b'"')
    for char in _CONTROL.sub("", value):
        piece = ("\\" + char if char in '"\\' else char).encode("utf-8", "replace")
        if len(out) + len(piece) + 1 > room:
            break
        out += piece
    return bytes(out + b'"')


def command_line(head: str, value: str | None = None, tail: str = "") -> bytes:
    """The line that sends a command: ``head``, then ``value`` quoted (cut to what fits),
    then ``tail``, and a newline; never more than MAX_COMMAND bytes."""
    start = head.encode("utf-8", "replace")
    end = tail.encode("utf-8", "replace") + b"\n"
    if value is not None:
        start += b" " + quote(value, MAX_COMMAND - len(start) - 1 - len(end))
    if len(start) + len(end) > MAX_COMMAND or b"\n" in start or b"\n" in end[:-1]:
        raise ValueError(f"not one AGI command of at most {MAX_COMMAND} bytes: {head[:40]!r}")
    return start + end


def fits(head: str, value: str) -> bool:
    """Whether ``command_line(head, value)`` keeps all of ``value``."""
    return len(quote(value, MAX_COMMAND)) <= MAX_COMMAND - len(head.encode()) - 2


def parse_reply(line: str) -> Reply:
    """A command's answer line; AgiError when it is none."""
    found = _REPLY.fullmatch(line)
    if found is None:
        raise AgiError(f"not an AGI answer: {_show(line)}")
    code = int(found[1])
    if found[2] is None:
        return Reply(code, extra=line[4:])
    return Reply(code, found[2], found[3], (found[4] or "").strip())


class AgiChannel:
    """A FastAGI connection from Asterisk: read lines with a timeout, send commands."""

    def __init__(self, stream: trio.abc.Stream, read_timeout: float):
        self.stream = stream
        self.read_timeout = read_timeout
        self.hungup = False  # Asterisk sent HANGUP
        self.received = 0  # bytes, all of the session's
        self._hangups = 0
        self._buffer = bytearray()

    async def _receive(self) -> None:
        try:
            data = await self.stream.receive_some(MAX_LINE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise Hangup("the connection broke") from error
        if not data:
            raise Hangup("Asterisk closed the connection")
        self.received += len(data)
        if self.received > MAX_SESSION_BYTES:
            raise AgiError(f"more than {MAX_SESSION_BYTES} bytes in one session")
        self._buffer += data

    async def readline(self, timeout: float | None = None) -> str | None:
        """The next line (without its end), or None when none came within ``timeout``
        (``read_timeout`` by default: then AgiError). Partial lines stay buffered."""
        wait = self.read_timeout if timeout is None else timeout
        await trio.lowlevel.checkpoint()  # a line at a time, also when they come in bulk
        with trio.move_on_after(wait):
            while (end := self._buffer.find(b"\n")) < 0:
                if len(self._buffer) > MAX_LINE:
                    raise AgiError(f"a line longer than {MAX_LINE} bytes")
                await self._receive()
            if end > MAX_LINE:
                raise AgiError(f"a line longer than {MAX_LINE} bytes")
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[:end + 1]
            return line.decode("utf-8", "replace")
        if timeout is None:
            raise AgiError(f"nothing from Asterisk within {wait:g} s ([agi] read_timeout)")
        return None

    async def read_environment(self) -> dict[str, str]:
        """The ``agi_*`` variables up to the empty line that ends them (at most MAX_ENV_LINES
        lines, repeated ones counted, and MAX_ENV_BYTES bytes)."""
        env: dict[str, str] = {}
        lines = 0
        while (line := await self.readline()) != "":
            assert line is not None
            lines += 1
            if lines > MAX_ENV_LINES or self.received - len(self._buffer) > MAX_ENV_BYTES:
                raise AgiError(f"an environment longer than {MAX_ENV_LINES} lines or"
                               f" {MAX_ENV_BYTES} bytes")
            if line == "HANGUP":
                raise Hangup("the channel hung up before the session began")
            found = _ENV_LINE.fullmatch(line)
            if found is None:
                raise AgiError(f"not an AGI environment line: {_show(line)}")
            env[found[1]] = found[2] or ""
        if "agi_network_script" not in env and "agi_request" not in env:
            raise AgiError("no agi_network_script or agi_request in the environment")
        return env

    async def _line_skipping_hangup(self) -> str:
        while True:
            line = await self.readline()
            assert line is not None
            if line != "HANGUP":
                return line
            self._hung_up()

    async def command(self, head: str, value: str | None = None, tail: str = "") -> Reply:
        """Send one command (``command_line``) and read its answer (a HANGUP before it is
        noted). Raises Hangup on ``511`` (a dead channel) or a closed connection, AgiError on
        garbage."""
        line = command_line(head, value, tail)
        try:
            await self.stream.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise Hangup("the connection broke") from error
        line = await self._line_skipping_hangup()
        if re.match(r"\d{3}-", line):  # a usage text: "520-...", lines, "520 End of..."
            code = line[:3]
            for _ in range(MAX_USAGE_LINES):
                if (line := await self._line_skipping_hangup()).startswith(f"{code} "):
                    break
            else:
                raise AgiError(f"a {code} answer longer than {MAX_USAGE_LINES} lines")
        reply = parse_reply(line)
        if reply.code == 511:
            self.hungup = True
            raise Hangup(f"the channel is dead ({_show(line)})")
        return reply

    async def hangup_within(self, seconds: float) -> None:
        """Wait ``seconds`` for Asterisk to say HANGUP (then raise Hangup); anything else
        it sends meanwhile is garbage."""
        line = await self.readline(seconds)
        if line == "HANGUP":
            self._hung_up()
            raise Hangup("the channel hung up")
        if line is not None:
            raise AgiError(f"unexpected line while waiting: {_show(line)}")

    def _hung_up(self) -> None:
        self.hungup = True
        self._hangups += 1
        if self._hangups > MAX_HANGUPS:
            raise AgiError(f"more than {MAX_HANGUPS} HANGUP lines")

    async def set_variable(self, name: str, value: str) -> Reply:
        return await self.command(f"SET VARIABLE {name}", value)

    async def verbose(self, message: str) -> Reply:
        return await self.command("VERBOSE", message, " 1")


def _show(line: str) -> str:
    """At most 80 characters of a line from outside, escaped for a log."""
    return escape(line[:80] + ("…" if len(line) > 80 else ""))
