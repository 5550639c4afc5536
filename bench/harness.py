"""pnbridge benchmarks: each measured side by side with the stack's own ceiling, in one run.

Run through ``bench/run`` (see docs/benchmarks.md). The load generator is wrk (Debian's
package) on loopback; each server runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN_HEAD = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRr"
TOKEN_TAIL = "Z3pUWFNvcGZpdWZ6bWM2dFAzS2J"


def token(i: int) -> str:
    """The push token the load scripts send for known device ``i``."""
    return f"{TOKEN_HEAD}{i}{TOKEN_TAIL}"


# 90% repeats of known devices (as on every app start), 5% changed tokens, 5% new devices.
LUA = """
local n = {n}
local kind = "{kind}"
local counter = 0
math.randomseed(os.time() + {seed})
request = function()
  counter = counter + 1
  local i = math.random(0, n - 1)
  local selector = "S" .. i
  local tok = "{head}" .. i .. "{tail}"
  local roll = counter % 20
  if roll == 0 then
    selector = "N" .. {seed} .. "-" .. counter
  elseif roll == 10 then
    tok = tok .. "x" .. counter
  end
  local user = "u" .. i
  if kind == "get" then
    return wrk.format("GET", "/token/?username=" .. user .. "&selector=" .. selector ..
      "&token_msgs=" .. tok .. "&appid_msgs=com.cloudsoftphone.app")
  end
  local body = '{{"username":"' .. user .. '","selector":"' .. selector ..
    '","token_msgs":"' .. tok .. '","appid_msgs":"com.cloudsoftphone.app"}}'
  return wrk.format("POST", "/token", {{["Content-Type"] = "application/json"}}, body)
end
"""


# The push API under wrk: NotifyIncomingCall to users u0..u{users-1}; an answer that is not
# 200 with every device "sent" counts as an error.
PUSH_LUA = """
local counter = 0
bad = 0
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
request = function()
  counter = counter + 1
  local body = '{{"username":"u' .. (counter % {users}) .. '","verb":"NotifyIncomingCall","id":"call-' ..
    counter .. '"}}'
  return wrk.format("POST", "/api/v1/push", {{["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer {key}"}}, body)
end
response = function(status, headers, body)
  local ok = status == 200 and string.find(body, '"sent"', 1, true) ~= nil
  for _, outcome in ipairs({{'"failed"', '"removed"', '"skipped"'}}) do
    if string.find(body, outcome, 1, true) then ok = false end
  end
  if not ok then bad = bad + 1 end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("bad") end
  io.write("bad answers: " .. total .. "\\n")
end
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    ok: int = 0  # 2xx answers, when the script counts them ("ok answers: N")


@dataclass
class Server:
    popen: subprocess.Popen
    url: str
    started_s: float
    notify: socket.socket | None = None

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(30)
        if self.notify is not None:
            self.notify.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def start_ceiling() -> Server:
    port = free_port()
    began = time.monotonic()
    popen = subprocess.Popen([sys.executable, str(ROOT / "bench" / "ceiling.py"), f"127.0.0.1:{port}"])
    wait_listening(port)
    return Server(popen, f"http://127.0.0.1:{port}", time.monotonic() - began)


def start_pnbridge(db: Path, work: Path, extra: str = "", storage: str = "",
                   port: int | None = None, server: str = "") -> Server:
    """``pnbridge serve`` on ``db`` (``storage``: more of its [storage] table, ``server`` of
    its [server] table; ``port``: its port, else a free one); ``started_s`` is the time to
    systemd's READY=1."""
    port = port or free_port()
    config = work / f"pnbridge-{port}-{len(list(work.glob('pnbridge-*.toml')))}.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\naccess_log = false\nlog_level = "warning"\n'
        f'{server}'
        f'[storage]\npath = "{db}"\n{storage}'
        # One load generator on loopback: the per-client rate limit would measure itself.
        '[reporter]\nclient_rate = 0\nusername_rate = 0\n'
        f'{extra}'
    )
    notify_path = work / f"notify-{config.stem}.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    began = time.monotonic()
    popen = subprocess.Popen(
        [sys.executable, "-m", "pnbridge", "serve", "--config", str(config)],
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
    )
    while b"READY=1" not in notify.recv(4096):
        pass
    return Server(popen, f"http://127.0.0.1:{port}", time.monotonic() - began, notify)


def wrk(url: str, kind: str, devices: int, seconds: float, work: Path, seed: int,
        connections: int = 32) -> Load:
    script = work / f"{kind}-{devices}-{seed}.lua"
    script.write_text(LUA.format(n=devices, kind=kind, seed=seed, head=TOKEN_HEAD, tail=TOKEN_TAIL))
    return run_wrk(url, script, seconds, connections)


def run_wrk(url: str, script: Path, seconds: float, connections: int) -> Load:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script),
         url + "/"],
        capture_output=True, text=True, check=True,
    ).stdout
    if "bad = 0" in script.read_text() and "bad answers:" not in out:
        raise RuntimeError(f"wrk did not check the answers:\n{out}")
    return Load(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=_ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        p99_ms=_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        errors=_errors(out),
        ok=int(found.group(1)) if (found := re.search(r"ok answers: (\d+)", out)) else 0,
    )


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _errors(out: str) -> int:
    total = 0
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        total += int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        total += sum(map(int, found.groups()))
    if found := re.search(r"bad answers: (\d+)", out):
        total += int(found.group(1))
    return total


def seed(db: Path, devices: int) -> None:
    """A database holding ``devices`` devices, as the load scripts know them."""
    from pnbridge.storage.sqlite.store import SQLiteStore

    SQLiteStore(db).close()  # the schema
    conn = sqlite3.connect(db)
    now = time.time()
    rows = (
        (f"S{i}", f"u{i}", None, None, token(i), "com.cloudsoftphone.app", "{}", now, now, now)
        for i in range(devices)
    )
    with conn:
        conn.executemany("INSERT INTO devices VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


NOOP_PLUGIN = """
from pnbridge import hookimpl


@hookimpl
async def device_registered(event):
    pass


@hookimpl
async def device_removed(event):
    pass
"""


def journal(db: Path, events: int) -> None:
    """Journal ``events`` registrations from another process, in one transaction."""
    from pnbridge.model import Report
    from pnbridge.storage.sqlite.store import SQLiteStore

    store = SQLiteStore(db)
    now = time.time()
    with store.transaction():
        for i in range(events):
            report = Report("token", username=f"d{i}", selector=f"D{i}", token_msgs=token(i))
            store.register(report, {"command": "bench"}, now)
    store.close()


def pending(url: str, plugin: str) -> int:
    """The daemon's own count of journal events ``plugin`` has not passed yet."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        page = answer.read().decode()
    found = re.search(rf'pnbridge_journal_pending_events{{plugin="{plugin}"}} ([\d.e+]+)', page)
    return int(float(found.group(1)))


def delivery_rate(work: Path, events: int, plugin: str, config: str = "") -> float:
    """Events per second from the journal to ``plugin``, from the daemon's pending gauge while
    it drains a burst journaled by another process."""
    plugins = work / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "noop.py").write_text(NOOP_PLUGIN)
    db = work / f"delivery-{plugin}.db"
    server = start_pnbridge(db, work, (
        f'[plugins]\nenabled = ["{plugin}"]\npaths = ["{plugins}"]\n{config}'
    ))
    try:
        journal(db, events)
        samples = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            samples.append((time.monotonic(), pending(server.url, plugin)))
            if samples[-1][1] == 0 and len(samples) > 1 and samples[-2][1] > 0:
                break
            time.sleep(0.05)
    finally:
        server.stop()
    draining = [(t, n) for t, n in samples if 0 < n < events]
    start_t, start_n = draining[0]
    end_t = samples[-1][0]
    return start_n / (end_t - start_t)


def webhook_rate(work: Path, events: int) -> float:
    """``delivery_rate`` to the built-in webhook plugin, posting to a local receiver that
    answers 200 at once (the stand-in)."""
    port = free_port()
    receiver = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin.py"), str(port)])
    try:
        wait_listening(port)
        return delivery_rate(work, events, "webhook", (
            f'[plugins.webhook]\nurls = ["http://127.0.0.1:{port}/hook"]\n'
            'secret = "bench-secret-0123456789"\n'
        ))
    finally:
        receiver.terminate()
        receiver.wait(10)


API_KEY = "bench-key-0123456789abcdef"


def pushload(mode: str, url: str, seconds: float, **options: float) -> dict:
    """Run bench/pushload.py in its own process; its one JSON line of results."""
    flags = [f"--{k}={v}" for k, v in options.items()]
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pushload.py"), mode, url, f"--seconds={seconds}",
         f"--key={API_KEY}", *flags],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)


def push_fanout(work: Path, seconds: float, rounds: int, probe: float, users: int = 1000) -> dict:
    """NotifyIncomingCall to users with 3 devices each, through the push API and the built-in
    pnmediator plugin, against a stand-in that answers at once; beside a bare httpx loop
    against the same stand-in. Each side's best concurrency is probed first; then the rounds
    alternate between the two, and each side's median round counts. The push history's cost:
    a second daemon on a copy of the database with ``push_history_max = 0`` (none recorded)
    takes the same API load in the same rounds."""
    db = work / "push.db"
    from pnbridge.storage.sqlite.store import SQLiteStore

    SQLiteStore(db).close()  # the schema
    conn = sqlite3.connect(db)
    now = time.time()
    with conn:
        conn.executemany(
            "INSERT INTO devices VALUES (?,?,?,?,?,?,?,?,?,?)",
            ((f"S{u}-{d}", f"u{u}", f"calls{u}x{d}", "com.cloudsoftphone.app.pushkit",
              f"msgs{u}x{d}", "com.cloudsoftphone.app", "{}", now, now, now)
             for u in range(users) for d in range(3)),
        )
    conn.close()
    shutil.copy(db, work / "push-off.db")
    port = free_port()
    standin = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin.py"), str(port)])
    wait_listening(port)
    standin_url = f"http://127.0.0.1:{port}/"
    extra = (
        f'[api]\nkeys = ["{API_KEY}"]\nkey_rate = 0\n[plugins]\nenabled = ["pnmediator"]\n'
        f'[plugins.pnmediator]\nurl = "{standin_url}"\n'
    )
    server = start_pnbridge(db, work, extra)
    off = start_pnbridge(work / "push-off.db", work, extra, "push_history_max = 0\n")
    script = work / "push.lua"
    script.write_text(PUSH_LUA.format(users=users, key=API_KEY))
    try:
        run_wrk(server.url, script, 1, 8)  # warm-up
        run_wrk(off.url, script, 1, 8)
        bare_c = max((4, 8, 32), key=lambda c: pushload("bare", standin_url, probe,
                                                       concurrency=c)["rps"])
        api_c = max((8, 16, 32), key=lambda c: run_wrk(server.url, script, probe, c).rps)
        bares, apis, offs, paced_ons, paced_offs = [], [], [], [], []
        for _ in range(rounds):
            bares.append(pushload("bare", standin_url, seconds, concurrency=bare_c))
            apis.append(run_wrk(server.url, script, seconds, api_c).__dict__)
            offs.append(run_wrk(off.url, script, seconds, api_c).__dict__)
            paced_ons.append(pushload("api", server.url, seconds, users=users, rate=100))
            paced_offs.append(pushload("api", off.url, seconds, users=users, rate=100))
        bare = sorted(bares, key=lambda r: r["rps"])[rounds // 2] | {"concurrency": bare_c}
        api = sorted(apis, key=lambda r: r["rps"])[rounds // 2] | {"concurrency": api_c}
        api_off = sorted(offs, key=lambda r: r["rps"])[rounds // 2] | {"concurrency": api_c}
        api["errors"] = sum(r["errors"] for r in apis)
        api_off["errors"] = sum(r["errors"] for r in offs)
        bare["errors"] = sum(r["errors"] for r in bares)
        paced_api = pushload("api", server.url, 2 * seconds, users=users, rate=100)
        # With and without history at 100 calls/s: each side's median round by p99.
        paced_on = sorted(paced_ons, key=lambda r: r["p99_ms"])[rounds // 2]
        paced_off = sorted(paced_offs, key=lambda r: r["p99_ms"])[rounds // 2]
        paced_bare = pushload("bare", standin_url, 2 * seconds, rate=300)
    finally:
        server.stop()
        off.stop()
        standin.terminate()
        standin.wait(10)
    conn = sqlite3.connect(db)  # after the stop: the records left at shutdown written too
    records = conn.execute("SELECT count(*) FROM pushes").fetchone()[0]
    conn.close()
    return {"bare": bare, "api": api, "paced_api": paced_api, "paced_bare": paced_bare,
            "api_off": api_off, "paced_on": paced_on, "paced_off": paced_off,
            "records": records}


def history_cost(push: dict) -> tuple[float, float]:
    """The push history's cost: API throughput with it over without; p99 it adds at 100
    calls/s (ms)."""
    return (push["api"]["rps"] / push["api_off"]["rps"],
            push["paced_on"]["p99_ms"] - push["paced_off"]["p99_ms"])


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    mem = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return {
        "CPU": model.group(1) if model else platform.processor(),
        "cores": str(os.cpu_count()),
        "memory": f"{int(mem) / 1024 / 1024:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "packages": ", ".join(
            f"{p} {version(p)}" for p in ("pnbridge", "trio", "hypercorn", "quart", "quart-trio", "httpx")
        ),
        "load generator": f"{wrk_version.strip()} (-t1 -c32, loopback)",
    }


def median_load(loads: list[Load]) -> Load:
    """The run with the median throughput (its latencies come with it)."""
    return sorted(loads, key=lambda load: load.rps)[len(loads) // 2]


def run(quick: bool, out: Path) -> dict:
    sizes = (1_000, 10_000) if quick else (1_000, 1_000_000)
    seconds, rounds = (1, 1) if quick else (5, 5)
    results: dict = {"machine": machine(), "quick": quick, "seconds": seconds,
                     "rounds": rounds, "sizes": sizes}
    with tempfile.TemporaryDirectory(prefix="pnbridge-bench-") as tmp:
        work = Path(tmp)
        dbs = {}
        for n in sizes:
            dbs[n] = work / f"devices-{n}.db"
            seed(dbs[n], n)

        idle = start_pnbridge(work / "empty.db", work)
        time.sleep(0.5)
        results["rss_idle_mb"] = idle.rss_mb()
        idle.stop()

        # Every server up at once; rounds alternate between them so that whatever else the
        # machine does falls on all of them alike.
        servers: dict[str | int, Server] = {"ceiling": start_ceiling()}
        for n in sizes:
            servers[n] = start_pnbridge(dbs[n], work)
            results.setdefault("ready_s", {})[n] = servers[n].started_s
        try:
            for kind in ("get", "json"):
                runs: dict[str | int, list[Load]] = {name: [] for name in servers}
                for name, server in servers.items():  # warm-up
                    wrk(server.url, kind, sizes[0] if name == "ceiling" else name, 1, work, 0)
                for round_ in range(rounds):
                    for name, server in servers.items():
                        n = sizes[0] if name == "ceiling" else name
                        runs[name].append(wrk(server.url, kind, n, seconds, work, round_ + 1))
                results.setdefault("loads", {})[kind] = {k: median_load(v) for k, v in runs.items()}
            # The same GET load with more connections in flight than one batch holds.
            small = sizes[0]
            for connections in (64,) if quick else (64, 128):
                runs = {name: [] for name in ("ceiling", small)}
                for round_ in range(rounds):
                    for name in runs:
                        runs[name].append(wrk(servers[name].url, "get", small, seconds, work,
                                              round_ + 1, connections))
                results.setdefault("concurrency", {})[connections] = {
                    k: median_load(v) for k, v in runs.items()
                }
            for n in sizes:
                results.setdefault("rss_mb", {})[n] = servers[n].rss_mb()
        finally:
            for server in servers.values():
                server.stop()
        results["delivery_noop_eps"] = delivery_rate(work, 5_000 if quick else 50_000, "noop")
        results["delivery_webhook_eps"] = webhook_rate(work, 1_000 if quick else 10_000)
        results["push"] = push_fanout(work, seconds, rounds, 1 if quick else 3)
        import cluster  # it imports this module: not at the top

        results["cluster"] = cluster.run(work, quick, seconds, cluster.ROUNDS[quick]) | {
            "quick": quick}
        for n in sizes:
            conn = sqlite3.connect(dbs[n])
            count = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            results.setdefault("bytes_per_device", {})[n] = db_bytes(dbs[n]) / count
    write_markdown(results, out)
    return results


def _targets(r: dict) -> list[str]:
    """One table row per target of issue 9: what was measured, the target, met or missed."""
    small, large = r["sizes"]
    push = r["push"]
    rows = []
    for kind, label in (("get", "GET"), ("json", "POST JSON")):
        loads = r["loads"][kind]
        ratios = [loads[n].rps / loads["ceiling"].rps for n in (small, large)]
        rows.append((f"ingestion, {label}, share of the ceiling ({small:,} / {large:,} devices)",
                     " / ".join(f"{x:.3f}" for x in ratios), "at least 0.8", min(ratios) >= 0.8))
        growth = loads[large].p99_ms / loads[small].p99_ms
        rows.append((f"ingestion, {label}, p99 at {large:,} over {small:,} devices",
                     f"{growth:.2f}", "at most 1.5", growth <= 1.5))
    share = 3 * push["api"]["rps"] / push["bare"]["rps"]
    rows.append(("push fan-out, share of the bare httpx loop", f"{share:.3f}", "at least 0.8",
                 share >= 0.8))
    added = push["paced_api"]["p99_ms"] - push["paced_bare"]["p99_ms"]
    rows.append(("push, p99 added at 100 calls/s", f"{added:.1f} ms", "at most 5 ms", added <= 5))
    ratio, history_p99 = history_cost(push)
    rows.append(("push history, API throughput with it over without", f"{ratio:.3f}",
                 "at least 0.9", ratio >= 0.9))
    rows.append(("push history, p99 it adds at 100 calls/s", f"{history_p99:.1f} ms",
                 "at most 2 ms", history_p99 <= 2))
    rows.append(("delivery to a no-op plugin", f"{r['delivery_noop_eps']:,.0f} events/s",
                 "at least 2,000", r["delivery_noop_eps"] >= 2000))
    rows.append((f"resident memory at {large:,} devices", f"{r['rss_mb'][large]:.0f} MB",
                 "at most 200 MB", r["rss_mb"][large] <= 200))
    rows.append((f"start-up to READY at {large:,} devices", f"{r['ready_s'][large]:.2f} s",
                 "under 2 s", r["ready_s"][large] < 2))
    import cluster

    rows += cluster.targets(r["cluster"])
    return [f"| {m} | {v} | {t} | {'met' if ok else '**missed**'} |" for m, v, t, ok in rows]


def history_lines(push: dict) -> list[str]:
    """The push history's part of the page: the same API load with and without it."""
    ratio, p99 = history_cost(push)
    on, off = push["api"], push["api_off"]
    return [
        "The push history's cost: the same API load, in the same rounds, on a second daemon",
        "with `[storage] push_history_max = 0` (no record kept) beside the one recording every",
        f"device's push (default settings; {push['records']:,} records written in the run);",
        "at 100 calls/s each round paces both in turn and each side's median round by p99",
        "counts.",
        "Targets: at least 0.9 of the throughput without it; at most 2 ms added at p99.",
        "",
        "| measure | with history | without | ratio / added |",
        "| --- | ---: | ---: | ---: |",
        f"| API calls/s ({on['concurrency']} in flight) | {on['rps']:,.0f} | {off['rps']:,.0f} "
        f"| **{ratio:.3f}** |",
        f"| p50 / p99 at that load | {on['p50_ms']:.1f} / {on['p99_ms']:.1f} ms | "
        f"{off['p50_ms']:.1f} / {off['p99_ms']:.1f} ms | {on['p99_ms'] - off['p99_ms']:+.1f} ms |",
        f"| p50 / p99 at 100 calls/s | {push['paced_on']['p50_ms']:.1f} / "
        f"{push['paced_on']['p99_ms']:.1f} ms | {push['paced_off']['p50_ms']:.1f} / "
        f"{push['paced_off']['p99_ms']:.1f} ms | **{p99:+.1f} ms** |",
        f"| errors | {on['errors'] + push['paced_on']['errors']} | "
        f"{off['errors'] + push['paced_off']['errors']} | |",
    ]


def cluster_lines(r: dict) -> list[str]:
    import cluster

    return cluster.lines(r["cluster"], r["seconds"], cluster.ROUNDS[r["quick"]])


def write_markdown(r: dict, out: Path) -> None:
    small, large = r["sizes"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run` (do not edit by hand). How to run, on a checkout after the",
        "README's install command:",
        "",
        "```sh",
        "bench/run            # the full run (about 10 minutes), rewrites this page",
        "bench/run --quick    # a smoke run (under a minute) that writes to a temp file",
        "bench/run --push     # only the push fan-out (about 3 minutes), printed, no page",
        "bench/run --cluster  # only PostgreSQL and several instances (about 4 minutes)",
        "```",
        "",
        "## Targets",
        "",
        "| measure | result | target | |",
        "| --- | --- | --- | --- |",
        *_targets(r),
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in r["machine"].items()),
        "",
        "## Report ingestion against the ceiling",
        "",
        "The ceiling is an empty quart-trio handler (200, no body) served by pnbridge's HTTP",
        "server (`daemon/http/worker.py`) with the same settings, in its own process: the most",
        "this stack does on this machine. All",
        "servers run at once and the load alternates between them, "
        f"{r['rounds']} round(s) of {r['seconds']} s each;",
        "the table shows each server's median round. pnbridge runs with `access_log = false`,",
        "`synchronous=FULL` and group commit: every answered report is durable. The load: Push",
        "Token Reporter requests, 90% repeats of known devices (unchanged), 5% changed tokens,",
        f"5% new devices, on databases of {small:,} and {large:,} devices.",
        "",
        "| load | req/s | ratio to ceiling | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, label in (("get", "GET query"), ("json", "POST JSON")):
        loads = r["loads"][kind]
        ceiling = loads["ceiling"]
        lines.append(f"| {label}, ceiling | {ceiling.rps:,.0f} | 1 | {ceiling.p50_ms:.1f} | "
                     f"{ceiling.p99_ms:.1f} | {ceiling.errors} |")
        for n in r["sizes"]:
            load = loads[n]
            lines.append(
                f"| {label}, {n:,} devices | {load.rps:,.0f} | **{load.rps / ceiling.rps:.2f}** | "
                f"{load.p50_ms:.1f} | {load.p99_ms:.1f} | {load.errors} |"
            )
    lines += [
        "",
        "p99 latency, large database over small: "
        + ", ".join(
            f"{label} {r['loads'][kind][large].p99_ms / r['loads'][kind][small].p99_ms:.2f}"
            for kind, label in (("get", "GET"), ("json", "POST JSON"))
        )
        + " (target: at most 1.5).",
        "",
        f"With more connections in flight (GET, {small:,} devices, the same rounds): at 32 a",
        "batch of the store holds nearly every request in flight, so the loop waits while it",
        "commits (see the findings below); with more, it has the next requests to read.",
        "",
        "| connections | ceiling req/s | pnbridge req/s | ratio to ceiling | pnbridge p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(f"| {c} | {loads['ceiling'].rps:,.0f} | {loads[small].rps:,.0f} | "
          f"**{loads[small].rps / loads['ceiling'].rps:.2f}** | {loads[small].p99_ms:.1f} |"
          for c, loads in r["concurrency"].items()),
        "",
        "## Push fan-out",
        "",
        "`NotifyIncomingCall` through `POST /api/v1/push` to users with 3 devices each, sent by the",
        "built-in pnmediator plugin (default settings) to a local stand-in for pnmediator that",
        "answers at once (bench/standin.py). The load is wrk (its best of 8, 16 and 32 calls in",
        "flight; an answer that is not 200 with every device `sent` counts as an error). The",
        "ceiling is a bare httpx client loop (bench/pushload.py, its best of 4, 8 and 32 pushes",
        "in flight) against the same stand-in. Each side's best concurrency is probed first,",
        f"then {r['rounds']} round(s) of {r['seconds']} s alternate between the two; the table",
        "shows each side's median round. The added latency is the API's answer time minus a",
        "bare push's, both paced by bench/pushload.py (100 calls/s, 300 pushes/s). Targets: at",
        "least 0.8 of the ceiling; at most 5 ms added at p99.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| ceiling: bare httpx pushes/s ({r['push']['bare']['concurrency']} in flight) | {r['push']['bare']['rps']:,.0f} |",
        f"| pnbridge pushes/s (3 per API call, {r['push']['api']['concurrency']} calls in flight) | {3 * r['push']['api']['rps']:,.0f} |",
        f"| API calls/s; p50 / p99 at that load | {r['push']['api']['rps']:,.0f}; {r['push']['api']['p50_ms']:.1f} / {r['push']['api']['p99_ms']:.1f} ms |",
        f"| ratio to ceiling | **{3 * r['push']['api']['rps'] / r['push']['bare']['rps']:.2f}** |",
        f"| API p50 / p99 at 100 calls/s | {r['push']['paced_api']['p50_ms']:.1f} / {r['push']['paced_api']['p99_ms']:.1f} ms |",
        f"| bare push p50 / p99 at 300 pushes/s | {r['push']['paced_bare']['p50_ms']:.1f} / {r['push']['paced_bare']['p99_ms']:.1f} ms |",
        f"| added by pnbridge, p50 / p99 | {r['push']['paced_api']['p50_ms'] - r['push']['paced_bare']['p50_ms']:.1f} / {r['push']['paced_api']['p99_ms'] - r['push']['paced_bare']['p99_ms']:.1f} ms |",
        f"| errors (API / bare) | {r['push']['api']['errors'] + r['push']['paced_api']['errors']} / {r['push']['bare']['errors'] + r['push']['paced_bare']['errors']} |",
        "",
        *history_lines(r["push"]),
        "",
        *cluster_lines(r),
        "",
        "## Delivery",
        "",
        "Events per second from the journal to a plugin, while the daemon drains a burst of",
        "registrations another process journaled; measured from the daemon's own",
        "`pnbridge_journal_pending_events` gauge. The no-op plugin's hooks do nothing (async);",
        "the built-in webhook plugin signs and posts each event, one at a time and in order, to",
        "a local receiver that answers 200 at once (the stand-in). Target: at least 2,000 to",
        "the no-op plugin.",
        "",
        "| plugin | events/s |",
        "| --- | ---: |",
        f"| no-op | {r['delivery_noop_eps']:,.0f} |",
        f"| webhook | {r['delivery_webhook_eps']:,.0f} |",
        "",
        "## Footprint",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| resident memory, idle (empty database) | {r['rss_idle_mb']:.0f} MB |",
        *(f"| resident memory after the load, {n:,} devices | {r['rss_mb'][n]:.0f} MB |" for n in r["sizes"]),
        *(f"| start-up to READY=1, {n:,} devices | {r['ready_s'][n]:.2f} s |" for n in r["sizes"]),
        *(f"| database size per device, {n:,} devices | {r['bytes_per_device'][n]:.0f} bytes |" for n in r["sizes"]),
        "",
    ]
    # What was found and changed, measured side by side at the time (kept by hand).
    lines.append((ROOT / "bench" / "findings.md").read_text())
    out.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, short loads")
    parser.add_argument("--out", type=Path, help="where to write the report")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--push", action="store_true",
                        help="only the push fan-out benchmark (full rounds), printed, no page")
    parser.add_argument("--cluster", action="store_true",
                        help="only PostgreSQL and several instances (bench/cluster.py), "
                        "printed, no page")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (Debian: apt-get install wrk)")
    if args.cluster:
        import cluster

        seconds, rounds = (2, 1) if args.quick else (5, cluster.ROUNDS[False])
        with tempfile.TemporaryDirectory(prefix="pnbridge-bench-") as tmp:
            found = cluster.run(Path(tmp), args.quick, seconds, rounds) | {"quick": args.quick}
        print("\n".join(cluster.lines(found, seconds, rounds)))
        print("\n".join(f"| {m} | {v} | {t} | {'met' if ok else '**missed**'} |"
                        for m, v, t, ok in cluster.targets(found)))
        print(json.dumps(found, indent=2))
        return
    if args.push:
        with tempfile.TemporaryDirectory(prefix="pnbridge-bench-") as tmp:
            push = push_fanout(Path(tmp), 2 if args.quick else 5, 1 if args.quick else 5,
                               1 if args.quick else 3)
        print("\n".join(history_lines(push)))
        print(json.dumps(push, indent=2))
        return
    out = args.out or (Path(tempfile.gettempdir()) / "pnbridge-benchmarks-quick.md"
                       if args.quick else ROOT / "docs" / "benchmarks.md")
    results = run(args.quick, out)
    print(out.read_text())
    print(f"written to {out}")
    if args.json:
        print(json.dumps(results, default=lambda o: o.__dict__, indent=2))


if __name__ == "__main__":
    main()
