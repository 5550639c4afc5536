"""Asterisk's side of FastAGI for the tests: the environment block and the answers to each
command as Asterisk 20's res_agi writes them, and the daemon config with an AGI listener."""

from __future__ import annotations

import re
from typing import Any

import trio
from configs import free_port
from conftest import Daemon
from pnmediator_stub import Stub

CALL = "NotifyIncomingCall"
MISSED = "NotifyIncomingCallMissed"
ELSEWHERE = "NotifyIncomingCallAnsweredElsewhere"
UNIQUEID = "1733467000.42"
CALLER = 'Carol "C" O\'Neil, Jr. \\ 100%'
CONTACT = "PJSIP/1001/sip:1001@192.0.2.7:50600;transport=udp;ob"
NO_CONTACT = "200 result=1 ()"
# res_agi's run_agi() reads each command with fgets() into char buf[AGI_BUF_LEN = 2048]: at
# most 2047 bytes, the newline included; the rest of a longer line is the next command.
AGI_BUF_LEN = 2048


def asterisk_args(line: str) -> list[str]:
    """A command line split into arguments as Asterisk's res_agi parse_args does."""
    args: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None:
                current = []
                args.append("")
            continue
        if char in " \t" and not quoted and not escaped:
            if current is not None:
                args[-1] = "".join(current)
            current = None
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        escaped = False
        if current is None:
            current = []
            args.append("")
        current.append(char)
    if current is not None:
        args[-1] = "".join(current)
    return args


def environment(port: int, script: str, *args: str, **more: str) -> bytes:
    """The block Asterisk 20 sends first, as res_agi's launch_netscript and setup_env write
    it (agi_arg_N last)."""
    values = {
        "agi_network": "yes", "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:{port}/{script}",
        "agi_channel": "PJSIP/trunk-00000001", "agi_language": "en", "agi_type": "PJSIP",
        "agi_uniqueid": UNIQUEID, "agi_version": "20.5.0", "agi_callerid": "0612345678",
        "agi_calleridname": CALLER, "agi_callingpres": "0", "agi_callingani2": "0",
        "agi_callington": "0", "agi_callingtns": "0", "agi_dnid": "1001",
        "agi_rdnis": "unknown", "agi_context": "from-pbx", "agi_extension": "1001",
        "agi_priority": "2", "agi_enhanced": "0.0", "agi_accountcode": "",
        "agi_threadid": "140245115950656", **more,
    }
    if not script:  # res_agi sends agi_network_script only for a URL with a path
        del values["agi_network_script"]
    lines = [f"{k}: {v}" for k, v in values.items()]
    lines += [f"agi_arg_{n}: {arg}" for n, arg in enumerate(args, 1)]
    return ("\n".join(lines) + "\n\n").encode()


class Asterisk:
    """Asterisk's side of one FastAGI connection: what pnbridge sent, the variables set."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.buffer = b""
        self.commands: list[str] = []
        self.lines: list[bytes] = []  # each command as Asterisk read it, its newline included
        self.variables: dict[str, str] = {}
        self.verbose: list[str] = []

    @classmethod
    async def connect(cls, port: int) -> Asterisk:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def command(self) -> str | None:
        """pnbridge's next command as Asterisk reads it (AGI_BUF_LEN), or None when it closed
        the connection."""
        most = AGI_BUF_LEN - 1
        while b"\n" not in self.buffer[:most] and len(self.buffer) < most:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self.buffer += data
        end = self.buffer.find(b"\n", 0, most) + 1 or most
        line, self.buffer = self.buffer[:end], self.buffer[end:]
        self.lines.append(line)
        text = line.removesuffix(b"\n").decode("utf-8", "replace")
        self.commands.append(text)
        args = asterisk_args(text)
        if args[:2] == ["SET", "VARIABLE"]:
            self.variables[args[2]] = args[3]
        elif args[0] == "VERBOSE":
            self.verbose.append(args[1])
        return text

    async def play(self, contacts: list[str] | None = None) -> dict[str, str]:
        """Answer every command as Asterisk does until pnbridge closes: GET FULL VARIABLE
        with the next of ``contacts`` (the last one again when they run out), anything else
        ``200 result=1``. The variables set."""
        contacts = contacts or [NO_CONTACT]
        asked = 0
        while (command := await self.command()) is not None:
            if command.startswith("GET FULL VARIABLE"):
                await self.send(contacts[min(asked, len(contacts) - 1)].encode() + b"\n")
                asked += 1
            else:
                await self.send(b"200 result=1\n")
        await self.stream.aclose()
        return self.variables

    async def closed(self) -> bool:
        """Whether pnbridge closed the connection (after anything it still sent)."""
        return await self.command() is None and await self.command() is None


def agi_config(stub: Stub, **agi: Any) -> dict[str, Any]:
    return {
        "agi": {"listen": [f"127.0.0.1:{free_port()}"], "read_timeout": 1.0,
                "poll_interval": 0.05, **agi},
        "api": {"deadlines": {CALL: 2.0, MISSED: 2.0, ELSEWHERE: 2.0}},
        "plugins": {"enabled": ["pnmediator"], "pnmediator": {"url": stub.url, "timeout": 0.5}},
    }


async def metric(daemon: Daemon, name: str) -> float:
    """The value of one metric line (``name`` with its labels), 0 when it is not there."""
    text = (await daemon.client.get("/metrics")).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def port_of(daemon: Daemon) -> int:
    return int(daemon.config.agi.listen[0].rpartition(":")[2])


async def session(daemon: Daemon, script: str, *args: str, contacts: list[str] | None = None,
                  **env: str) -> Asterisk:
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(environment(port_of(daemon), script, *args, **env))
    await asterisk.play(contacts)
    return asterisk
