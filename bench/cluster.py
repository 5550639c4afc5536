"""The benchmarks of several instances and of PostgreSQL (issue 17), side by side in one run:
ingestion on PostgreSQL against SQLite (one instance each); two instances against one on
each engine (``reuse_port`` on one port; SQLite: one file; PostgreSQL: one database), with
every 2xx answer checked durable after a kill -9; the push API's latency with the devices in
PostgreSQL against SQLite. Called by harness.py's ``run`` (and ``--cluster``)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import API_KEY, ROOT, Load, Server, free_port, median_load, pushload, run_wrk
from postgres import Postgres

# Every request a new device (its own username: no cap evicts it), so that each 2xx answer
# is a row to find afterwards; the 2xx answers counted.
NEW_LUA = """
local counter = 0
ok = 0
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
request = function()
  counter = counter + 1
  return wrk.format("GET", "/token/?username=w{tag}-" .. counter .. "&selector=W{tag}-" ..
    counter .. "&token_msgs={head}" .. counter .. "{tail}&appid_msgs=com.cloudsoftphone.app")
end
response = function(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("ok") end
  io.write("ok answers: " .. total .. "\\n")
end
"""
CONNECTIONS = 64  # for one instance and two alike: enough for two batches in flight
ENGINES = ("sqlite", "postgresql")
ROUNDS = {False: 3, True: 1}  # full run, quick run: fewer than harness.py's (time)


class Engine:
    """The ``[storage]`` table of one engine's database, and its rows counted."""

    def __init__(self, name: str, work: Path, pg: Postgres, label: str):
        self.name, self.path = name, work / f"{label}.db"
        self.url = pg.create_database(label) if name == "postgresql" else None

    def storage(self) -> str:
        url = f'url = "{self.url}"\n' if self.url else ""
        return f"{url}max_devices_per_user = 0\n"

    def schema(self) -> None:
        from pnbridge.config.tables import parse_config
        from pnbridge.storage.engines import engine

        table = {"path": str(self.path), **({"url": self.url} if self.url else {})}
        engine(parse_config({"storage": table}).storage).open().close()

    def execute(self, sql: str, rows: list[tuple] | None = None) -> list[tuple]:
        """``sql`` (``?`` placeholders) on a connection of its own, for each of ``rows``."""
        if self.url is None:
            with sqlite3.connect(self.path) as conn:
                if rows is not None:
                    conn.executemany(sql, rows)
                    return []
                return conn.execute(sql).fetchall()
        import psycopg
        with psycopg.connect(self.url) as conn:
            sql = sql.replace("?", "%s")
            if rows is not None:
                with conn.cursor() as cursor:
                    cursor.executemany(sql, rows)
                return []
            return conn.execute(sql).fetchall()

    def seed(self, devices: list[tuple]) -> None:
        """The schema, and ``devices`` (rows of the devices table)."""
        self.schema()
        self.execute("INSERT INTO devices VALUES (?,?,?,?,?,?,?,?,?,?)", devices)


def report_devices(n: int) -> list[tuple]:
    """The devices the report load knows (harness.LUA), as rows."""
    now = time.time()
    return [(f"S{i}", f"u{i}", None, None, harness.token(i), "com.cloudsoftphone.app", "{}",
             now, now, now) for i in range(n)]


def start(engine: Engine, work: Path, port: int | None = None, extra: str = "") -> Server:
    server = "reuse_port = true\n" if port else ""
    return harness.start_pnbridge(engine.path, work, extra, engine.storage(), port, server)


def new_devices(url: str, tag: str, seconds: float, work: Path) -> tuple[Load, int]:
    """NEW_LUA against ``url``: the load, and how many answers were 2xx."""
    script = work / f"new-{tag}.lua"
    script.write_text(NEW_LUA.format(tag=tag, head=harness.TOKEN_HEAD, tail=harness.TOKEN_TAIL))
    load = run_wrk(url, script, seconds, CONNECTIONS)
    return load, load.ok


def ingestion(work: Path, pg: Postgres, devices: int, seconds: float, rounds: int) -> dict:
    """(a) the report mix of harness.LUA on ``devices`` known devices, one instance on each
    engine, rounds alternating; each engine's median round."""
    servers = {}
    for name in ENGINES:
        engine = Engine(name, work, pg, f"ingest_{name}")
        engine.seed(report_devices(devices))
        servers[name] = start(engine, work)
    try:
        runs: dict[str, list[Load]] = {name: [] for name in servers}
        for server in servers.values():
            harness.wrk(server.url, "get", devices, 1, work, 0)  # warm-up
        for round_ in range(rounds):
            for name, server in servers.items():
                runs[name].append(harness.wrk(server.url, "get", devices, seconds, work,
                                              round_ + 1))
    finally:
        for server in servers.values():
            server.stop()
    return {name: median_load(loads).__dict__ for name, loads in runs.items()}


def instances(work: Path, pg: Postgres, seconds: float, rounds: int) -> dict:
    """(b) new-device reports to one instance and to two on one port (reuse_port), on each
    engine (each setup its own database), rounds alternating; then every instance killed
    (-9) and each 2xx answer looked for."""
    setups: dict[str, tuple[Engine, list[Server]]] = {}
    for name in ENGINES:
        for count in (1, 2):
            engine = Engine(name, work, pg, f"inst_{name}_{count}")
            engine.schema()
            port = free_port()
            setups[f"{name}/{count}"] = (engine, [start(engine, work, port)
                                                  for _ in range(count)])
    runs: dict[str, list[Load]] = {key: [] for key in setups}
    answered: dict[str, int] = dict.fromkeys(setups, 0)
    try:
        for key, (_, servers) in setups.items():
            load = new_devices(servers[0].url, f"{key.replace('/', '_')}_0", 1, work)
            answered[key] += load[1]
        for round_ in range(rounds):
            for key, (_, servers) in setups.items():
                load, ok = new_devices(servers[0].url, f"{key.replace('/', '_')}_{round_ + 1}",
                                       seconds, work)
                runs[key].append(load)
                answered[key] += ok
    finally:
        for _, servers in setups.values():
            for server in servers:
                server.popen.kill()  # kill -9: only what was committed remains
                server.popen.wait(30)
                if server.notify is not None:
                    server.notify.close()
    result = {}
    for key, (engine, _) in setups.items():
        stored = engine.execute("SELECT count(*) FROM devices WHERE selector LIKE 'W%'")[0][0]
        result[key] = {**median_load(runs[key]).__dict__, "answered": answered[key],
                       "stored": stored, "lost": max(0, answered[key] - stored),
                       "errors": sum(load.errors for load in runs[key])}
    return result


def push_latency(work: Path, pg: Postgres, seconds: float, rounds: int,
                 users: int = 1000) -> dict:
    """(c) NotifyIncomingCall at 100 calls/s through the push API to users with 3 devices
    each, the devices in SQLite or in PostgreSQL, to the pnmediator stand-in; rounds
    alternating, each engine's median round by p99."""
    now = time.time()
    devices = [(f"S{u}-{d}", f"u{u}", f"calls{u}x{d}", "com.cloudsoftphone.app.pushkit",
                f"msgs{u}x{d}", "com.cloudsoftphone.app", "{}", now, now, now)
               for u in range(users) for d in range(3)]
    port = free_port()
    standin = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin.py"), str(port)])
    harness.wait_listening(port)
    extra = (f'[api]\nkeys = ["{API_KEY}"]\nkey_rate = 0\n[plugins]\nenabled = ["pnmediator"]\n'
             f'[plugins.pnmediator]\nurl = "http://127.0.0.1:{port}/"\n')
    servers = {}
    try:
        for name in ENGINES:
            engine = Engine(name, work, pg, f"push_{name}")
            engine.seed(devices)
            servers[name] = start(engine, work, extra=extra)
        for server in servers.values():
            pushload("api", server.url, 1, users=users, rate=100)  # warm-up
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for _ in range(rounds):
            for name, server in servers.items():
                runs[name].append(pushload("api", server.url, seconds, users=users, rate=100))
    finally:
        for server in servers.values():
            server.stop()
        standin.terminate()
        standin.wait(10)
    return {name: {**sorted(found, key=lambda r: r["p99_ms"])[len(found) // 2],
                   "errors": sum(r["errors"] for r in found)}
            for name, found in runs.items()}


def run(work: Path, quick: bool, seconds: float, rounds: int) -> dict:
    """Every benchmark of this module, on a PostgreSQL server of its own."""
    pg = Postgres()
    try:
        return {
            "ingestion": ingestion(work, pg, 1_000 if quick else 10_000, seconds, rounds),
            "instances": instances(work, pg, seconds, rounds),
            "push": push_latency(work, pg, seconds, rounds),
            "postgresql": re.sub(r"\s+", " ", subprocess.run(
                [str(pg.bin / "postgres"), "--version"], capture_output=True,
                text=True).stdout.strip()),
        }
    finally:
        pg.stop()


def speedup(c: dict, name: str) -> float:
    return c["instances"][f"{name}/2"]["rps"] / c["instances"][f"{name}/1"]["rps"]


def push_added(c: dict) -> float:
    return c["push"]["postgresql"]["p99_ms"] - c["push"]["sqlite"]["p99_ms"]


def targets(c: dict) -> list[tuple[str, str, str, bool]]:
    """The target rows of issue 17: measure, result, target, met."""
    rows = []
    for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        ratio = speedup(c, name)
        rows.append((f"two instances over one, {label}", f"{ratio:.2f}", "at least 1.4",
                     ratio >= 1.4))
        lost = sum(c["instances"][f"{name}/{n}"]["lost"] for n in (1, 2))
        rows.append((f"2xx reports not stored after kill -9, {label}", f"{lost}", "0",
                     lost == 0))
    added = push_added(c)
    rows.append(("push, p99 added by PostgreSQL at 100 calls/s", f"{added:+.1f} ms",
                 "at most 5 ms", added <= 5))
    return rows


def lines(c: dict, seconds: float, rounds: int) -> list[str]:
    """The page's section."""
    ing, inst, push = c["ingestion"], c["instances"], c["push"]
    out = [
        "## PostgreSQL and several instances",
        "",
        f"PostgreSQL ({c['postgresql']}) is a server of the benchmark's own on this machine",
        "(bench/postgres.py: fsync and synchronous_commit on, 128 MB shared buffers), reached",
        "over loopback TCP; SQLite as elsewhere on this page. Everything shares the same two",
        "cores: wrk, every pnbridge instance and the PostgreSQL server. Rounds alternate",
        f"between the setups, {rounds} of {seconds} s; the tables show each setup's median round.",
        "The machine is shared: the numbers vary between runs by more than their last digit.",
        "",
        "Ingestion, one instance on each engine (the report mix above, GET, 32 connections,",
        f"{'1,000' if c.get('quick') else '10,000'} known devices):",
        "",
        "| engine | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {label} | {ing[name]['rps']:,.0f} | {ing[name]['p50_ms']:.1f} | "
          f"{ing[name]['p99_ms']:.1f} | {ing[name]['errors']} |"
          for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL"))),
        "",
        f"PostgreSQL over SQLite: **{ing['postgresql']['rps'] / ing['sqlite']['rps']:.2f}**.",
        "",
        "Two instances against one (`[server] reuse_port = true`, both on one port, the kernel",
        "spreading wrk's connections; SQLite: one file, PostgreSQL: one database). Every",
        f"request reports a new device ({CONNECTIONS} connections), so each 2xx answer is a row",
        "to find: after the last round every instance is killed (-9) and the rows counted.",
        "Target: two instances at least 1.4 times one, every 2xx stored. Two instances gain",
        "the second core for HTTP and JSON, not for the store: on SQLite their writers take",
        "the file's lock in turn; on PostgreSQL every transaction that journals holds the",
        "journal's lock to its commit (storage/postgresql/journal.py), so two writers commit",
        "one after the other, each waiting for its own fsync, with smaller groups than one.",
        "",
        "| engine, instances | req/s | p50 ms | p99 ms | errors | 2xx answers | stored | lost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        for n in (1, 2):
            r = inst[f"{name}/{n}"]
            out.append(f"| {label}, {n} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | "
                       f"{r['p99_ms']:.1f} | {r['errors']} | {r['answered']:,} | "
                       f"{r['stored']:,} | {r['lost']} |")
    out += [
        "",
        "Two over one: " + ", ".join(
            f"{label} **{speedup(c, name):.2f}**"
            for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL"))) + ".",
        "",
        "Push API latency with the devices in PostgreSQL against SQLite: `NotifyIncomingCall`",
        "at 100 calls/s (bench/pushload.py) to users with 3 devices each, through the",
        "pnmediator plugin to the stand-in; each engine's median round by p99. Target: at most",
        "5 ms added at p99.",
        "",
        "| engine | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {label} | {push[name]['p50_ms']:.1f} | {push[name]['p99_ms']:.1f} | "
          f"{push[name]['errors']} |"
          for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL"))),
        "",
        f"Added by PostgreSQL: p50 {push['postgresql']['p50_ms'] - push['sqlite']['p50_ms']:+.1f}"
        f" ms, p99 **{push_added(c):+.1f} ms**.",
    ]
    return out
