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
    port_of,
    session,
)
from conftest import Daemon
from hypothesis import given, settings
from hypothesis import strategies as st
from pnbridge.agi.protocol import MAX_COMMAND, command_line
from pnbridge.agi.service import MAX_REASON
from pnmediator_stub import Answer, slow
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
