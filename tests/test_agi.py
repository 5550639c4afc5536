"""The FastAGI service against the real daemon and the pnmediator stand-in: a client plays
Asterisk's side of real AGI sessions over TCP (the environment block, the answers to each
command, HANGUP, a closed connection, a dead channel), and garbage."""

from __future__ import annotations

import random
import re
import socket

import pytest
import trio
import trio.testing
from agitools import (
    CALL,
    CALLER,
    CONTACT,
    ELSEWHERE,
    MISSED,
    NO_CONTACT,
    UNIQUEID,
    Asterisk,
    agi_config,
    asterisk_args,
    environment,
    metric,
    port_of,
    session,
)
from conftest import Daemon, pnbridge
from hypothesis import given, settings
from hypothesis import strategies as st
from pnbridge.agi.protocol import AgiChannel, Hangup, parse_reply, quote
from pnbridge.agi.scripts import SCRIPTS
from pnbridge.config.running import changed, restart_values
from pnbridge.config.tables import Config, parse_config
from pnbridge.errors import AgiError, ConfigError
from pnmediator_stub import HTTP_400, HTTP_500, Stub, slow
from reports import report


@pytest.fixture
async def daemon(start_daemon, stub) -> Daemon:
    return await start_daemon(agi_config(stub))


async def two_devices(daemon: Daemon) -> None:
    await report(daemon, "IPHONE",
                 path="/token", username="1001", token=None, calls="voip-tok", msgs="apns-tok")
    await report(daemon, "ANDROID", path="/token", username="1001", token=None, msgs="fcm-tok")


def sent(stub: Stub) -> list[tuple[str, str, str]]:
    return sorted((r["verb"], r["DeviceToken"], r["Id"]) for r in stub.requests)


async def until(predicate, seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def test_wake_pushes_every_device_waits_for_a_contact_and_sets_the_variables(
        daemon, stub):
    await two_devices(daemon)
    asterisk = await session(daemon, "wake",
                             contacts=[NO_CONTACT, NO_CONTACT, f"200 result=1 ({CONTACT})"])
    assert asterisk.variables == {"PNBRIDGE_PUSH_ID": UNIQUEID, "PNBRIDGE_DEVICES": "2",
                                  "PNBRIDGE_CONTACTS": CONTACT, "PNBRIDGE_STATUS": "sent"}
    polls = [c for c in asterisk.commands if c.startswith("GET FULL VARIABLE")]
    assert polls == ['GET FULL VARIABLE "${PJSIP_DIAL_CONTACTS(1001)}"'] * 3
    assert sent(stub) == [(CALL, "fcm-tok", UNIQUEID), (CALL, "voip-tok", UNIQUEID)]
    assert {r["UserDisplayName"] for r in stub.requests} == {CALLER}
    assert {r["AppId"] for r in stub.requests} == {"com.app", "com.app.voip"}  # calls pair on iOS
    assert await metric(daemon, 'pnbridge_agi_sessions_total{outcome="sent",script="wake"}') == 1
    assert await metric(daemon, 'pnbridge_pushes_total{outcome="sent",verb="NotifyIncomingCall"}'
                        ) == 2


async def test_wake_takes_the_user_and_timeout_as_arguments_and_the_endpoint_in_the_url(
        daemon, stub):
    await report(daemon, "A", path="/token", username="alice", token=None, msgs="alice-tok")
    started = trio.current_time()
    asterisk = await session(daemon, "wake?endpoint=alice-ep", "alice", "0.3")
    assert 0.3 <= trio.current_time() - started < 1.5
    assert asterisk.variables["PNBRIDGE_STATUS"] == "sent"
    assert asterisk.variables["PNBRIDGE_CONTACTS"] == ""
    assert {c for c in asterisk.commands if c.startswith("GET")} == {
        'GET FULL VARIABLE "${PJSIP_DIAL_CONTACTS(alice-ep)}"'}
    assert sent(stub) == [(CALL, "alice-tok", UNIQUEID)]


async def test_asterisks_unknown_caller_name_is_no_display_name(daemon, stub):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    asterisk = await session(daemon, "wake", contacts=[f"200 result=1 ({CONTACT})"],
                             agi_calleridname="unknown")
    assert asterisk.variables["PNBRIDGE_STATUS"] == "sent"
    assert "UserDisplayName" not in stub.requests[0]


async def test_wake_for_an_unknown_user_says_so_without_waiting(daemon, stub):
    started = trio.current_time()
    asterisk = await session(daemon, "wake?timeout=20", "nobody")
    assert trio.current_time() - started < 2
    assert asterisk.variables["PNBRIDGE_STATUS"] == "unknown-user"
    assert asterisk.variables["PNBRIDGE_DEVICES"] == "0"
    assert stub.requests == []


async def test_wake_that_no_device_took_is_failed_with_the_reason(daemon, stub):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="bad-tok")
    stub.answer("bad-tok", HTTP_400)
    asterisk = await session(daemon, "wake")
    assert asterisk.variables["PNBRIDGE_STATUS"] == "failed"
    assert "400" in asterisk.variables["PNBRIDGE_REASON"]
    assert asterisk.variables["PNBRIDGE_CONTACTS"] == ""


async def test_contacts_too_long_for_one_command_are_cut_to_whole_contacts(daemon, stub):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    many = "&".join(f"{CONTACT};n={n:03d}" for n in range(60))  # 3,700 characters
    asterisk = await session(daemon, "wake", contacts=[f"200 result=1 ({many})"])
    kept = asterisk.variables["PNBRIDGE_CONTACTS"].split("&")
    assert 20 < len(kept) < 60 and many.startswith("&".join(kept) + "&")


async def test_a_contact_already_there_is_dialled_at_once(daemon, stub):
    await two_devices(daemon)
    asterisk = await session(daemon, "wake", contacts=[f"200 result=1 ({CONTACT}&{CONTACT})"])
    assert asterisk.variables["PNBRIDGE_CONTACTS"] == f"{CONTACT}&{CONTACT}"
    assert len([c for c in asterisk.commands if c.startswith("GET")]) == 1


@pytest.mark.parametrize("how", ["HANGUP line", "connection closed", "511 dead channel"])
async def test_the_push_runs_to_its_deadline_when_asterisk_hangs_up(daemon, stub, how):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    stub.answer("tok", HTTP_500, HTTP_500)  # two retries, after Asterisk is gone
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(environment(port_of(daemon), "wake"))
    assert (await asterisk.command()).startswith("SET VARIABLE PNBRIDGE_PUSH_ID")
    await asterisk.send(b"200 result=1\n")
    assert (await asterisk.command()).startswith("GET FULL VARIABLE")
    if how == "HANGUP line":
        await asterisk.send(b"HANGUP\n" + NO_CONTACT.encode() + b"\n")
        assert await asterisk.closed()
    elif how == "connection closed":
        await asterisk.stream.aclose()
    else:
        await asterisk.send(b"511 Command Not Permitted on a dead channel or intercept routine\n")
        assert await asterisk.closed()
    await until(lambda: len(stub.to("tok")) == 3)
    assert [r["verb"] for r in stub.to("tok")] == [CALL] * 3
    assert await metric(daemon, 'pnbridge_agi_sessions_total{outcome="hangup",script="wake"}') == 1
    with trio.fail_after(5):
        while await metric(daemon, 'pnbridge_pushes_total{outcome="sent",verb="NotifyIncomingCall"}'
                           ) != 1:
            await trio.sleep(0.02)


@pytest.mark.parametrize("verb,script", [(MISSED, "missed"), (ELSEWHERE, "answered-elsewhere")])
async def test_follow_ups_reach_every_device_with_the_calls_pair_and_the_same_id(
        daemon, stub, verb, script):
    await two_devices(daemon)
    wake = await session(daemon, "wake", contacts=[f"200 result=1 ({CONTACT})"])
    stub.requests.clear()
    push_id = wake.variables["PNBRIDGE_PUSH_ID"]
    asterisk = await session(daemon, f"{script}?wait=yes", push_id, "1001", agi_extension="h")
    assert asterisk.variables == {"PNBRIDGE_PUSH_ID": UNIQUEID, "PNBRIDGE_DEVICES": "2",
                                  "PNBRIDGE_STATUS": "sent"}
    assert sent(stub) == [(verb, "fcm-tok", UNIQUEID), (verb, "voip-tok", UNIQUEID)]
    assert {r["AppId"] for r in stub.requests} == {"com.app", "com.app.voip"}


async def test_a_follow_up_without_wait_returns_at_once_and_the_push_still_goes(daemon, stub):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    stub.answer("tok", HTTP_500)
    asterisk = await session(daemon, "answered-elsewhere", "call-7", "1001")
    assert asterisk.variables == {"PNBRIDGE_PUSH_ID": "call-7", "PNBRIDGE_STATUS": "queued"}
    await until(lambda: len(stub.to("tok")) == 2)
    assert sent(stub) == [(ELSEWHERE, "tok", "call-7")] * 2


@pytest.mark.parametrize(
    ("script", "args", "problem"),
    [("wakeup", (), "unknown script 'wakeup' (known: wake, missed, answered-elsewhere)"),
     ("", (), "unknown script ''"),
     ("wake?timeout=soon", (), "timeout 'soon' is not a number of seconds"),
     ("wake", ("1001", "-1"), "timeout '-1' is not a number of seconds"),
     ("wake?user=1001", ("1001",), "user given twice"),
     ("wake?colour=red", (), "wake: unknown parameter 'colour' (known: user, timeout"),
     ("wake?timeout=1&timeout=2", (), "parameter 'timeout' given twice"),
     ("wake", ("1001", "5", "x"), "wake takes at most 2 arguments (user, timeout), got 3"),
     ("wake", ("${SHELL(rm -rf /)}",), "is not a PJSIP endpoint name"),
     ("wake?endpoint=a)}${SHELL(id)", (), "is not a PJSIP endpoint name"),
     ("missed", (), "missed needs the call's id"),
     ("missed?wait=maybe", ("id-1",), "wait 'maybe': expected yes or no"),
     ("answered-elsewhere", ("x" * 300,), "id 'xxxx"),
     ("wake", ("a\x01b",), "user 'a\\x01b'")],
)
async def test_a_bad_script_or_argument_is_an_error_the_dialplan_sees(
        daemon, stub, script, args, problem, caplog):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    asterisk = await session(daemon, script, *args)
    assert asterisk.variables["PNBRIDGE_STATUS"] == "error"
    assert problem in asterisk.variables["PNBRIDGE_REASON"]
    assert asterisk.verbose == [f"pnbridge: {asterisk.variables['PNBRIDGE_REASON']}"]
    assert stub.requests == []
    lines = [r.getMessage() for r in caplog.records if r.name == "pnbridge.agi"]
    assert lines and not any(c < " " for line in lines for c in line), lines
    label = name if (name := script.partition("?")[0]) in SCRIPTS else "-"
    assert await metric(
        daemon, f'pnbridge_agi_sessions_total{{outcome="error",script="{label}"}}') == 1


GARBAGE = {
    "binary": b"\x00\xff\xfe\x1b[31m\x7fELF\n\n",
    "not agi": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge line": b"agi_network: " + b"y" * 100_000,
    "a reply where the environment goes": b"agi_network: yes\n200 result=1\n\n",
}


@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
async def test_garbage_closes_that_connection_only(daemon, stub, data, caplog):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(data)
    with trio.fail_after(3):
        assert await asterisk.closed()
    assert asterisk.commands == []
    assert await metric(daemon, 'pnbridge_agi_sessions_total{outcome="garbage",script="-"}') == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "pnbridge.agi"]
    assert lines and all("\x1b" not in line and "\x00" not in line for line in lines)
    assert stub.requests == []
    good = await session(daemon, "wake", contacts=[f"200 result=1 ({CONTACT})"])
    assert good.variables["PNBRIDGE_STATUS"] == "sent"


# Pieces of what Asterisk says, and of what it never says, for random sessions.
PIECES = [b"agi_network: yes\n", b"agi_network_script: wake\n", b"agi_network_script: missed\n",
          b"agi_request: agi://127.0.0.1/answered-elsewhere\n", b"agi_extension: 1001\n",
          b"agi_arg_1: 1001\n", b"agi_arg_2: 0.2\n", b"agi_uniqueid: 1.1\n", b"\n", b"HANGUP\n",
          b"200 result=1\n", b"200 result=1 ()\n", f"200 result=1 ({CONTACT})\n".encode(),
          b"511 Command Not Permitted on a dead channel\n", b"520-usage\n", b"520 End\n",
          b"\x00\xff\xfe", b"\r\n", b"agi_", b"x" * 9000, b"\x1b[31m", b"result=(", b"  \n"]


async def test_random_sessions_end_cleanly_and_never_reach_the_bug_handler(daemon, stub, caplog):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    rng = random.Random(15)

    async def one() -> None:
        asterisk = await Asterisk.connect(port_of(daemon))
        data = b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 16)))
        try:
            await asterisk.send(data)
            await asterisk.stream.send_eof()  # then nothing more: the session must end
        except trio.BrokenResourceError:
            pass  # pnbridge closed first (garbage, or max_sessions under way)
        with trio.fail_after(3):
            while await asterisk.command() is not None:
                pass

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    text = (await daemon.client.get("/metrics")).text
    counted = sum(float(v) for v in re.findall(r"^pnbridge_agi_sessions_total\{.*\} (\S+)$",
                                                  text, re.M))
    assert counted + await metric(daemon, "pnbridge_agi_refused_total") == 200
    good = await session(daemon, "wake", contacts=[f"200 result=1 ({CONTACT})"])
    assert good.variables["PNBRIDGE_STATUS"] == "sent"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.binary(max_size=40), max_size=20))
def test_the_protocol_reader_raises_only_its_own_errors(pieces):
    async def read() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        channel = AgiChannel(ours, read_timeout=1.0)
        await theirs.send_all(b"".join(pieces))
        await theirs.send_eof()
        try:  # the stream ends, so only an exception ends this; any other fails the test
            await channel.read_environment()
            while True:
                await channel.command("NOOP")
        except (AgiError, Hangup):
            pass

    trio.run(read, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_an_unexpected_line_while_waiting_is_garbage(daemon, stub):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(environment(port_of(daemon), "wake"))
    while not (await asterisk.command()).startswith("GET"):
        await asterisk.send(b"200 result=1\n")
    await asterisk.send(NO_CONTACT.encode() + b"\n" + b"200 result=1 (surprise)\n")
    assert await asterisk.closed()
    assert await metric(daemon, 'pnbridge_agi_sessions_total{outcome="garbage",script="wake"}') == 1
    await until(lambda: len(stub.requests) == 1)


@pytest.mark.parametrize("sent_first", [b"", b"agi_network: yes\nagi_network_script: wake\n",
                                        b"agi_network: y"],
                         ids=["nothing", "no blank line", "half a line"])
async def test_a_slow_or_silent_client_is_closed_after_the_read_timeout(daemon, stub,
                                                                         sent_first):
    started = trio.current_time()
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(sent_first)
    with trio.fail_after(3):
        assert await asterisk.closed()
    assert 1.0 <= trio.current_time() - started < 2.0  # read_timeout = 1
    assert await metric(daemon, 'pnbridge_agi_sessions_total{outcome="garbage",script="-"}') == 1


async def test_a_session_is_cut_at_the_session_timeout(start_daemon, stub):
    daemon = await start_daemon(agi_config(stub, session_timeout=1.5, max_wait=1.0,
                                           default_wait=1.0))
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(environment(port_of(daemon), "wake"))
    started = trio.current_time()
    while (command := await asterisk.command()) is not None:  # answers just in time, slowly
        await trio.sleep(0.9)
        await asterisk.send(b"200 result=1\n" if command.startswith("SET") else
                            NO_CONTACT.encode() + b"\n")
    assert 1.5 <= trio.current_time() - started < 2.5
    assert await metric(daemon, 'pnbridge_agi_sessions_total{outcome="timeout",script="wake"}'
                        ) == 1


async def test_sessions_beyond_max_sessions_are_closed_at_once(start_daemon, stub):
    daemon = await start_daemon(agi_config(stub, max_sessions=2, read_timeout=10.0))
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    holding = [await Asterisk.connect(port_of(daemon)) for _ in range(2)]
    for asterisk in holding:
        await asterisk.send(b"agi_network: yes\n")
    await trio.sleep(0.2)
    refused = await Asterisk.connect(port_of(daemon))
    with trio.fail_after(2):
        assert await refused.closed()
    assert await metric(daemon, "pnbridge_agi_refused_total") == 1
    await holding[0].stream.aclose()
    await trio.sleep(0.2)
    served = await session(daemon, "wake", contacts=[f"200 result=1 ({CONTACT})"])
    assert served.variables["PNBRIDGE_STATUS"] == "sent"
    await holding[1].stream.aclose()


async def test_the_pushes_under_way_finish_when_the_daemon_stops(daemon, stub):
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    stub.answer("tok", HTTP_500, HTTP_500, HTTP_500)  # retried for about 0.35 s
    asterisk = await Asterisk.connect(port_of(daemon))
    await asterisk.send(environment(port_of(daemon), "missed", "call-9"))
    await asterisk.play()
    daemon.shutdown.set()
    await trio.sleep(0.05)
    with pytest.raises(OSError):  # no new session while the push finishes
        await trio.open_tcp_stream("127.0.0.1", port_of(daemon))
    await until(lambda: len(stub.to("tok")) == 4)


async def test_agi_pushes_share_the_push_apis_max_in_flight(start_daemon, stub):
    daemon = await start_daemon(agi_config(stub) | {"api": {"max_in_flight": 1}})
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    await report(daemon, "B", path="/token", username="2002", token=None, msgs="tok-b")
    stub.answer("tok", slow(1.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session, daemon, "missed?wait=yes", "call-1", "1001")
        await until(lambda: len(stub.requests) == 1)
        second = await session(daemon, "missed?wait=yes", "call-2", "2002")
    assert second.variables["PNBRIDGE_STATUS"] == "failed"
    assert "[api] max_in_flight" in second.variables["PNBRIDGE_REASON"]
    assert stub.to("tok-b") == []


async def test_no_push_transport_is_failed_with_the_reason(start_daemon, stub):
    config = agi_config(stub)
    config["plugins"] = {"enabled": []}
    daemon = await start_daemon(config)
    await report(daemon, "A", path="/token", username="1001", token=None, msgs="tok")
    asterisk = await session(daemon, "wake")
    assert asterisk.variables["PNBRIDGE_STATUS"] == "failed"
    assert "no push transport" in asterisk.variables["PNBRIDGE_REASON"]


@pytest.mark.parametrize(
    ("agi", "problem"),
    [({"listen": ["0.0.0.0:4573"]}, "agi.listen: 0.0.0.0:4573 is not a loopback address"),
     ({"listen": ["pbx.example.com:4573"]}, "set agi.allow_remote = true"),
     ({"listen": ["unix:/run/agi.sock"]}, "agi.listen: 'unix:/run/agi.sock': Asterisk connects"),
     ({"listen": ["4573"]}, "agi.listen: '4573' is not host:port"),
     ({"max_wait": 100.0}, "agi.session_timeout: 90 s must be longer than agi.max_wait"),
     ({"default_wait": 80.0}, "agi.default_wait: 80 s is longer than agi.max_wait"),
     ({"read_timeout": 0}, "agi.read_timeout: must be greater than 0"),
     ({"max_sessions": 0}, "agi.max_sessions: must be between 1 and 10000")],
)
def test_config_errors_name_the_key(agi, problem):
    with pytest.raises(ConfigError) as info:
        parse_config({"agi": agi})
    assert any(problem in e for e in info.value.errors), info.value.errors


@pytest.mark.parametrize("listen", [["127.0.0.1:4573"], ["[::1]:4573"], ["localhost:4573"],
                                    ["127.0.0.2:0"]])
def test_loopback_addresses_need_no_opt_in(listen):
    assert parse_config({"agi": {"listen": listen}}).agi.listen == listen


def test_agi_keys_are_named_by_a_reload_as_waiting_for_a_restart():
    new = parse_config({"agi": {"listen": ["127.0.0.1:4573"], "read_timeout": 2.0}})
    assert changed(restart_values(Config(), {}), restart_values(new, {})) == [
        "agi.listen", "agi.read_timeout"]


def test_a_remote_address_with_the_opt_in_is_accepted():
    config = parse_config({"agi": {"listen": ["192.0.2.1:4573"], "allow_remote": True}})
    assert config.agi.listen == ["192.0.2.1:4573"]


def test_a_taken_port_stops_serve_with_one_line_naming_the_key(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "pnbridge.toml"
        path.write_text(f"""
[server]
log_level = "error"
listen = ["127.0.0.1:0"]
[storage]
path = "{tmp_path / 'p.db'}"
[agi]
listen = ["127.0.0.1:{port}"]
""")
        result = pnbridge("serve", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr == (f"pnbridge: cannot listen on [agi] listen 127.0.0.1:{port}:"
                             " Address already in use\n")


# The protocol alone, in memory, on trio's autojump clock.

async def test_read_timeout_on_the_autojump_clock(autojump_clock):
    ours, theirs = trio.testing.memory_stream_pair()
    channel = AgiChannel(ours, read_timeout=7.0)
    await theirs.send_all(b"agi_network: yes\nagi_netw")
    started = trio.current_time()
    with pytest.raises(AgiError, match="within 7 s"):
        await channel.read_environment()
    assert trio.current_time() - started == pytest.approx(7.0)


async def test_hangup_within_waits_its_time_and_sees_hangup(autojump_clock):
    ours, theirs = trio.testing.memory_stream_pair()
    channel = AgiChannel(ours, read_timeout=7.0)
    started = trio.current_time()
    await channel.hangup_within(0.25)
    assert trio.current_time() - started == pytest.approx(0.25)
    await theirs.send_all(b"HANG")  # a partial line stays buffered across the timeout
    await channel.hangup_within(0.25)
    await theirs.send_all(b"UP\n")
    with pytest.raises(Hangup):
        await channel.hangup_within(0.25)
    assert channel.hungup


async def test_usage_answers_and_hangup_notices_are_read_whole(autojump_clock):
    ours, theirs = trio.testing.memory_stream_pair()
    channel = AgiChannel(ours, read_timeout=7.0)
    await theirs.send_all(b"520-Invalid command syntax.  Proper usage follows:\n"
                          b" Usage: GET FULL VARIABLE <variablename> [<channel name>]\n"
                          b"520 End of proper usage.\nHANGUP\n200 result=1 (x)\n")
    assert (await channel.command("GET FULL VARIABLE")).code == 520
    reply = await channel.command("NOOP")
    assert (reply.code, reply.result, reply.data) == (200, "1", "x")
    assert channel.hungup


@pytest.mark.parametrize(
    ("line", "code", "result", "data"),
    [("200 result=1", 200, "1", None), ("200 result=0", 200, "0", None),
     ("200 result=-1", 200, "-1", None), ("200 result=1 ()", 200, "1", ""),
     (f"200 result=1 ({CONTACT})", 200, "1", CONTACT),
     ("200 result=49 endpos=12345", 200, "49", None),
     ("510 Invalid or unknown command", 510, "", None)],
)
def test_replies_parse(line, code, result, data):
    reply = parse_reply(line)
    assert (reply.code, reply.result, reply.data) == (code, result, data)


@pytest.mark.parametrize("value", [CALLER, "", "a b  c", '\\"', "trailing\\", "x" * 50])
def test_quoted_values_reach_asterisk_as_they_are(value):
    line = f"SET VARIABLE X {quote(value).decode()}"
    assert asterisk_args(line) == ["SET", "VARIABLE", "X", value]


def test_a_quoted_value_is_one_line():
    assert quote("a\nb\r\tc\x00") == b'"abc"'
