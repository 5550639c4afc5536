"""Plugins: loading, settings, the plugins command, startup/shutdown, and the docs' example
plugin receiving every report made through the reporter routes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from configs import config_toml
from conftest import pnbridge
from plugintools import (
    DOCS,
    docs_example,
    install_plugins,
    json_lines,
    lines,
    wait_until,
    write_plugin,
)
from pnbridge import PluginContext
from pnbridge import __version__ as pnbridge_version
from prometheus_client.parser import text_string_to_metric_families


def plugins_config(directory: Path, enabled: list[str], **tables: dict) -> dict:
    return {"plugins": {"enabled": enabled, "paths": [str(directory)], **tables}}


async def test_hook_device_registered_docs_plugin_gets_every_report_in_order(
    start_daemon, tmp_path
):
    """The eventlog plugin, copied from docs/writing-plugins.md into a plugins directory,
    receives every registration and removal made through the reporter routes, in order."""
    write_plugin(tmp_path / "plugins", "eventlog", docs_example())
    out = tmp_path / "events.jsonl"
    daemon = await start_daemon(
        plugins_config(tmp_path / "plugins", ["eventlog"], eventlog={"path": str(out)})
    )
    c = daemon.client
    sent = [
        c.get("/token/", params={"username": "alice", "selector": "S1", "pushToken": "t1"}),
        c.post("/token", data={"username": "bob", "selector": "S2", "token_calls": "v1"}),
        c.post("/token/", json={"username": "alice", "selector": "S1", "pushToken": "t2"}),
        c.get("/token/", params={"username": "alice", "selector": "S1", "pushToken": "t2"}),
        c.get("/removeToken/", params={"selector": "S2"}),
        c.post("/token/", json={"username": "carol", "selector": "S3", "pushToken": "t3"}),
        c.post("/removeToken", data={"username": "alice", "pushToken": "t2"}),
    ]
    for request in sent:
        assert (await request).status_code == 200
    expected = [
        ("registered", "new", "S1"), ("registered", "new", "S2"),
        ("registered", "changed", "S1"), ("removed", "app", "S2"),
        ("registered", "new", "S3"), ("removed", "app", "S1"),
    ]
    await wait_until(lambda: len(lines(out)) >= len(expected))
    await trio.sleep(0.2)  # nothing more arrives
    got = json_lines(out)
    assert [(e["kind"], e["reason"], e["selector"]) for e in got] == expected
    assert [e["id"] for e in got] == [e.id for e in daemon.store().events()]
    changed = got[2]
    assert changed["before"]["token_msgs"] == "t1" and changed["after"]["token_msgs"] == "t2"


async def test_hook_device_removed_by_app_and_by_operator(start_daemon, tmp_path):
    """Removals reach the plugin with their reason, also those the CLI journals while the
    daemon runs (the dispatcher polls for them)."""
    write_plugin(tmp_path / "plugins", "eventlog", docs_example())
    out = tmp_path / "events.jsonl"
    daemon = await start_daemon(
        plugins_config(tmp_path / "plugins", ["eventlog"], eventlog={"path": str(out)})
    )
    for selector in ("S1", "S2"):
        r = await daemon.client.get(
            "/token/", params={"username": "u", "selector": selector, "pushToken": "t" + selector}
        )
        assert r.status_code == 200
    assert (await daemon.client.get("/removeToken/", params={"selector": "S1"})).status_code == 200
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{daemon.db_path}"\n')
    result = await trio.to_thread.run_sync(
        lambda: pnbridge("devices", "remove", "S2", "--config", str(config))
    )
    assert result.returncode == 0, result.stderr
    await wait_until(lambda: len(lines(out)) == 4)
    removals = [(e["selector"], e["reason"], e["before"]["username"])
                for e in json_lines(out) if e["kind"] == "removed"]
    assert removals == [("S1", "app", "u"), ("S2", "operator", "u")]


async def test_hook_startup_shutdown_order_and_nursery(start_daemon, tmp_path):
    """startup runs before any delivery with the typed settings and a nursery; shutdown runs
    after delivery stopped, in reverse order; background tasks are cancelled after it."""
    log = tmp_path / "log"
    install_plugins(tmp_path / "plugins", first="loading/labelled", second="loading/labelled")
    daemon = await start_daemon(plugins_config(
        tmp_path / "plugins", ["first", "second"],
        first={"log": str(log), "label": "one"},
        second={"log": str(log), "label": "two", "count": 2},
    ))
    await wait_until(lambda: lines(log).count("background") == 2)
    r = await daemon.client.get("/token/", params={"username": "u", "selector": "S",
                                                   "pushToken": "t"})
    assert r.status_code == 200
    await wait_until(lambda: lines(log).count("event") == 2)
    await daemon.client.aclose()  # no keep-alive connection for the server to wait for
    daemon.shutdown.set()
    await wait_until(lambda: lines(log).count("cancelled") == 2)
    got = lines(log)
    assert got[:2] == [
        "startup pnbridge_plugin_first one 1", "startup pnbridge_plugin_second two 2",
    ]
    assert got[2:6] == ["background", "background", "event", "event"]
    assert got[6:] == [
        "shutdown pnbridge_plugin_second", "shutdown pnbridge_plugin_first",
        "cancelled", "cancelled",
    ]


def test_startup_failure_stops_serve_and_shuts_down_started_plugins(tmp_path):
    log = tmp_path / "log"
    install_plugins(tmp_path / "plugins", "loading/fine", "loading/boom")
    config = tmp_path / "pnbridge.toml"
    config.write_text(config_toml(tmp_path, {"plugins": {
        "enabled": ["fine", "boom"], "paths": [str(tmp_path / "plugins")],
        "fine": {"log": str(log)}}}))
    result = pnbridge("serve", "--config", str(config))
    assert result.returncode == 1
    assert "plugin boom: startup failed: RuntimeError: no connection to the CRM" in result.stderr
    assert lines(log) == ["startup", "shutdown"]


def test_hook_settings_class_errors_name_the_key(tmp_path):
    """check-config and serve check every plugin table against its settings class, and the
    enabled names against the plugins found; each error names its key."""
    write_plugin(tmp_path / "plugins", "eventlog", docs_example())
    install_plugins(tmp_path / "plugins", "loading/plain")
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'''
[storage]
path = "{tmp_path / 'db'}"
[plugins]
enabled = ["eventlog", "ghost", "plain"]
paths = ["{tmp_path / 'plugins'}", "{tmp_path / 'missing'}"]
[plugins.eventlog]
path = 3
colour = "red"
[plugins.eventlog.delivery]
timeout = 0
max_attempts = "many"
[plugins.plain]
anything = 1
[plugins.nosuch]
x = 1
''')
    for command in ("check-config", "serve"):
        result = pnbridge(command, "--config", str(config))
        assert result.returncode == 1, result.stderr
        errors = result.stderr
        assert "plugins.eventlog.path: expected a string, got an integer (3)" in errors
        assert "plugins.eventlog.colour: unknown key (known keys: fsync, path)" in errors
        assert "plugins.eventlog.delivery.timeout: must be greater than 0" in errors
        assert "plugins.eventlog.delivery.max_attempts: expected an integer" in errors
        assert "plugins.plain.anything: unknown key (known keys: none)" in errors
        assert re.search(r"plugins.enabled: no plugin named ghost \(found: [^)\n]*"
                         r"eventlog, plain\b", errors)  # and the built-ins
        assert "plugins.nosuch: no plugin named nosuch" in errors
        assert f"plugins.paths[1]: {tmp_path / 'missing'} is not a directory" in errors
    config.write_text(f'''
[plugins]
enabled = ["eventlog"]
paths = ["{tmp_path / 'plugins'}"]
''')
    result = pnbridge("check-config", "--config", str(config))
    assert result.returncode == 1
    assert "plugins.eventlog.path: required key is missing" in result.stderr
    config.write_text(config.read_text() + '[plugins.eventlog]\npath = "/tmp/x"\n')
    result = pnbridge("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr


def fake_distribution(site: Path) -> None:
    """An installed distribution with a ``pnbridge`` entry point, as pip would leave it."""
    write_plugin(site, "pnbridge_eventlog", docs_example())
    info = site / "pnbridge_eventlog-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pnbridge-eventlog\nVersion: 1.0.0\n"
    )
    (info / "entry_points.txt").write_text("[pnbridge]\neventlog = pnbridge_eventlog\n")


def test_plugins_command_lists_every_plugin(tmp_path):
    """Every plugin found (plugins directory, entry point), enabled or not, with its hooks;
    a plugin that cannot load is listed with its error, and is an error once enabled."""
    directory = install_plugins(tmp_path / "plugins", "recorder", "loading/broken",
                                "loading/typo", "loading/_helper")
    fake_distribution(tmp_path / "site")
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[plugins]\nenabled = ["eventlog"]\npaths = ["{directory}"]\n'
                      '[plugins.eventlog]\npath = "/tmp/events.jsonl"\n')
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    result = pnbridge("plugins", "--json", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    found = {p["name"]: p for p in json.loads(result.stdout)}
    builtins = {name for name, p in found.items() if p["source"] == "built-in"}
    assert builtins >= {"auditlog", "webhook", "pnmediator"}
    assert not any(found[name]["enabled"] for name in builtins)
    assert set(found) - builtins == {"eventlog", "recorder", "broken", "typo"}
    assert found["pnmediator"]["error"] is None
    assert "send_push" in found["pnmediator"]["hooks"]
    assert found["eventlog"]["enabled"] is True
    assert found["eventlog"]["source"].startswith("entry point pnbridge_eventlog")
    assert "pnbridge-eventlog 1.0.0" in found["eventlog"]["source"]
    assert found["eventlog"]["hooks"] == [
        "device_registered", "device_removed", "settings_class", "startup",
    ]
    assert found["recorder"]["enabled"] is False
    assert found["recorder"]["source"] == str(directory / "recorder.py")
    assert "needs the requests module" in found["broken"]["error"]
    assert found["typo"]["error"] == "implements unknown hook(s): device_registred"
    text = pnbridge("plugins", "--config", str(config), env=env).stdout.splitlines()
    assert text[0].split() == ["NAME", "ENABLED", "HOOKS", "SOURCE"]
    assert any(line.split()[:3] == ["eventlog", "yes", "device_registered,"] for line in text)
    # The entry-point plugin loads for real; enabling a broken one is an error.
    assert pnbridge("check-config", "--config", str(config), env=env).returncode == 0
    config.write_text(f'[plugins]\nenabled = ["typo", "broken"]\npaths = ["{directory}"]\n')
    result = pnbridge("check-config", "--config", str(config), env=env)
    assert result.returncode == 1
    assert "plugins.enabled: plugin typo implements unknown hook(s): device_registred" \
        in result.stderr
    assert "plugins.enabled: plugin broken cannot be loaded: ImportError: " in result.stderr


def test_no_plugins_by_default():
    result = pnbridge("plugins", "--json")
    assert result.returncode == 0, result.stderr
    assert all(not p["enabled"] for p in json.loads(result.stdout))


def test_docs_testing_example_runs(tmp_path):
    """The unit test shown under "Testing it" in docs/writing-plugins.md passes against the
    docs' plugin installed as the module pnbridge_eventlog."""
    write_plugin(tmp_path, "pnbridge_eventlog", docs_example())
    section = (DOCS / "writing-plugins.md").read_text().split("## Testing it", 1)[1]
    (tmp_path / "test_example.py").write_text(re.search(r"```python\n(.*?)```", section, re.S)[1])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "appends_event",
         "test_example.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


async def test_hook_app_context_per_instance(start_daemon, tmp_path, caplog):
    """Each instance of a plugin gets its own ``app``: its name, settings, logger, state,
    nursery and metrics (in the daemon's /metrics, labelled with the instance's name);
    ``[plugins.NAME] plugin`` runs a second instance of the same plugin file."""
    install_plugins(tmp_path / "plugins", "context_probe")
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    caplog.set_level("INFO", "pnbridge.plugins")
    daemon = await start_daemon(plugins_config(
        tmp_path / "plugins", ["context_probe", "second"],
        context_probe={"path": str(one)},
        second={"plugin": "context_probe", "path": str(two)},
    ))
    for selector in ("S1", "S2"):
        r = await daemon.client.get("/token/", params={
            "username": "u", "selector": selector, "pushToken": "t" + selector})
        assert r.status_code == 200
    assert (await daemon.client.get("/removeToken/", params={"selector": "S1"})).status_code \
        == 200
    await wait_until(lambda: len(lines(one)) == len(lines(two)) == 3)
    for path, name in ((one, "context_probe"), (two, "second")):
        assert [(e["name"], e["plugin"], e["seen"], e["ticks"], e["selector"])
                for e in json_lines(path)] == [
            (name, "context_probe", n, 1, s) for n, s in ((1, "S1"), (2, "S2"), (3, "S1"))
        ]
    started = {(r.name, r.getMessage()) for r in caplog.records if "started" in r.getMessage()}
    assert started == {
        ("pnbridge.plugins.context_probe", "started context_probe (plugin context_probe, "
         f"pnbridge {pnbridge_version})"),
        ("pnbridge.plugins.second", f"started second (plugin context_probe, pnbridge "
         f"{pnbridge_version})"),
    }
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families((await daemon.client.get("/metrics")).text)
        for sample in family.samples if sample.name.startswith("pnbridge_plugin_context_probe")
    }
    for name in ("context_probe", "second"):
        for kind, count in (("registered", 2), ("removed", 1)):
            key = ("pnbridge_plugin_context_probe_events_total",
                   (("kind", kind), ("plugin", name)))
            assert samples[key] == count
        assert samples["pnbridge_plugin_context_probe_seen", (("plugin", name),)] == 3


async def test_old_style_plugin_without_app_still_works(start_daemon, tmp_path):
    """A plugin written before hooks had ``app`` (settings in a module global, hooks that
    take only ``event``) gets its events as before."""
    install_plugins(tmp_path / "plugins", "old_style")
    out = tmp_path / "old.txt"
    daemon = await start_daemon(
        plugins_config(tmp_path / "plugins", ["old_style"], old_style={"path": str(out)})
    )
    r = await daemon.client.get("/token/", params={"username": "u", "selector": "S1",
                                                   "pushToken": "t"})
    assert r.status_code == 200
    assert (await daemon.client.get("/removeToken/", params={"selector": "S1"})).status_code \
        == 200
    await wait_until(lambda: len(lines(out)) == 2)
    assert lines(out) == ["registered S1", "removed S1"]


def test_instances_in_check_config_and_plugins_command(tmp_path):
    """``[plugins.NAME] plugin`` must name a plugin found, and an instance's name must not be
    another plugin's; the instance's settings are checked as the plugin's; ``pnbridge
    plugins`` lists the instance with the plugin's hooks."""
    config = tmp_path / "pnbridge.toml"
    config.write_text('''
[plugins]
enabled = ["crm", "auditlog"]
[plugins.crm]
plugin = "nosuch"
[plugins.auditlog]
plugin = "webhook"
''')
    result = pnbridge("check-config", "--config", str(config))
    assert result.returncode == 1
    assert "plugins.crm.plugin: no plugin named 'nosuch' (found: " in result.stderr
    assert ("plugins.auditlog.plugin: auditlog is a plugin's own name; give the instance of "
            "webhook another") in result.stderr
    config.write_text('''
[plugins]
enabled = ["crm"]
[plugins.crm]
plugin = "webhook"
urls = ["http://127.0.0.1:9/x"]
''')
    result = pnbridge("check-config", "--config", str(config))
    assert result.returncode == 1
    assert "plugins.crm.secret: required key is missing" in result.stderr
    config.write_text(config.read_text() + 'secret = "s"\n')
    assert pnbridge("check-config", "--config", str(config)).returncode == 0
    result = pnbridge("plugins", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    found = {p["name"]: p for p in json.loads(result.stdout)}
    assert (found["crm"]["enabled"], found["crm"]["source"], found["crm"]["hooks"]) == \
        (True, "instance of webhook", found["webhook"]["hooks"])
    assert found["webhook"]["enabled"] is False


def test_context_settings_and_nursery_are_the_instances_own():
    """``app.settings(cls)`` gives only the instance's own settings; ``app.nursery`` exists
    only while the plugin runs."""
    @dataclass
    class Mine:
        path: str

    @dataclass
    class Other:
        path: str

    app = PluginContext("eventlog", Mine("x"))
    assert app.settings(Mine) == Mine("x") and app.plugin == "eventlog"
    with pytest.raises(LookupError, match="Other is not the settings_class of plugin eventlog"):
        app.settings(Other)
    with pytest.raises(RuntimeError, match=r"app\.nursery exists from startup to shutdown"):
        app.nursery  # noqa: B018


def entry_point_plugin(site: Path, name: str) -> dict[str, str]:
    """The test plugin ``tests/plugins/NAME.py`` installed in ``site`` as the distribution
    pnbridge-NAME with a ``pnbridge`` entry point; the environment to run pnbridge with."""
    install_plugins(site, name)
    info = site / f"pnbridge_{name}-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: pnbridge-{name}\nVersion: 1.0.0\n"
    )
    (info / "entry_points.txt").write_text(f"[pnbridge]\n{name} = {name}\n")
    return {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}


def test_hook_register_commands_adds_a_plugins_command(tmp_path):
    """An installed plugin's ``register_commands`` adds ``pnbridge greet``, which reads its
    instances' settings from ``--config``; it cannot replace a command of pnbridge's own;
    the command loads (``--help``) when no config can be read, and then fails naming it."""
    env = entry_point_plugin(tmp_path / "site", "greeter")
    config = tmp_path / "pnbridge.toml"
    config.write_text('[plugins]\nenabled = ["greeter", "polite"]\n'
                      '[plugins.polite]\nplugin = "greeter"\ngreeting = "good day"\n')
    result = pnbridge("greet", "--config", str(config), "Alice", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "INSTANCE  SAYS", "greeter   hello, Alice", "polite    good day, Alice",
    ]
    assert ("pnbridge: warning: plugin greeter: a command serve exists already; the "
            "plugin's is left out") in result.stderr
    listed = pnbridge("--help", env=env)
    assert re.search(r"^  greet +Greet WHO", listed.stdout, re.M)
    assert re.search(r"^  audit +Read the audit log", listed.stdout, re.M)  # auditlog's
    assert "Run the daemon" in pnbridge("serve", "--help", env=env).stdout
    missing = {**env, "PNBRIDGE_CONFIG": str(tmp_path / "nowhere.toml")}
    help_text = pnbridge("greet", "--help", env=missing)
    assert help_text.returncode == 0 and "--config" in help_text.stdout
    result = pnbridge("greet", "Bob", env=missing)
    assert result.returncode == 1
    assert f"pnbridge: error: {tmp_path / 'nowhere.toml'}: cannot read: No such file" \
        in result.stderr
    config.write_text('[plugins]\nenabled = []\n')
    result = pnbridge("greet", "--config", str(config), "Bob", env=env)
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        1, "pnbridge: the greeter plugin is not enabled in this config ([plugins] enabled)")


def test_plugins_directory_file_adds_no_command(tmp_path):
    """A plugin in a ``[plugins] paths`` directory cannot add commands (the directories are
    in the config, read once a command runs): its command is unknown."""
    install_plugins(tmp_path / "plugins", "greeter")
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[plugins]\nenabled = ["greeter"]\npaths = ["{tmp_path / "plugins"}"]\n')
    result = pnbridge("greet", "--config", str(config), "Alice")
    assert result.returncode == 2
    assert "No such command 'greet'" in result.stderr


def test_context_metrics_made_once_per_name():
    """Two instances of a plugin asking for one metric share it, each with its own
    ``plugin`` label; asking for it again as another kind or with other labels is an error
    naming what it is."""
    from pnbridge.delivery.context import PluginRegistry

    registry = PluginRegistry()
    one = PluginContext("one", plugin="probe", registry=registry)
    two = PluginContext("two", plugin="probe", registry=registry)
    one.metrics.counter("sent", "Sent.", ["to"]).labels("a").inc()
    two.metrics.counter("sent", "Sent.", ["to"]).labels("a").inc(2)
    one.metrics.counter("sent", "Sent.", ["to"]).labels("a").inc()  # a restart asks again
    assert registry.get_sample_value(
        "pnbridge_plugin_probe_sent_total", {"plugin": "one", "to": "a"}) == 2
    assert registry.get_sample_value(
        "pnbridge_plugin_probe_sent_total", {"plugin": "two", "to": "a"}) == 2
    with pytest.raises(ValueError, match="pnbridge_plugin_probe_sent is a counter labelled "
                                         "plugin, to"):
        two.metrics.gauge("sent", "Sent.")
