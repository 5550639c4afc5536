"""Kamailio end to end: the shipped config/pbx/kamailio/kamailio.cfg, unchanged but for its
#!define settings, run by the real Kamailio on loopback ports, with pnbridge (``pnbridge
serve``, the pnmediator plugin pointed at the recording stand-in of tests/pnmediator_stub.py,
devices reported through the real reporter) and sipp as the caller and as the phones
(tests/sipp/*.xml). Skipped where Kamailio or sipp is not installed, unless ``CI`` is set."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import Process
from pnmediator_stub import Stub

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


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
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


class StubThread:
    """The pnmediator stand-in, serving in a trio loop of its own thread for the module."""

    def __init__(self) -> None:
        self.stub = Stub()
        self._started = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.stub.serve)
                self._started.set()

    def start(self) -> Stub:
        self._thread.start()
        assert self._started.wait(10), "the pnmediator stand-in did not start"
        return self.stub

    def stop(self) -> None:
        assert self._scope is not None and self._token is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)


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
        params = {"username": username, "selector": selector}
        if calls:
            params |= {"pushTokenIncomingCall": calls, "pushappid_incoming_call": "com.app.voip"}
        if msgs:
            params |= {"pushTokenOther": msgs, "pushappid_other": "com.app"}
        answer = httpx.get(f"{self.pnbridge_url}/token", params=params, timeout=10)
        assert answer.status_code == 200, answer.text

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
        listens, then it registers its contact there with its selector."""
        port = free_port()
        phone = self.sipp(scenario, port=port, name=selector)
        register = self.sipp("phone_register", "-key", "contact_port", str(port),
                             "-key", "selector", selector, port=free_port(), to=user,
                             name=f"{selector}-register")
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

    def received(self, status: str) -> bool:
        messages = Path(f"{self.logs}.messages")
        return messages.exists() and f"SIP/2.0 {status}" in messages.read_text(errors="replace")

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
                [KAMAILIO or "kamailio", "-f", str(CFG), "-DD", "-E", "-Y", str(rundir),
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
