"""The digest report rate: wrk sends reports that each carry a valid ``Authorization:
Digest`` (nonces fetched from the daemon beforehand, each used with counts 1, 2, ...), to one
``pnbridge serve``. ``python bench/digestload.py [SECONDS]`` prints requests a second and
the daemon's CPU time a report."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import run_wrk, start_pnbridge
from pnbridge.access import users

REALM, USER, PASSWORD = "pnbridge", "alice", "alice-password"
DEVICES = 20  # one user's cap: the reports after the first 20 only refresh last_seen

LUA = """
local lines = {}
for line in io.lines("%s") do table.insert(lines, line) end
local counter = 0
request = function()
  counter = counter + 1
  local target, auth = lines[(counter - 1) %% #lines + 1]:match("([^\\t]+)\\t(.+)")
  return wrk.format("GET", target, {["Authorization"] = auth})
end
"""


def nonces(port: int, count: int) -> list[str]:
    """``count`` fresh nonces, from as many 401s."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    found = []
    for _ in range(count):
        conn.request("GET", "/token?username=alice&selector=S0&token_msgs=t")
        answer = conn.getresponse()
        answer.read()
        found.append(re.search(r'nonce="([^"]+)"', answer.getheader("WWW-Authenticate")).group(1))
    conn.close()
    return found


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used: a figure a machine busy with
    other work changes less than the rate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def header(nonce: str, nc: int, target: str) -> str:
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    count, cnonce = f"{nc:08x}", "0a4f113b"
    ha1, ha2 = md5(f"{USER}:{REALM}:{PASSWORD}"), md5(f"GET:{target}")
    response = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{USER}", realm="{REALM}", nonce="{nonce}", uri="{target}", '
            f'qop=auth, nc={count}, cnonce="{cnonce}", response="{response}", algorithm=MD5')


def main(seconds: float = 5.0, fresh: int = 2000, counts: int = 20) -> None:
    work = Path(tempfile.mkdtemp(prefix="pnbridge-digest-"))
    users.write(work / "users", {USER: users.new_user(USER, REALM, PASSWORD)})
    server = start_pnbridge(work / "p.db", work, extra=(
        f'[auth]\nreporter = "digest"\nusers_file = "{work / "users"}"\n'
        'digest_algorithms = ["MD5"]\n'))
    try:
        port = int(server.url.rsplit(":", 1)[1])
        found = nonces(port, fresh)
        lines = []
        for nc in range(1, counts + 1):  # every nonce once, then every one again, nc + 1
            for i, nonce in enumerate(found):
                target = f"/token?username={USER}&selector=S{i % DEVICES}&token_msgs=t{i % DEVICES}"
                lines.append(f"{target}\t{header(nonce, nc, target)}")
        (work / "requests.txt").write_text("\n".join(lines) + "\n")
        (work / "digest.lua").write_text(LUA % (work / "requests.txt"))
        before = cpu_seconds(server.popen.pid)
        load = run_wrk(server.url, work / "digest.lua", seconds, 32)
        cpu = (cpu_seconds(server.popen.pid) - before) / load.requests * 1000
        print(f"digest reports: {load.rps:.0f}/s, p50 {load.p50_ms:.1f} ms, p99 "
              f"{load.p99_ms:.1f} ms, {load.requests} requests, {load.errors} not 2xx, "
              f"daemon CPU {cpu:.2f} ms a report")
    finally:
        server.popen.terminate()
        server.popen.wait()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
