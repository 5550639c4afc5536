"""Several `pnbridge serve` on one host: one port shared with ``[server] reuse_port``
(the kernel spreads the connections), one store (an SQLite file, or PostgreSQL), each
instance its own admin port; check-config's warning that rate limits are per instance."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from configs import free_port
from conftest import cli, pnbridge

REPORTS = 200


def config(tmp_path, port: int, admin: int, reuse_port: bool = True, agi: int = 0,
           engine=None) -> dict:
    tables = {"server": {"listen": [f"127.0.0.1:{port}"], "admin_listen": [f"127.0.0.1:{admin}"],
                         "reuse_port": reuse_port},
              "storage": {"path": str(tmp_path / "shared.db")},
              "agi": {"listen": [f"127.0.0.1:{agi}"] if agi else []}}
    return engine.tables(tables) if engine else tables


def stored(tmp_path) -> list[str]:
    result = pnbridge("devices", "list", "--config", str(tmp_path / "pnbridge.toml"))
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines()[1:]]


def reports_stored(admin: int) -> float:
    """The reports the instance answered (all of them 200 here), from its own /metrics."""
    text = httpx.get(f"http://127.0.0.1:{admin}/metrics").text
    return sum(float(value) for value in re.findall(
        r'^pnbridge_reports_total\{kind="token"[^}]*\} (\S+)', text, re.M))


def send(port: int, i: int) -> int:
    """One report on a connection of its own (so that the kernel chooses anew)."""
    params = {"username": f"u{i}", "selector": f"S:{i}", "token_msgs": f"tok{i}"}
    return httpx.get(f"http://127.0.0.1:{port}/token", params=params, timeout=30).status_code


def test_two_instances_share_a_port_and_a_database(spawn, tmp_path, engine):
    port, agi, admins = free_port(), free_port(), (free_port(), free_port())
    first = spawn(config(tmp_path, port, admins[0], agi=agi, engine=engine))
    first.url()  # listening: it has read its config file, which the next spawn rewrites
    second = spawn(config(tmp_path, port, admins[1], agi=agi, engine=engine))
    second.url()
    for process in (first, second):
        process.wait_for(rf"FastAGI on 127\.0\.0\.1:{agi}")
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: send(port, i), range(REPORTS)))
    assert statuses == [200] * REPORTS
    served = [reports_stored(admin) for admin in admins]
    assert all(count > 0 for count in served), served  # the kernel spread them
    assert sum(served) == REPORTS
    assert first.stop() == 0 and second.stop() == 0
    assert sorted(stored(tmp_path)) == sorted(f"S:{i}" for i in range(REPORTS))


def test_without_reuse_port_a_second_instance_is_refused(spawn, tmp_path):
    port = free_port()
    first = spawn(config(tmp_path, port, free_port(), reuse_port=False))
    first.url()
    second = spawn(config(tmp_path, port, free_port(), reuse_port=False))
    assert second.popen.wait(15) != 0
    second.wait_for(rf"cannot listen on 127\.0\.0\.1:{port}: Address already in use")
    assert send(port, 0) == 200  # the first goes on


def check_config(tmp_path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_check_config_warns_that_rate_limits_are_per_instance(tmp_path):
    warned = check_config(tmp_path, "[server]\nreuse_port = true\n")
    assert ("WARNING: [server] reuse_port: several instances likely, and the rate limits "
            "([reporter] client_rate, [reporter] username_rate, [api] key_rate) are per "
            "instance: N instances allow N times the rate (docs/cluster.md)") in warned
    assert "per instance" not in check_config(tmp_path, "[server]\nreuse_port = false\n")
    off = "[reporter]\nclient_rate = 0\nusername_rate = 0\n[api]\nkey_rate = 0\n"
    assert "per instance" not in check_config(tmp_path, "[server]\nreuse_port = true\n" + off)
    some = check_config(tmp_path, "[server]\nreuse_port = true\n[api]\nkey_rate = 0\n")
    assert "([reporter] client_rate, [reporter] username_rate) are per instance" in some
    shared = check_config(tmp_path, '[storage]\nurl = "postgresql://pnbridge@db.example/pnbridge"\n')
    assert "WARNING: [storage] url: several instances likely, and the rate limits" in shared


OPEN_AT_ONCE = """
import os, sys, time
from pnbridge.storage.sqlite.store import SQLiteStore
while not os.path.exists(sys.argv[2]):
    time.sleep(0.0005)
SQLiteStore(sys.argv[1]).close()
"""


def test_instances_starting_at_once_on_a_new_database_migrate_it_once(tmp_path):
    """Two processes create and migrate one SQLite file at the same moment (as
    `systemctl start pnbridge@a pnbridge@b` does): both open it."""
    for round in range(5):
        db, go = tmp_path / f"{round}.db", tmp_path / f"go{round}"
        children = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(db), str(go)],
                                     stderr=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(1)  # both started, waiting for the file
        go.touch()
        for child in children:
            assert child.wait(30) == 0, child.stderr.read() if child.stderr else ""
