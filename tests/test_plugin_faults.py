"""Plugins that misbehave: raise at import, at startup, in a hook, hang, return garbage.
Each gets a clear log line; the other plugins and the daemon go on."""

from __future__ import annotations

import logging

from conftest import cli, pnbridge
from plugintools import install_plugins, records, wait_until
from pnbridge.delivery import pluginhost
from reports import report

KEY = "plugin-faults-key-000000"

BAD = ["import_boom", "start_boom", "start_hang", "hook_raises", "hook_blocks", "garbage"]


def plugins(tmp_path, enabled: list[str], **more) -> dict:
    install_plugins(tmp_path / "plugins", "recorder", *(f"faults/{name}" for name in BAD),
                    hook_hangs="delivery/hang")
    fast = {"timeout": 0.3, "max_attempts": 2, "backoff": 0.05, "max_backoff": 0.1}
    return {"plugins": {
        "enabled": ["recorder", *enabled], "paths": [str(tmp_path / "plugins")],
        "recorder": {"path": str(tmp_path / "recorded")},
        **{name: {"delivery": fast} for name in enabled}, **more,
    }}


async def test_optional_plugins_that_cannot_start_are_left_out(start_daemon, tmp_path,
                                                               caplog, monkeypatch):
    monkeypatch.setattr(pluginhost, "STARTUP_TIMEOUT", 0.3)
    optional = ["import_boom", "start_boom", "start_hang"]
    daemon = await start_daemon(plugins(tmp_path, optional, optional=optional))
    await report(daemon, "S1", token="tok-S1", username="u1", pushappid="app.id")
    await wait_until(lambda: len(records(tmp_path / "recorded")) == 1)
    assert (await daemon.client.get("/readyz")).status_code == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(m.startswith("plugin import_boom cannot be loaded: RuntimeError: missing "
                            "dependency") and "plugins.optional" in m for m in errors), errors
    assert "plugin start_boom: startup failed: ConnectionError: no CRM; running without it " \
           "(plugins.optional)" in errors
    assert any(m.startswith("plugin start_hang: startup failed: took more than 0.3s")
               for m in errors), errors


def test_required_plugins_that_cannot_start_stop_startup_with_their_name(tmp_path):
    install_plugins(tmp_path / "plugins", "faults/import_boom")
    config = tmp_path / "pnbridge.toml"
    body = (f'[storage]\npath = "{tmp_path / "db"}"\n[plugins]\n'
            f'paths = ["{tmp_path / "plugins"}"]\n')
    config.write_text(body + 'enabled = ["import_boom"]\n')
    result = pnbridge("serve", "--config", str(config))
    assert result.returncode == 1
    assert "plugins.enabled: plugin import_boom cannot be loaded: RuntimeError: missing " \
           "dependency" in result.stderr
    config.write_text(body + 'enabled = []\noptional = ["import_boom"]\n')
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 1
    assert "plugins.optional: import_boom is not in plugins.enabled" in result.stdout + \
        result.stderr


async def test_misbehaving_hooks_hold_back_only_themselves(start_daemon, tmp_path, caplog):
    bad = ["hook_raises", "hook_hangs", "hook_blocks", "garbage"]
    config = plugins(tmp_path, bad)
    config["api"] = {"keys": [KEY]}
    daemon = await start_daemon(config)
    for i in range(5):
        await report(daemon, f"S{i}", token=f"tok-S{i}", username="u1", pushappid="app.id")
    await wait_until(lambda: len(records(tmp_path / "recorded")) == 5, timeout=5)
    answer = await daemon.client.post(
        "/api/v1/push", json={"username": "u1", "verb": "NotifyTextMessage"},
        headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200
    assert {d["reason"] for d in answer.json()["devices"]} == \
        {"the transport returned int, not a PushResult"}
    store = daemon.store()
    await wait_until(lambda: len(store.failures()) == 5 * 3, timeout=20)
    assert {f.plugin for f in store.failures()} == {"hook_raises", "hook_hangs", "hook_blocks"}
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert "plugin hook_raises: event" in warnings and "ValueError: bad event" in warnings
    assert "plugin hook_hangs: event" in warnings and "timed out after 0.3s" in warnings
    assert (await daemon.client.get("/healthz")).status_code == 200
