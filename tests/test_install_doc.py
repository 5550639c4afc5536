"""docs/install.md and the README's first command, followed as written on Debian's python3.

The ```sh blocks of install.md are read from the markdown (not retyped) and run line by line
as root, as a newcomer would, with only mechanical substitutions so that the machine's real
/opt, /etc, /var and users are never touched: the paths move under a scratch directory, the
user `pnbridge` becomes a system user created by the doc's own `useradd` line (removed after),
`python3` is /usr/bin/python3 and `install-units` gets `--prefix`. What needs systemd as PID 1
or the network is skipped, each such line listed in ALLOWED_SKIPS: a new command the test does
not know fails it instead of being skipped."""

from __future__ import annotations

import os
import pwd
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from checkout import copy_checkout

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # pip-installs the checkout, as install.md and the README do
INSTALL_MD = REPO / "docs" / "install.md"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# The only lines of install.md's steps that are not run (comments stripped): they need apt
# and the network, or systemd as PID 1. Their effect the test stands in for is named where
# it matters (the directories the unit's StateDirectory=/LogsDirectory= would create).
ALLOWED_SKIPS = {
    "apt-get install -y python3 python3-venv",
    "systemctl reload pnbridge",
    "systemctl daemon-reload",
    "systemctl enable --now pnbridge",
    "systemctl status pnbridge",
    "systemctl daemon-reload && systemctl enable --now pnbridge.socket",
}
PASSWORD = "correct horse battery staple"
REPORT = {"username": "alice", "selector": "6f1a0c9e3a", "token_calls": "callsTokenAAAA",
          "appid_calls": "app.voip", "token_msgs": "msgsTokenBBBB", "appid_msgs": "app.msgs"}


def _sections() -> dict[str, str]:
    """install.md's `## N. title` sections by number."""
    parts = re.split(r"^## (\d+)\. .*$", INSTALL_MD.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.M | re.S)


def _commands(block: str) -> list[str]:
    """The command lines of a sh block, trailing comments stripped."""
    lines = (re.sub(r"(^|\s+)#.*$", "", line).strip() for line in block.splitlines())
    return [line for line in lines if line]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Install:
    """The scratch host install.md's steps were run on."""

    tmp: Path
    user: str
    env: dict[str, str]
    port: int
    admin_port: int
    skipped: set[str] = field(default_factory=set)
    ran: list[str] = field(default_factory=list)

    @property
    def pnbridge(self) -> str:
        return str(self.tmp / "opt/pnbridge/venv/bin/pnbridge")

    @property
    def config(self) -> Path:
        return self.tmp / "etc/pnbridge/pnbridge.toml"

    def substitute(self, text: str) -> str:
        """The doc's text with the mechanical substitutions (paths, user, python3)."""
        paths = {"/opt/pnbridge": "opt/pnbridge", "/etc/pnbridge": "etc/pnbridge",
                 "/var/lib/pnbridge": "var/lib/pnbridge", "/var/log/pnbridge": "var/log/pnbridge"}
        text = re.sub("|".join(map(re.escape, paths)),
                      lambda m: str(self.tmp / paths[m.group(0)]), text)
        text = text.replace("/path/to/pnbridge", str(REPO))
        # The user/group name where a command takes one.
        text = re.sub(r"(?<=(?:-o|-g|-u) )pnbridge\b(?![./])", self.user, text)
        text = re.sub(r"(?<=--user )pnbridge\b(?![./])", self.user, text)
        text = re.sub(r"(?<=chown )pnbridge(?=[: ])", self.user, text)
        text = re.sub(r"^(useradd .*) pnbridge$", rf"\1 {self.user}", text, flags=re.M)
        text = re.sub(r"(?<![\w/.-])python3(?![\w.-])", PYTHON, text)
        text = re.sub(r"\binstall-units\b", f"install-units --prefix {self.tmp}", text)
        return text.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}").replace(
            "127.0.0.1:9180", f"127.0.0.1:{self.admin_port}")

    def run(self, block: str, stdin: str | None = None) -> list[subprocess.CompletedProcess[str]]:
        """Each command line of a doc's sh block, as root in the work directory."""
        results = []
        for line in _commands(block):
            if line in ALLOWED_SKIPS:
                self.skipped.add(line)
                continue
            assert not re.match(r"(apt-get|systemctl|journalctl)\b", line), (
                f"install.md has a command this test does not know: {line!r}: run it or add "
                "it to ALLOWED_SKIPS")
            command = self.substitute(line)
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", command],
                                    cwd=self.tmp / "work", env=self.env, input=stdin,
                                    capture_output=True, text=True, timeout=240)
            assert result.returncode == 0, (
                f"install.md's {line!r} (run as {command!r}) exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}")
            self.ran.append(line)
            results.append(result)
        return results


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("install.md's steps need root (useradd, install -o) and CI is set")
        pytest.skip("needs root: follows install.md with a system user and root-owned files")


@pytest.fixture(scope="module")
def install() -> Iterator[Install]:
    """Steps 1 to 4 of install.md, run once for the module (the pip install takes ~30 s)."""
    _need_root()
    tmp = Path(tempfile.mkdtemp(prefix="pnbridge-installdoc-", dir="/tmp"))
    tmp.chmod(0o755)
    (tmp / "work").mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PNBRIDGE_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if ".venv" not in p and "pyenv" not in p)
    # The doc: "$PNBRIDGE_DEFAULT_CONFIG moves that default location, for packagers and tests".
    env["PNBRIDGE_DEFAULT_CONFIG"] = str(tmp / "etc/pnbridge/pnbridge.toml")
    host = Install(tmp, f"pnbd{secrets.token_hex(3)}", env, _free_port(), _free_port())
    sections = _sections()
    try:
        for block in _blocks(sections["1"], "sh") + _blocks(sections["2"], "sh"):
            host.run(block)  # venv, pip install, --version; useradd, install -d /etc/pnbridge
        step3 = sections["3"]
        config, users_section = step3.split("### Users of the digest and basic modes")
        (tmp / "work/pnbridge.toml").write_text(host.substitute(_blocks(config, "toml")[0]))
        for block in _blocks(config, "sh"):
            host.run(block)  # install -m 0640 ... pnbridge.toml; check-config
        # "Users of the digest and basic modes": its [auth] lines added to the config, then
        # its `users add` line with the password on stdin (the flag the doc names).
        auth = _blocks(users_section, "toml")[0]
        with host.config.open("a") as config_file:
            config_file.write("\n" + host.substitute(auth))
        for block in _blocks(users_section, "sh"):
            host.run(re.sub(r"(users add \S+)", r"\1 --password-stdin", block),
                     stdin=PASSWORD + "\n")
        for block in _blocks(sections["4"], "sh"):  # install-units; systemctl (skipped)
            host.run(block)
        # What `systemctl enable --now` would do first: the unit's StateDirectory= and
        # LogsDirectory= (owned by the service user, 0750).
        for state in ("var/lib/pnbridge", "var/log/pnbridge"):
            subprocess.run(["install", "-d", "-m", "0750", "-o", host.user, "-g", host.user,
                            str(tmp / state)], check=True)
        yield host
    finally:
        subprocess.run(["userdel", host.user], capture_output=True)
        subprocess.run(["groupdel", host.user], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


class Daemon:
    """A `pnbridge serve` child whose stderr is read line by line."""

    def __init__(self, argv: list[str], **kwargs) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, **kwargs)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.log.append(line)
            if text in line:
                return
        pytest.fail(f"no {text!r} from pnbridge serve:\n{''.join(self.log)}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_install_md_steps_then_serve_as_the_service_user(install: Install) -> None:
    host = install
    assert host.skipped == ALLOWED_SKIPS, "an allowed skip is no longer in install.md"
    assert any("users add" in line for line in host.ran), host.ran
    entry = pwd.getpwnam(host.user)
    assert host.config.stat().st_gid == entry.pw_gid and host.config.stat().st_mode & 0o777 == 0o640
    users_file = host.tmp / "etc/pnbridge/users"
    assert users_file.stat().st_gid == entry.pw_gid and users_file.stat().st_mode & 0o777 == 0o640
    assert (host.tmp / "etc/systemd/system/pnbridge.service").read_text().count(
        f"ExecStart={host.pnbridge} serve")

    # The unit's ExecStart, as its User= and Group= (no --config: this host's default
    # config). Not through runuser, which dies of the SIGTERM it forwards: the exit status
    # must be pnbridge's own.
    daemon = Daemon([host.pnbridge, "serve"], cwd=host.tmp, env=host.env,
                    user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    try:
        daemon.wait_for("listening on")
        assert f"config {host.config}" in "".join(daemon.log), daemon.log
        url = f"http://127.0.0.1:{host.port}/token/"
        assert httpx.get(url, params=REPORT, timeout=10).status_code == 401
        answer = httpx.get(url, params=REPORT, auth=httpx.DigestAuth("alice", PASSWORD),
                           timeout=10)
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"http://127.0.0.1:{host.admin_port}/readyz",
                         timeout=10).status_code == 200

        listed = subprocess.run([host.pnbridge, "devices", "list"], env=host.env,
                                capture_output=True, text=True, timeout=60, cwd=host.tmp)
        assert listed.returncode == 0, listed.stderr
        assert REPORT["selector"][:6] in listed.stdout and "alice" in listed.stdout

        # 9. doctor, as the doc shows it: only the systemd check may not be ok (the units
        # are under --prefix, not enabled; systemctl has no systemd to ask).
        doctor_line = next(line for line in _commands(_blocks(_sections()["9"], "sh")[0])
                           if " doctor " in line)
        doctor = subprocess.run(["bash", "-c", host.substitute(doctor_line)], env=host.env,
                                capture_output=True, text=True, timeout=120, cwd=host.tmp)
        lines = [line.split(None, 1) for line in doctor.stdout.splitlines() if line.strip()]
        assert all(level in ("ok", "warn", "fail") for level, _ in lines), doctor.stdout
        not_ok = [(level, what) for level, what in lines if level != "ok"]
        # The only one: the unit is under --prefix, not enabled, and there is no systemd to
        # ask (`no systemctl here` / `pnbridge.service is not installed`).
        assert len(not_ok) == 1 and not_ok[0][0] == "warn", doctor.stdout + doctor.stderr
        assert not_ok[0][1].startswith("systemd: "), doctor.stdout
        for found in ("config ", f"{host.user} reads the users file", "database ",
                      f"listen 127.0.0.1:{host.port} is held by a running pnbridge",
                      f"listen 127.0.0.1:{host.admin_port} is held by a running pnbridge"):
            assert any(what.startswith(found) for _, what in lines), (found, doctor.stdout)
        assert doctor.returncode == 1, doctor.stdout + doctor.stderr

        # 8. Moving devices between hosts: export while the daemon runs, import it again.
        host.run(_blocks(_sections()["8"], "sh")[0])
        exported = (host.tmp / "work/devices.jsonl")
        assert exported.stat().st_mode & 0o777 == 0o600
        assert REPORT["selector"] in exported.read_text()
        database = host.tmp / "var/lib/pnbridge/pnbridge.db"
        for path in database.parent.iterdir():
            assert path.stat().st_uid == entry.pw_uid, f"{path} is not the service user's"
        assert httpx.get(url, params=REPORT, auth=httpx.DigestAuth("alice", PASSWORD),
                         timeout=10).status_code == 200
    finally:
        status = daemon.stop()
    assert status == 0, "".join(daemon.log)


def test_readme_first_command_serves_on_the_embedded_defaults(tmp_path: Path) -> None:
    _need_root()
    readme = (REPO / "README.md").read_text()
    command = _blocks(readme, "sh")[0].strip()
    assert command.endswith(".venv/bin/pnbridge serve"), command
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8080))
        except OSError:
            if os.environ.get("CI"):
                raise
            pytest.skip("127.0.0.1:8080, the README's embedded default, is in use here")
    checkout = tmp_path / "pnbridge"
    copy_checkout(checkout)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PNBRIDGE_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    # No /etc/pnbridge/pnbridge.toml may stand in for the embedded defaults.
    env["PNBRIDGE_DEFAULT_CONFIG"] = str(tmp_path / "none.toml")
    command = re.sub(r"(?<![\w/.-])python3(?![\w.-])", PYTHON, command)
    daemon = Daemon(["bash", "-c", command], cwd=checkout, env=env)
    try:
        daemon.wait_for("listening on", timeout=200)
        answer = httpx.get("http://127.0.0.1:8080/token/", params=REPORT, timeout=10)
        assert answer.status_code == 200, answer.text
        assert httpx.get("http://127.0.0.1:8080/healthz", timeout=10).status_code == 200
        assert (checkout / "pnbridge.db").exists()
    finally:
        # SIGTERM to pnbridge serve (bash's child); bash then exits with its status.
        children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children")
        for pid in children.read_text().split() if children.exists() else ():
            os.kill(int(pid), signal.SIGTERM)
        status = daemon.stop()
    assert status == 0, "".join(daemon.log)
