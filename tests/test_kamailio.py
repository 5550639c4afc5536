"""Kamailio end to end: the shipped config/pbx/kamailio/kamailio.cfg, unchanged but for its
#!define settings, run by the real Kamailio on loopback ports, with pnbridge (``pnbridge
serve``, the pnmediator plugin pointed at the recording stand-in of tests/pnmediator_stub.py,
devices reported through the real reporter) and sipp as the caller and as the phones
(tests/sipp/*.xml). Skipped where Kamailio or sipp is not installed, unless ``CI`` is set.
``KAMAILIO_TEST_ARGS`` adds arguments to Kamailio's command line, e.g. ``-A HTTP_TIMEOUT=2``
(the slow push then fails, as with the old snippet's timeout)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Process
from pnmediator_stub import Answer, Stub, StubThread, slow
from reports import report

ROOT = Path(__file__).parent.parent
CFG = ROOT / "config" / "pbx" / "kamailio" / "kamailio.cfg"
SCENARIOS = Path(__file__).parent / "sipp"
KEY = "kamailio-test-key-5e1f0c2a9b"
CALL, MISSED, ELSEWHERE = ("NotifyIncomingCall", "NotifyIncomingCallMissed",
                           "NotifyIncomingCallAnsweredElsewhere")
RING_MS = 10_000  # RING_TIMEOUT: longer than the phone that registers 6 s after the push


def _program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


KAMAILIO, SIPP = _program("kamailio"), _program("sipp")


def _modules_missing() -> list[str]:
    """The Kamailio modules the config loads that are not installed."""
    if KAMAILIO is None:
        return []
    found = subprocess.run([KAMAILIO, "-c", "-f", str(CFG)], capture_output=True, text=True)
    return [] if found.returncode == 0 else [found.stderr.strip().splitlines()[-1]]


def _require() -> None:
    missing = [name for name, path in (("kamailio", KAMAILIO), ("sipp", SIPP)) if path is None]
    problem = (f"{' and '.join(missing)} not installed (Debian: apt-get install kamailio "
               "kamailio-utils-modules kamailio-extra-modules sip-tester)") if missing else None
    if problem is None and (broken := _modules_missing()):
        problem = f"kamailio -c rejects {CFG.name}: {broken[0]}"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {problem}")
        pytest.skip(problem)


def free_port() -> int:
    """A UDP port on loopback that nothing uses now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return result


@dataclass
class Pbx:
    """Kamailio, pnbridge and the stand-in, running for the module."""

    stub: Stub
    pnbridge_url: str
    sip_port: int
    workdir: Path
    kamailio_log: Path

    def report(self, username: str, selector: str, *, calls: str | None = None,
               msgs: str | None = None) -> None:
        """A device of ``username`` reports its tokens, as the app does."""
        with httpx.Client(base_url=self.pnbridge_url, timeout=10) as client:
            report(client, selector, path="/token", username=username, token=None, calls=calls,
                   msgs=msgs)

    def pushes(self, call_id: str, verb: str | None = None) -> list[dict[str, Any]]:
        """What pnmediator received for this call (``Id``), in order."""
        return [r for r in list(self.stub.requests)
                if r.get("Id") == call_id and verb in (None, r.get("verb"))]

    def sipp(self, scenario: str, *args: str, port: int, to: str | None = None,
             name: str = "") -> Sipp:
        """Start sipp with ``scenario`` (one call) on ``port``; ``to``: the target user."""
        logs = self.workdir / f"sipp-{scenario}-{name or port}"
        command = [SIPP or "sipp", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-m", "1",
                   "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-timeout", "40s",
                   "-timeout_error", "-trace_err", "-error_file", f"{logs}.errors",
                   "-trace_msg", "-message_file", f"{logs}.messages", *args]
        if to is not None:
            command += ["-s", to, f"127.0.0.1:{self.sip_port}"]
        with open(f"{logs}.out", "w") as out:
            popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        return Sipp(popen, logs, self)

    def phone(self, scenario: str, user: str, selector: str) -> Sipp:
        """A phone of ``user`` that wakes up: its ``scenario`` (phone_answer or phone_ignore)
        listens, then it registers its contact there with its selector (none: empty)."""
        port = free_port()
        phone = self.sipp(scenario, port=port, name=selector or user)
        register = self.sipp("phone_register", "-key", "contact_port", str(port),
                             "-key", "selector", selector, port=free_port(), to=user,
                             name=f"{selector or user}-register")
        register.wait(10)
        return phone


@dataclass
class Sipp:
    popen: subprocess.Popen[bytes]
    logs: Path
    pbx: Pbx

    def wait(self, timeout: float) -> None:
        """Wait for sipp to finish its call; fail with its messages unless it succeeded."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            code = None
        if code != 0:
            raise AssertionError(f"sipp {self.logs.name} ended with {code}:\n{self.transcript()}"
                                 f"\nkamailio log (end):\n{self.pbx_log()}")

    def transcript(self) -> str:
        parts = []
        for suffix in (".out", ".errors", ".messages"):
            path = Path(f"{self.logs}{suffix}")
            if path.exists():
                parts.append(path.read_text(errors="replace")[-6000:])
        return "\n".join(parts)

    def pbx_log(self) -> str:
        return self.pbx.kamailio_log.read_text(errors="replace")[-6000:]

    def received(self, start: str) -> int:
        """How many messages sipp received whose first line starts with ``start``."""
        messages = Path(f"{self.logs}.messages")
        if not messages.exists():
            return 0
        blocks = messages.read_text(errors="replace").split("message received")[1:]
        firsts = [next((line for line in block.splitlines()[1:] if line.strip()), "")
                  for block in blocks]
        return sum(first.startswith(start) for first in firsts)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def _options_answered(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()
        branch = f"z9hG4bK-probe-{time.monotonic_ns()}"
        options = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{local[1]};branch={branch}\r\n"
                   f"From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                   f"Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n")
        sock.sendto(options.encode(), ("127.0.0.1", port))
        try:
            return sock.recv(65536).startswith(b"SIP/2.0 200")
        except OSError:
            return False


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    _require()
    workdir = tmp_path_factory.mktemp("kamailio")
    stand_in = StubThread()
    stub = stand_in.start()
    config = workdir / "pnbridge.toml"
    config.write_text(f"""
[server]
listen = ["127.0.0.1:0"]
[storage]
path = "{workdir / 'pnbridge.db'}"
[reporter]
client_rate = 0
username_rate = 0
[api]
keys = ["{KEY}"]
[plugins]
enabled = ["pnmediator"]
[plugins.pnmediator]
url = "{stub.url}"
timeout = 1.0
""")
    pnbridge = Process(subprocess.Popen(
        [sys.executable, "-m", "pnbridge", "serve", "--config", str(config)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=workdir))
    kamailio = None
    try:
        url = pnbridge.url()
        sip_port = free_port()
        rundir = workdir / "run"
        rundir.mkdir()
        log = workdir / "kamailio.log"
        with open(log, "w") as out:
            kamailio = subprocess.Popen(
                [KAMAILIO or "kamailio", "-f", str(CFG), "-DD", "-E", *os.environ.get("KAMAILIO_TEST_ARGS", "").split(), "-Y", str(rundir),
                 "-w", str(rundir), "-m", "64", "-M", "8",
                 "-A", f"SIP_LISTEN=udp:127.0.0.1:{sip_port}",
                 "-A", f'PNBRIDGE_URL="{url}/api/v1/push"', "-A", f'PNBRIDGE_KEY="{KEY}"',
                 "-A", f"RING_TIMEOUT={RING_MS}", "-A", "SIP_WORKERS=4"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
        wait_until(lambda: kamailio.poll() is not None or _options_answered(sip_port), 15,
                   "Kamailio to answer OPTIONS")
        assert kamailio.poll() is None, f"Kamailio exited:\n{log.read_text()[-4000:]}"
        yield Pbx(stub, url, sip_port, workdir, log)
    finally:
        if kamailio is not None and kamailio.poll() is None:
            kamailio.terminate()
            try:
                kamailio.wait(15)
            except subprocess.TimeoutExpired:
                kamailio.kill()
                kamailio.wait()
        pnbridge.stop()
        stand_in.stop()


def test_the_docs_quote_the_shipped_file() -> None:
    """Each ```kamailio block of docs/pbx-integration.md is a piece of the shipped file."""
    docs = (ROOT / "docs" / "pbx-integration.md").read_text()
    blocks = re.findall(r"^```kamailio\n(.*?)^```$", docs, re.M | re.S)
    assert len(blocks) >= 10
    shipped = CFG.read_text()
    assert [block for block in blocks if block not in shipped] == []


def test_an_unknown_user_gets_480_at_once_and_no_push(pbx: Pbx) -> None:
    call_id = f"unknown-{time.monotonic_ns()}@test"
    started = time.monotonic()
    caller = pbx.sipp("call_unavailable", "-cid_str", call_id, port=free_port(), to="nobody")
    caller.wait(10)
    assert time.monotonic() - started < 3
    assert pbx.pushes(call_id) == []


def test_a_call_cancelled_while_the_phone_sleeps_is_missed_once(pbx: Pbx) -> None:
    pbx.report("sleeper", "SLEEPER", calls="sleeper-voip", msgs="sleeper-apns")
    call_id = f"cancel-{time.monotonic_ns()}@test"
    caller = pbx.sipp("call_cancel", "-cid_str", call_id, "-d", "1500", port=free_port(),
                      to="sleeper")
    caller.wait(15)
    wait_until(lambda: pbx.pushes(call_id, MISSED), 5, "NotifyIncomingCallMissed")
    assert [(r["verb"], r["DeviceToken"]) for r in pbx.pushes(call_id)] == [
        (CALL, "sleeper-voip"), (MISSED, "sleeper-voip")]
    assert pbx.pushes(call_id, CALL)[0]["UserDisplayName"] == "Carol"  # the caller's From
    # The cancelled call is no longer parked: the phone that wakes up now is not rung.
    phone = pbx.phone("phone_ignore", "sleeper", "SLEEPER")
    phone.stop()
    assert phone.received("INVITE ") == 0
    assert "sleeper registered: resuming" not in pbx.kamailio_log.read_text()


def pairs(pushes: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(verb, Selector, AppId, DeviceToken) of each push, sorted."""
    return sorted((r["verb"], r["Selector"], r["AppId"], r["DeviceToken"]) for r in pushes)


def settle(pbx: Pbx, call_id: str, seconds: float = 1.0) -> list[dict[str, Any]]:
    """The pushes of the call once none has come for ``seconds`` (a duplicate would)."""
    seen = -1
    while len(pushes := pbx.pushes(call_id)) != seen:
        seen = len(pushes)
        time.sleep(seconds)
    return pushes


def test_two_devices_and_a_call_id_with_quote_and_backslash(pbx: Pbx) -> None:
    """Each device gets each verb once, with the pair the verb needs (iOS: the PushKit calls
    pair; Android: its one msgs pair), and Id is the Call-ID exactly as it came."""
    pbx.report("pair", "IPHONE-PAIR", calls="pair-voip", msgs="pair-apns")
    pbx.report("pair", "ANDROID-PAIR", msgs="pair-fcm")
    call_id = f'odd"quote\\back-{time.monotonic_ns()}@test'
    caller = pbx.sipp("call_cancel", "-cid_str", call_id, "-d", "1000", port=free_port(),
                      to="pair")
    caller.wait(15)
    wait_until(lambda: len(pbx.pushes(call_id, MISSED)) >= 2, 5, "two NotifyIncomingCallMissed")
    assert pairs(settle(pbx, call_id)) == [
        (CALL, "ANDROID-PAIR", "com.app", "pair-fcm"),
        (CALL, "IPHONE-PAIR", "com.app.voip", "pair-voip"),
        (MISSED, "ANDROID-PAIR", "com.app", "pair-fcm"),
        (MISSED, "IPHONE-PAIR", "com.app.voip", "pair-voip"),
    ]


def test_a_phone_that_registers_6_s_after_the_push_gets_the_call(pbx: Pbx) -> None:
    """Later than tm's default 5 s fr_timer: the parked INVITE goes to the new contact; the
    200 (retransmitted while the caller holds back its ACK) sends AnsweredElsewhere once, to
    the other device only; no Missed."""
    pbx.report("late", "IPHONE-LATE", calls="late-voip", msgs="late-apns")
    pbx.report("late", "ANDROID-LATE", msgs="late-fcm")
    call_id = f"late-{time.monotonic_ns()}@test"
    caller = pbx.sipp("call_answer", "-cid_str", call_id, "-d", "1600", port=free_port(),
                      to="late")
    try:
        wait_until(lambda: len(pbx.pushes(call_id, CALL)) == 2, 10, "NotifyIncomingCall")
        pushed = time.monotonic()
        time.sleep(6.0)  # the phone takes 6 s to wake up
        phone = pbx.phone("phone_answer", "late", "IPHONE-LATE")
        assert time.monotonic() - pushed >= 6.0
        caller.wait(20)
        phone.wait(10)
    finally:
        caller.stop()
    wait_until(lambda: pbx.pushes(call_id, ELSEWHERE), 5, "NotifyIncomingCallAnsweredElsewhere")
    assert pairs(settle(pbx, call_id)) == [
        (CALL, "ANDROID-LATE", "com.app", "late-fcm"),
        (CALL, "IPHONE-LATE", "com.app.voip", "late-voip"),
        (ELSEWHERE, "ANDROID-LATE", "com.app", "late-fcm"),
    ]
    assert phone.received("ACK ") == 1 and phone.received("BYE ") == 1
    assert caller.received("SIP/2.0 200") >= 3  # the INVITE's, retransmitted; the BYE's


def test_nobody_answers_the_call_is_missed_once(pbx: Pbx) -> None:
    """Two calls at once, after RING_TIMEOUT each: one to a user whose phone rings and is not
    answered (tm cancels it), one to a user whose phone never wakes up (the parked
    transaction times out). The caller gets 408; each device one Missed."""
    pbx.report("ringing", "ANDROID-RINGING", msgs="ringing-fcm")
    pbx.report("asleep", "IPHONE-ASLEEP", calls="asleep-voip", msgs="asleep-apns")
    phone = pbx.phone("phone_ignore", "ringing", "ANDROID-RINGING")
    calls = {user: f"{user}-{time.monotonic_ns()}@test" for user in ("ringing", "asleep")}
    started = time.monotonic()
    callers = [pbx.sipp("call_timeout", "-cid_str", call_id, port=free_port(), to=user)
               for user, call_id in calls.items()]
    for caller in callers:
        caller.wait(RING_MS / 1000 + 10)
    assert time.monotonic() - started >= RING_MS / 1000
    phone.wait(5)
    for call_id in calls.values():
        wait_until(lambda call_id=call_id: pbx.pushes(call_id, MISSED), 5, "Missed")
    assert pairs(settle(pbx, calls["ringing"])) == [
        (CALL, "ANDROID-RINGING", "com.app", "ringing-fcm"),
        (MISSED, "ANDROID-RINGING", "com.app", "ringing-fcm")]
    assert pairs(settle(pbx, calls["asleep"])) == [
        (CALL, "IPHONE-ASLEEP", "com.app.voip", "asleep-voip"),
        (MISSED, "IPHONE-ASLEEP", "com.app.voip", "asleep-voip")]


class Udp:
    """A bare SIP caller on a UDP socket, to send the same request again as a retransmission."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answers: list[str] = []

    def request(self, method: str, user: str, call_id: str, branch: str = "") -> bytes:
        """``method`` with From-tag ``carol``; the Via branch is the Call-ID and ``branch``."""
        target = f"sip:{user}@127.0.0.1:{self.pbx.sip_port}"
        return (f"{method} {target} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-{call_id}{branch}\r\n"
                f"From: <sip:carol@127.0.0.1:{self.port}>;tag=carol\r\nTo: <{target}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
                f"Contact: <sip:carol@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n").encode()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.pbx.sip_port))

    def collect(self, until: Callable[[], bool], timeout: float) -> None:
        """Read answers (their first lines) until ``until()`` holds."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.05)
        while not until():
            assert time.monotonic() < deadline, f"answers so far: {self.answers}"
            with contextlib.suppress(TimeoutError):
                self.answers.append(self.sock.recv(65536).decode().split("\r\n", 1)[0])

    def count(self, start: str) -> int:
        return sum(answer.startswith(start) for answer in self.answers)


def test_invite_retransmissions_are_absorbed_before_the_push(pbx: Pbx) -> None:
    """The caller sends its INVITE three times while the push is under way (pnmediator
    answers it slowly): one NotifyIncomingCall, each copy answered 100 by the transaction;
    the CANCEL then gives one Missed."""
    pbx.report("retrans", "ANDROID-RETRANS", msgs="retrans-fcm")
    pbx.stub.answer("retrans-fcm", slow(0.8))
    call_id = f"retrans-{time.monotonic_ns()}@test"
    caller = Udp(pbx)
    invite = caller.request("INVITE", "retrans", call_id)
    for _ in range(3):
        caller.send(invite)
        time.sleep(0.2)
    caller.collect(lambda: caller.count("SIP/2.0 100") >= 3, 5)
    wait_until(lambda: pbx.pushes(call_id, CALL), 5, "NotifyIncomingCall")
    caller.send(caller.request("CANCEL", "retrans", call_id))
    caller.collect(lambda: caller.count("SIP/2.0 487") >= 1, 5)
    wait_until(lambda: pbx.pushes(call_id, MISSED), 5, "NotifyIncomingCallMissed")
    assert [r["verb"] for r in settle(pbx, call_id)] == [CALL, MISSED]


def test_a_phone_registering_while_another_rings_is_added_to_the_call(pbx: Pbx) -> None:
    """The Android phone is registered and rings at once; the iPhone wakes up, registers
    and gets a branch of the same call (tsilo's ts_append), answers; the Android phone is
    cancelled and its device gets AnsweredElsewhere; the iPhone's gets none."""
    pbx.report("multi", "IPHONE-MULTI", calls="multi-voip", msgs="multi-apns")
    pbx.report("multi", "ANDROID-MULTI", msgs="multi-fcm")
    ringing = pbx.phone("phone_ignore", "multi", "ANDROID-MULTI")
    call_id = f"multi-{time.monotonic_ns()}@test"
    caller = pbx.sipp("call_answer", "-cid_str", call_id, "-d", "200", port=free_port(),
                      to="multi")
    try:
        wait_until(lambda: ringing.received("INVITE "), 10, "the registered phone to ring")
        answering = pbx.phone("phone_answer", "multi", "IPHONE-MULTI")
        caller.wait(15)
        answering.wait(10)
        ringing.wait(10)
    finally:
        caller.stop()
    wait_until(lambda: pbx.pushes(call_id, ELSEWHERE), 5, "NotifyIncomingCallAnsweredElsewhere")
    assert pairs(settle(pbx, call_id)) == [
        (CALL, "ANDROID-MULTI", "com.app", "multi-fcm"),
        (CALL, "IPHONE-MULTI", "com.app.voip", "multi-voip"),
        (ELSEWHERE, "ANDROID-MULTI", "com.app", "multi-fcm"),
    ]
    assert ringing.received("CANCEL ") == 1 and answering.received("ACK ") == 1


def test_when_the_answering_device_is_not_known_every_device_is_told(pbx: Pbx) -> None:
    """A phone whose REGISTER names no selector answers at once: AnsweredElsewhere goes to
    every device of the user (one request for all), each once."""
    pbx.report("anon", "IPHONE-ANON", calls="anon-voip", msgs="anon-apns")
    pbx.report("anon", "ANDROID-ANON", msgs="anon-fcm")
    phone = pbx.phone("phone_answer", "anon", "")
    call_id = f"anon-{time.monotonic_ns()}@test"
    caller = pbx.sipp("call_answer", "-cid_str", call_id, "-d", "200", port=free_port(),
                      to="anon")
    caller.wait(15)
    phone.wait(10)
    wait_until(lambda: len(pbx.pushes(call_id, ELSEWHERE)) == 2, 5, "AnsweredElsewhere")
    assert pairs(settle(pbx, call_id)) == [
        (CALL, "ANDROID-ANON", "com.app", "anon-fcm"),
        (CALL, "IPHONE-ANON", "com.app.voip", "anon-voip"),
        (ELSEWHERE, "ANDROID-ANON", "com.app", "anon-fcm"),
        (ELSEWHERE, "IPHONE-ANON", "com.app.voip", "anon-voip"),
    ]


def test_a_slow_push_is_waited_for_up_to_its_deadline(pbx: Pbx) -> None:
    """pnmediator answers 503 three times (0.9 s each) before taking the push: pnbridge
    answers after about 3 s, within NotifyIncomingCall's 4 s deadline. Kamailio's whole-request
    timeout (HTTP_TIMEOUT, 5 s) waits for it, so the call is parked and its CANCEL pushes
    Missed; with the 2 s the old snippet set, curl gave up and the caller got 480."""
    pbx.report("slow", "ANDROID-SLOW", msgs="slow-fcm")
    busy = Answer(503, {"code": 503, "response": "busy"}, delay=0.9)
    pbx.stub.answer("slow-fcm", busy, busy, busy)
    call_id = f"slow-{time.monotonic_ns()}@test"
    started = time.monotonic()
    caller = pbx.sipp("call_cancel", "-cid_str", call_id, "-d", "4000", port=free_port(),
                      to="slow")
    caller.wait(15)
    wait_until(lambda: pbx.pushes(call_id, MISSED), 5, "NotifyIncomingCallMissed")
    assert [r["verb"] for r in settle(pbx, call_id)] == [CALL] * 4 + [MISSED]
    times = [t for r, t in zip(pbx.stub.requests, pbx.stub.times, strict=True)
             if r.get("Id") == call_id and r["verb"] == CALL]
    assert times[-1] - times[0] > 2.5  # the last try, the one sent, came after 2.5 s
    assert time.monotonic() - started >= 4


def test_two_calls_with_one_call_id_each_get_their_own_end(pbx: Pbx) -> None:
    """Two INVITEs with the same Call-ID but their own From-tag, to two users, 0.5 s apart
    (two parked calls at once); the second is cancelled first. Each call gets its Missed, and
    neither stays parked: the phones that wake up afterwards are not rung."""
    pbx.report("kx", "ANDROID-KX", msgs="kx-fcm")
    pbx.report("ky", "ANDROID-KY", msgs="ky-fcm")
    call_id = f"shared-{time.monotonic_ns()}@test"
    first = pbx.sipp("call_cancel", "-cid_str", call_id, "-d", "3000", port=free_port(),
                     to="kx", name="kx")
    time.sleep(0.5)
    second = pbx.sipp("call_cancel", "-cid_str", call_id, "-d", "1000", port=free_port(),
                      to="ky", name="ky")
    second.wait(15)
    first.wait(15)
    wait_until(lambda: len(pbx.pushes(call_id, MISSED)) == 2, 5, "two NotifyIncomingCallMissed")
    assert [(r["verb"], r["DeviceToken"]) for r in settle(pbx, call_id)] == [
        (CALL, "kx-fcm"), (CALL, "ky-fcm"), (MISSED, "ky-fcm"), (MISSED, "kx-fcm")]
    for user, selector in (("kx", "ANDROID-KX"), ("ky", "ANDROID-KY")):
        phone = pbx.phone("phone_ignore", user, selector)
        phone.stop()
        assert phone.received("INVITE ") == 0
        assert f"{user} registered: resuming" not in pbx.kamailio_log.read_text()


def test_a_new_call_with_an_ended_calls_call_id_is_a_new_call(pbx: Pbx) -> None:
    """A call is cancelled; a new INVITE with the same Call-ID comes at once (well within
    the 600 s the tables keep an entry) and is cancelled too: each call gets its Missed.
    Then twice more with the same Call-ID and the same From-tag (a new branch each)."""
    pbx.report("kz", "ANDROID-KZ", msgs="kz-fcm")
    call_id = f"again-{time.monotonic_ns()}@test"
    for n in range(2):
        caller = pbx.sipp("call_cancel", "-cid_str", call_id, "-d", "1000", port=free_port(),
                          to="kz", name=f"kz{n}")
        caller.wait(15)
        wait_until(lambda n=n: len(pbx.pushes(call_id, MISSED)) == n + 1, 5, "Missed")
    assert [r["verb"] for r in settle(pbx, call_id)] == [CALL, MISSED, CALL, MISSED]
    same_tag = Udp(pbx)
    for n in (3, 4):
        same_tag.send(same_tag.request("INVITE", "kz", call_id, f"-{n}"))
        wait_until(lambda n=n: len(pbx.pushes(call_id, CALL)) == n, 5, "NotifyIncomingCall")
        same_tag.send(same_tag.request("CANCEL", "kz", call_id, f"-{n}"))
        wait_until(lambda n=n: len(pbx.pushes(call_id, MISSED)) == n, 5, "Missed")
    assert [r["verb"] for r in settle(pbx, call_id)] == [CALL, MISSED] * 4
