"""The FastAGI service at the limits of what Asterisk reads and of what a client may send:
command lines that fit Asterisk's read buffer whatever the values hold, environment floods,
a wait timeout that never cuts a command from its answer, follow-ups that are refused."""

from __future__ import annotations

import re

import pytest
import trio
from agitools import (
    AGI_BUF_LEN,
    CALL,
    CONTACT,
    Asterisk,
    agi_config,
    asterisk_args,
    environment,
    metric,
    port_of,
    session,
)
from conftest import Daemon
from hypothesis import given, settings
from hypothesis import strategies as st
from pnbridge.agi.protocol import (
    MAX_COMMAND,
    MAX_ENV_BYTES,
    MAX_LINE,
    MAX_SESSION_BYTES,
    AgiChannel,
    command_line,
)
from pnbridge.agi.service import MAX_REASON
from pnbridge.errors import AgiError
from pnmediator_stub import KEY, Answer, push_config, slow
from reports import report

# One command line as Asterisk's run_agi() reads it.
assert MAX_COMMAND <= AGI_BUF_LEN - 1

HEADS = [("SET VARIABLE PNBRIDGE_REASON", ""), ("VERBOSE", " 1"), ("GET FULL VARIABLE", "")]
HOSTILE = st.text(st.sampled_from('é€😀"\\\n\r\t\x00 a'), max_size=2500)
REPEATED = st.builds(lambda char, n: char * n, st.sampled_from('é€😀"\\a\n'),
                     st.integers(0, 2100))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(HEADS), HOSTILE | REPEATED | st.text(max_size=3000))
def test_every_command_line_fits_asterisks_buffer_and_is_one_command(head_tail, value):
    head, tail = head_tail
    line = command_line(head, value, tail)
    assert len(line) <= MAX_COMMAND and line.endswith(b"\n") and line.count(b"\n") == 1
    args, words = asterisk_args(line[:-1].decode()), len(head.split())
    assert len(args) == words + 1 + len(tail.split())
    assert args[:words] == head.split() and args[words + 1:] == tail.split()
    sent = args[words]
    clean = re.sub(r"[\x00-\x1f\x7f]", "", value)
    assert clean.startswith(sent)
    if len(clean.encode()) + clean.count('"') + clean.count("\\") < 1900:
        assert sent == clean


def in_one_piece(asterisk: Asterisk) -> None:
    """Every line pnbridge sent fitted MAX_COMMAND and was read by Asterisk as one command."""
    assert asterisk.lines and all(len(line) <= MAX_COMMAND and line.endswith(b"\n")
                                  for line in asterisk.lines), [len(x) for x in asterisk.lines]
    assert {c.split()[0] for c in asterisk.commands} <= {"SET", "GET", "VERBOSE"}


@pytest.fixture
async def daemon(start_daemon, stub) -> Daemon:
    return await start_daemon(agi_config(stub))


async def test_a_long_reason_from_pnmediator_cannot_become_a_second_command(daemon, stub):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    evil = "é" * 998 + "EXEC System touch${IFS}/tmp/pwned"
    stub.answer("tok", Answer(400, {"code": 400, "response": evil}))
    asterisk = await session(daemon, "wake")
    in_one_piece(asterisk)
    reason = asterisk.variables["PNBRIDGE_REASON"]
    assert reason.startswith("pnmediator HTTP 400: éé") and len(reason) <= MAX_REASON
    assert asterisk.variables["PNBRIDGE_STATUS"] == "failed"
    assert "EXEC" not in reason


async def test_an_unreadable_query_is_reported_short_and_in_one_command(daemon, stub):
    asterisk = await session(daemon, "wake?" + "é" * 1100 + "&x=" + '"\\' * 300)
    in_one_piece(asterisk)
    assert asterisk.variables["PNBRIDGE_STATUS"] == "error"
    reason = asterisk.variables["PNBRIDGE_REASON"]
    assert "cannot be read" in reason and len(reason) <= MAX_REASON
    assert asterisk.verbose == [f"pnbridge: {reason}"]


async def test_long_contacts_with_quotes_and_non_ascii_are_cut_to_whole_contacts(daemon, stub):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    many = "&".join(f'{CONTACT};n="é\\{n:03d}"' for n in range(60))
    asterisk = await session(daemon, "wake", contacts=[f"200 result=1 ({many})"])
    in_one_piece(asterisk)
    kept = asterisk.variables["PNBRIDGE_CONTACTS"].split("&")
    assert 10 < len(kept) < 60 and many.startswith("&".join(kept) + "&")
    assert asterisk.variables["PNBRIDGE_STATUS"] == "sent"
    assert [r["verb"] for r in stub.requests] == [CALL]


async def test_the_wait_timeout_never_parts_a_question_from_its_answer(daemon, stub,
                                                                       virtual_clock):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(environment(port_of(daemon), "wake", "1001", "1"))
    started, asked = trio.current_time(), 0
    while (command := await asterisk.command()) is not None:  # each GET answered after 0.7 s
        if command.startswith("GET"):
            await trio.sleep(0.7)
            asked += 1
            await asterisk.send(f"200 result=1 ({CONTACT if asked == 2 else ''})\n".encode())
        else:
            await asterisk.send(b"200 result=1\n")
    # The second question, asked at 0.75 s, is answered at 1.45 s, after the timeout: its
    # answer is read as its own, with the contact in it.
    assert asked == 2 and trio.current_time() - started == pytest.approx(1.45, abs=0.05)
    assert asterisk.variables == {"PNBRIDGE_PUSH_ID": "1733467000.42", "PNBRIDGE_DEVICES": "1",
                                  "PNBRIDGE_CONTACTS": CONTACT, "PNBRIDGE_STATUS": "sent"}
    in_one_piece(asterisk)


async def test_the_wait_ends_between_questions_once_the_timeout_is_over(daemon, stub,
                                                                        virtual_clock):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(environment(port_of(daemon), "wake", "1001", "1"))
    started, asked = trio.current_time(), 0
    while (command := await asterisk.command()) is not None:
        if command.startswith("GET"):
            await trio.sleep(0.7)
            asked += 1
            await asterisk.send(b"200 result=1 ()\n")
        else:
            await asterisk.send(b"200 result=1\n")
    assert asked == 2 and trio.current_time() - started == pytest.approx(1.45, abs=0.05)
    assert asterisk.variables["PNBRIDGE_CONTACTS"] == ""
    assert asterisk.variables["PNBRIDGE_STATUS"] == "sent"


@pytest.mark.parametrize("script", ["missed", "answered-elsewhere"])
async def test_a_refused_follow_up_says_so_without_wait(start_daemon, stub, script, caplog):
    daemon = await start_daemon(agi_config(stub) | {"api": {"max_in_flight": 1}})
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    await report(daemon, "B", path="/token", username="2002", token=None, msgs="tok-b")
    stub.answer("tok", slow(1.0))
    first = await session(daemon, "missed", "call-1", "1001")
    assert first.variables["PNBRIDGE_STATUS"] == "queued"
    second = await session(daemon, script, "call-2", "2002")
    assert second.variables["PNBRIDGE_STATUS"] == "failed"
    assert second.variables["PNBRIDGE_REASON"].startswith("not sent: ")
    assert "[api] max_in_flight" in second.variables["PNBRIDGE_REASON"]
    refusals = [r for r in caplog.records if r.name == "pnbridge.agi" and "call-2" in
                r.getMessage()]
    assert [r.levelname for r in refusals] == ["WARNING"]
    await trio.sleep(0.3)
    assert stub.to("tok-b") == []


async def test_a_follow_up_without_a_transport_says_so_without_wait(start_daemon, stub, caplog):
    config = agi_config(stub)
    config["plugins"] = {"enabled": []}
    daemon = await start_daemon(config)
    asterisk = await session(daemon, "answered-elsewhere", "call-3", "1001")
    assert asterisk.variables["PNBRIDGE_STATUS"] == "failed"
    assert "no push transport" in asterisk.variables["PNBRIDGE_REASON"]
    assert any(r.levelname == "WARNING" and "no push transport" in r.getMessage()
               for r in caplog.records if r.name == "pnbridge.agi")


class Flood(trio.abc.Stream):
    """A client that sends ``line`` over and over, ``total`` bytes, then a good ending (so
    that a reader without limits takes it all, and then the environment is good)."""

    def __init__(self, line: bytes, total: int):
        self.data = memoryview(line * (total // len(line)) + b"agi_network_script: wake\n\n")
        self.taken = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        piece = bytes(self.data[self.taken:self.taken + (max_bytes or 65536)])
        self.taken += len(piece)
        return piece

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize(("line", "problem"), [
    (b"agi_x: 1\n", "longer than 512 lines"),
    (b"agi_x: " + b"y" * 8000 + b"\n", f"{MAX_ENV_BYTES} bytes"),
], ids=["a line repeated", "long lines"])
async def test_an_environment_flood_is_cut_early(autojump_clock, line, problem):
    flood = Flood(line, 4 << 20)
    with pytest.raises(AgiError, match=problem):
        await AgiChannel(flood, read_timeout=5.0).read_environment()
    assert flood.taken <= MAX_ENV_BYTES + MAX_LINE


async def test_a_session_that_sends_too_much_is_cut(autojump_clock):
    ours, theirs = trio.testing.memory_stream_pair()
    channel = AgiChannel(ours, read_timeout=5.0)
    answer = b"200 result=1 (" + b"x" * 8000 + b")\n"
    with pytest.raises(AgiError, match=f"more than {MAX_SESSION_BYTES} bytes"):
        for _ in range(MAX_SESSION_BYTES // len(answer) + 2):
            await theirs.send_all(answer)
            assert (await channel.command("NOOP")).result == "1"


async def test_a_hangup_flood_is_garbage(autojump_clock):
    ours, theirs = trio.testing.memory_stream_pair()
    channel = AgiChannel(ours, read_timeout=5.0)
    await theirs.send_all(b"HANGUP\n" * 10000 + b"200 result=1\n")
    with pytest.raises(AgiError, match="more than 4 HANGUP lines"):
        await channel.command("NOOP")


async def test_the_push_api_answers_while_clients_flood_the_agi_port(start_daemon, stub):
    daemon = await start_daemon(agi_config(stub) | push_config(stub))
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    connections = 0

    async def flood() -> None:
        nonlocal connections
        while True:  # a new connection whenever pnbridge closes one
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(daemon))
            connections += 1
            try:
                while True:
                    await stream.send_all(b"agi_x: 1\n" * 7000)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()

    latencies = []
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(flood)
        await trio.sleep(0.3)
        for n in range(5):
            started = trio.current_time()
            answer = await daemon.client.post(
                "/api/v1/push", headers={"Authorization": f"Bearer {KEY}"},
                json={"username": "1001", "verb": "NotifyTextMessage", "message": f"m{n}"})
            latencies.append(trio.current_time() - started)
            assert answer.status_code == 200
        nursery.cancel_scope.cancel()
    garbage = await metric(daemon, 'pnbridge_agi_sessions_total{outcome="garbage",script="-"}')
    assert connections > 4 and garbage >= 4  # floods are closed, not read for ever
    assert max(latencies) < 0.5, latencies
