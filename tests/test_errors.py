"""What an operator sees when something is wrong: one line that names the address, file or
user at fault, never a traceback, on every interpreter (.ci/run also runs this module under
Debian's /usr/bin/python3, 3.11.2, which printed a BaseExceptionGroup traceback after the
line of every ``except*`` error path). Real ``pnbridge`` processes, real sockets and files."""

from __future__ import annotations

import ast
import http.server
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from configs import free_port
from conftest import cli, pnbridge
from faults import daemon_toml, locked

ROOT = Path(__file__).resolve().parent.parent
TRACEBACK = re.compile(r"Traceback|ExceptionGroup|Error\(|^\s+File ", re.M)


def config(tmp_path: Path, extra: str = "", listen: str = '"127.0.0.1:0"') -> Path:
    path = tmp_path / "pnbridge.toml"
    path.write_text(f'''
[server]
log_level = "error"
listen = [{listen}]
[storage]
path = "{tmp_path / "pnbridge.db"}"
{extra}
''')
    path.chmod(0o600)
    return path


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line of a failed command's stderr, checked to be all it printed."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert not TRACEBACK.search(result.stderr), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pnbridge: ")
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_a_port_in_use_is_named_alone(tmp_path, busy_port):
    free = free_port()
    path = config(tmp_path, listen=f'"127.0.0.1:{free}", "127.0.0.1:{busy_port}"')
    line = one_line(pnbridge("serve", "--config", str(path)))
    assert line == f"pnbridge: cannot listen on 127.0.0.1:{busy_port}: Address already in use"


def test_an_admin_port_in_use_is_named_alone(tmp_path, busy_port):
    path = config(tmp_path)
    path.write_text(path.read_text().replace(
        "[storage]", f'admin_listen = ["127.0.0.1:{busy_port}"]\n[storage]'))
    line = one_line(pnbridge("serve", "--config", str(path)))
    assert line == f"pnbridge: cannot listen on 127.0.0.1:{busy_port}: Address already in use"


def test_a_unix_socket_in_a_missing_directory(tmp_path):
    where = tmp_path / "missing" / "pnbridge.sock"
    path = config(tmp_path, listen=f'"unix:{where}"')
    line = one_line(pnbridge("serve", "--config", str(path)))
    assert line == f"pnbridge: cannot listen on unix:{where}: No such file or directory"


@pytest.mark.parametrize(("fd", "fd_setup", "said"), [
    (3, "3</dev/null", "not a socket"),  # a file where systemd would pass the socket
    (97, "", "no such file descriptor"),  # an fd nothing opened
])
def test_fd_without_a_socket_says_so(tmp_path, fd, fd_setup, said):
    path = config(tmp_path, listen=f'"fd://{fd}"')
    # bash opens (or not) the fd, then becomes pnbridge, as systemd would start it.
    result = subprocess.run(
        ["bash", "-c", f'exec "$@" {fd_setup}', "bash",
         sys.executable, "-m", "pnbridge", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    line = one_line(result)
    assert line == (f"pnbridge: cannot listen on fd://{fd}: {said} "
                    "(is the service started by its .socket unit?)")


def test_a_plugin_that_cannot_start_names_its_file(tmp_path):
    audit = tmp_path / "no-such-dir" / "audit.jsonl"
    path = config(tmp_path, f'''[plugins]
enabled = ["auditlog"]
[plugins.auditlog]
path = "{audit}"
''')
    line = one_line(pnbridge("serve", "--config", str(path)))
    assert line.startswith("pnbridge: plugin auditlog: startup failed: ")
    assert f"No such file or directory: {audit}" in line, line


def test_push_to_an_unknown_user(tmp_path):
    path = config(tmp_path, '''[plugins]
enabled = ["pnmediator"]
[plugins.pnmediator]
url = "http://127.0.0.1:9/send"
''')
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert pnbridge("devices", "import", str(empty), "--config", str(path)).returncode == 0
    line = one_line(pnbridge("push", "NotifyTextMessage", "--username", "nobody",
                             "--config", str(path)))
    assert line == "pnbridge: no device of user nobody"
    line = one_line(pnbridge("push", "NotifyTextMessage", "--username", "nobody",
                             "--selector", "S1", "--config", str(path)))
    assert line == "pnbridge: no device of user nobody with selector S1"


def test_a_database_that_cannot_be_opened_is_named(tmp_path):
    (tmp_path / "db.d").mkdir()
    path = config(tmp_path)
    path.write_text(path.read_text().replace(str(tmp_path / "pnbridge.db"),
                                             str(tmp_path / "db.d")))
    line = one_line(pnbridge("serve", "--config", str(path)))
    assert f"{tmp_path / 'db.d'}" in line, line


def raisers_in_except_star(tree: ast.AST) -> Iterator[int]:
    """Lines that raise, or call fail() / sys.exit(), inside an ``except*`` block."""
    for node in ast.walk(tree):
        if isinstance(node, ast.TryStar):
            for handler in node.handlers:
                for inner in ast.walk(handler):
                    call = isinstance(inner, ast.Call) and getattr(
                        inner.func, "id", getattr(inner.func, "attr", "")) in ("fail", "exit")
                    if isinstance(inner, ast.Raise) or call:
                        yield inner.lineno


def test_no_except_star_block_raises():
    """CPython 3.11.0 to 3.11.3 wrap an exception raised inside an ``except*`` block in a
    group and print it: every such block records what failed, the raise comes after it."""
    found = [f"{path.relative_to(ROOT)}:{line}"
             for folder in ("daemon", "plugins")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for line in raisers_in_except_star(ast.parse(path.read_text()))]
    assert not found, found


class Refusing(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that is down for maintenance."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_retries_log_plain_text_and_no_http_lines(spawn, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        daemon = spawn(f'''
[server]
log_level = "info"
listen = ["127.0.0.1:0"]
[storage]
path = "{tmp_path / "pnbridge.db"}"
[plugins]
enabled = ["webhook"]
[plugins.webhook]
urls = ["{receiver}"]
secret = "s3cret-s3cret-s3cret"
[plugins.webhook.delivery]
backoff = 0.05
max_backoff = 0.1
max_attempts = 3
''')
        answer = httpx.get(f"{daemon.url()}/token/", params={
            "username": "u", "selector": "S1", "pushToken": "tok", "pushappid": "app"})
        assert answer.status_code == 200
        retry = daemon.wait_for(r"attempt 1 failed: (.*); next in").group(1)
        assert retry == f"{receiver}: 503 Service Unavailable", retry
        daemon.wait_for("parked event")
        assert daemon.stop() == 0
    finally:
        server.shutdown()
    log = daemon.log
    assert "HTTP Request" not in log, log  # httpx's line per POST
    assert not re.search(r"\w\('", log), log  # no Python repr such as Retry('...')


def test_readme_lists_every_command_and_page():
    readme = (ROOT / "README.md").read_text()
    commands = readme.split("## Commands", 1)[1].split("\n## ", 1)[0].replace("\\|", "|")
    listed = set(re.findall(r"`pnbridge ([a-z-]+(?: [a-z|-]+)?)", commands))
    missing = []
    for name in _subcommands([]):
        subs = _subcommands([name])
        if not subs:
            if not any(entry.split()[0] == name for entry in listed):
                missing.append(name)
            continue
        for sub in subs:
            if not any(entry.split()[0] == name and sub in entry.split()[1].split("|")
                       for entry in listed if " " in entry):
                missing.append(f"{name} {sub}")
    assert not missing, f"README's command table lacks: {missing}"
    docs = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")}
    assert not pages - set(re.findall(r"\]\(([^)]+)\)", docs)), pages


def _subcommands(group: list[str]) -> list[str]:
    """The commands ``pnbridge GROUP --help`` lists (none for a plain command)."""
    result = cli(*group, "--help")
    assert result.returncode == 0, result.stderr
    if "Commands:" not in result.stdout:
        return []
    block = result.stdout.split("Commands:", 1)[1]
    return re.findall(r"^  ([a-z][a-z-]*)\s", block, re.M)


def test_a_storage_failure_while_serving_names_the_database(spawn, tmp_path):
    db = tmp_path / "pnbridge.db"
    daemon = spawn(daemon_toml(tmp_path, db, access_log=True))
    with httpx.Client(base_url=daemon.url(), timeout=10) as client:
        params = {"username": "u", "selector": "S1", "pushToken": "tok", "pushappid": "app"}
        assert client.get("/token/", params=params).status_code == 200
        with locked(db):
            assert client.get("/token/", params={**params, "selector": "S2"}).status_code == 503
    daemon.wait_for(rf"storage failed route=/token/ database={re.escape(str(db))}: "
                    "database is locked")
