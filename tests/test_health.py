"""/healthz, /readyz, /metrics (on the reporter's listener or their own), the access log."""

from __future__ import annotations

import logging
import sqlite3

import httpx
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "QVBBOTEyMzQ1Njc4OTAxMjM0NTY3ODkw"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> dict:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    return samples(r.text)


def reports(page: dict, kind: str, outcome: str) -> float:
    return page.get(("pnbridge_reports_total", (("kind", kind), ("outcome", outcome))), 0.0)


async def test_metrics_parse_and_move_with_traffic(start_daemon):
    daemon = await start_daemon()
    client = daemon.client
    before = await scrape(client)
    assert before[("pnbridge_devices_stored", ())] == 0
    # Every metric the daemon exports is there from the start (families without samples too).
    names = {f.name for f in text_string_to_metric_families((await client.get("/metrics")).text)}
    assert names >= {
        "pnbridge_reports", "pnbridge_request_duration_seconds", "pnbridge_devices_stored",
        "pnbridge_journal_pending_events", "pnbridge_journal_oldest_pending_age_seconds",
        "pnbridge_deliveries", "pnbridge_pushes", "pnbridge_push_duration_seconds",
    }

    params = {"username": "alice", "selector": "S1", "token_msgs": TOKEN}
    for _ in range(2):
        assert (await client.get("/token/", params=params)).status_code == 200
    assert (await client.get("/token/", params={"username": "alice"})).status_code == 400
    page = await scrape(client)
    assert reports(page, "token", "created") == 1
    assert reports(page, "token", "unchanged") == 1
    assert reports(page, "token", "rejected") == 1
    assert page[("pnbridge_devices_stored", ())] == 1
    latency = ("pnbridge_request_duration_seconds_count", (("kind", "token"),))
    assert page[latency] - before.get(latency, 0) == 3

    assert (await client.post("/removeToken/", data={"selector": "S1"})).status_code == 200
    assert (await client.post("/removeToken/", data={"selector": "S9"})).status_code == 200
    page = await scrape(client)
    assert reports(page, "removal", "removed") == 1
    assert reports(page, "removal", "unknown") == 1
    assert page[("pnbridge_devices_stored", ())] == 0


async def test_health_and_readiness(start_daemon):
    daemon = await start_daemon({"storage": {"busy_timeout": 0.2}})
    client = daemon.client
    r = await client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")
    r = await client.get("/readyz")
    assert r.status_code == 200
    # The checks, then the facts: this instance, what it delivers, who holds each lease.
    assert r.text.startswith("database: ok\ninstance: ")
    assert "\ndelivers: none\nleases: maintenance here until " in r.text

    # Another process holds the write lock: the database cannot take a write, not ready.
    other = sqlite3.connect(daemon.db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.text.startswith("database: cannot write: the database is locked by another process")
    assert (await client.get("/healthz")).status_code == 200
    other.execute("ROLLBACK")
    other.close()
    assert (await client.get("/readyz")).status_code == 200


async def test_health_routes_win_over_a_catch_all_reporter_route(start_daemon):
    daemon = await start_daemon({"reporter": {"routes": [{"path": "/{selector}",
                                                          "kind": "removal"}]}})
    r = await daemon.client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")
    assert (await daemon.client.get("/metrics")).status_code == 200
    assert (await daemon.client.get("/S1")).status_code == 200


async def test_admin_listen_moves_health_and_metrics_off_the_public_listener(
    start_daemon, tmp_path
):
    admin_socket = tmp_path / "admin.sock"
    daemon = await start_daemon({"server": {"admin_listen": [f"unix:{admin_socket}"]}})
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await daemon.client.get(path)).status_code == 404
    params = {"username": "alice", "selector": "S1", "token_msgs": TOKEN}
    assert (await daemon.client.get("/token/", params=params)).status_code == 200

    transport = httpx.AsyncHTTPTransport(uds=str(admin_socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as admin:
        assert (await admin.get("/healthz")).status_code == 200
        assert (await admin.get("/readyz")).status_code == 200
        page = await scrape(admin)
        assert reports(page, "token", "created") == 1
        assert (await admin.get("/token/", params=params)).status_code == 404


async def test_access_log_has_context_and_never_a_whole_token(start_daemon, caplog):
    caplog.set_level(logging.INFO)
    daemon = await start_daemon()
    selector = "6f1a0c9b2d7e4f3a"
    params = {"username": "alice", "selector": selector, "token_msgs": TOKEN,
              "password": "hunter2"}
    assert (await daemon.client.get("/token/", params=params)).status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pnbridge.access"]
    assert line.startswith("GET route=/token/ status=200 selector=6f1a0c…3a username=alice ")
    assert " duration=" in line and "ms client=127.0.0.1" in line
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pnbridge"))
    assert TOKEN not in text and selector not in text and "hunter2" not in text


async def test_access_log_can_be_turned_off(start_daemon, caplog):
    caplog.set_level(logging.INFO)
    daemon = await start_daemon({"server": {"access_log": False}})
    assert (await daemon.client.get("/healthz")).status_code == 200
    assert not [r for r in caplog.records if r.name == "pnbridge.access"]


async def test_access_log_of_an_unmatched_path_never_holds_its_tail(start_daemon, caplog):
    """A path-style report sent to a route that is not configured: the token stays out."""
    caplog.set_level(logging.INFO)
    daemon = await start_daemon()
    r = await daemon.client.get(f"/pushToken/alice/SEL/{TOKEN}&appid=com.x")
    assert r.status_code == 404
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pnbridge.access"]
    assert line.startswith("GET route=/pushToken/… status=404")
    daemon_lines = [r.getMessage() for r in caplog.records if r.name.startswith("pnbridge")]
    assert TOKEN not in "\n".join(daemon_lines)
