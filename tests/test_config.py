"""Config loading and validation, and `pnbridge check-config`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import cli
from pnbridge.config.addresses import listen_problem
from pnbridge.config.tables import Config, load_config, parse_config
from pnbridge.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config" / "pnbridge.toml"


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.errors


def test_no_file_means_embedded_defaults():
    config = load_config(None)
    assert config == Config()
    assert config.server.listen == ["127.0.0.1:8080"]
    assert config.storage.path == "pnbridge.db"
    assert config.storage.push_history_seconds == 7 * 86400
    assert config.storage.push_history_max == 1_000_000


def test_example_config_is_valid_and_shows_every_default():
    assert parse_config(tomllib.loads(EXAMPLE.read_text())) == Config()
    result = cli("check-config", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"server": {"lisen": ["x"]}}, "server.lisen: unknown key"),
        ({"bogus": {}}, "bogus: unknown key"),
        ({"server": {"listen": "127.0.0.1:80"}}, "server.listen: expected a list"),
        ({"server": {"listen": [80]}}, "server.listen[0]: expected a string"),
        ({"server": {"grace_period": "10"}}, "server.grace_period: expected a number"),
        ({"server": {"grace_period": 0}}, "server.grace_period: must be greater than 0"),
        ({"server": {"log_level": "loud"}}, "server.log_level: expected one of"),
        ({"storage": {"path": 1}}, "storage.path: expected a string"),
        ({"reporter": {"default_routes": "yes"}}, "reporter.default_routes: expected true or false"),
        ({"reporter": {"max_body": 10}}, "reporter.max_body: must be between"),
        ({"reporter": {"routes": [{"path": "/x"}]}}, "reporter.routes[0].kind: required key is missing"),
        ({"reporter": {"routes": [{"path": "x", "kind": "token"}]}}, "reporter.routes[0].path: a route path starts with '/'"),
        ({"reporter": {"routes": [{"path": "/x?u={username}", "kind": "token"}]}}, "reporter.routes[0].path: a route path has no '?'"),
        ({"reporter": {"routes": [{"path": "/x/{username", "kind": "token"}]}}, "unbalanced brace"),
        ({"reporter": {"routes": [{"path": "/{a}/{a}", "kind": "token"}]}}, "appears twice"),
        ({"reporter": {"routes": [{"path": "/x", "kind": "push"}]}}, "reporter.routes[0].kind: expected one of 'token', 'removal'"),
        ({"reporter": {"routes": [{"path": "/x", "kind": "token", "methods": ["GET", "FETCH"]}]}}, "reporter.routes[0].methods: unknown method(s) FETCH"),
        ({"reporter": {"fields": {"tokn": ["x"]}}}, "reporter.fields: tokn: not a field"),
        ({"reporter": {"fields": {"username": ["x"], "selector": ["X"]}}}, "alias 'X' already means username"),
        ({"auth": {"reporter": "magic"}}, "auth.reporter: expected one of 'digest', 'basic', 'secret', 'hook', 'none'"),
        ({"auth": {"reporter": "digest"}}, "auth.users_file: the digest and basic modes need a users file"),
        ({"reporter": {"routes": [{"path": "/x", "kind": "token", "auth": "basic"}]}}, "auth.users_file: the digest and basic"),
        ({"auth": {"reporter": "secret"}}, "auth.secret: the secret mode needs a secret"),
        ({"auth": {"secret": "short"}}, "auth.secret: must be at least 16 characters"),
        ({"auth": {"reporter": "secret", "secret": "s" * 16, "secret_param": "key"}}, "auth.secret_param: 'key' is not a credential field"),
        ({"auth": {"realm": 'a"b'}}, "auth.realm: must be"),
        ({"auth": {"digest_algorithms": ["MD5", "MD5"]}}, "auth.digest_algorithms: one or both"),
        ({"auth": {"digest_algorithms": ["SHA-1"]}}, "auth.digest_algorithms[0]: expected one of 'MD5', 'SHA-256'"),
        ({"server": {"trusted_proxies": ["10.0.0.0/33"]}}, "server.trusted_proxies: not an address or CIDR: '10.0.0.0/33'"),
        ({"server": {"max_headers": 2}}, "server.max_headers: must be between 8 and 1000"),
        ({"storage": {"max_devices_per_user": -1}}, "storage.max_devices_per_user: must be 0 or more"),
        ({"storage": {"push_history": "a week"}}, "storage.push_history: 'a week' is not a duration"),
        ({"storage": {"push_history": "0s"}}, "storage.push_history: '0s' must be longer than 0"),
        ({"storage": {"push_history_max": -1}}, "storage.push_history_max: must be 0 or more"),
        ({"reporter": {"client_rate": -1}}, "reporter.client_rate: must be 0 or more"),
    ],
)
def test_bad_config_names_the_key(data, expected):
    assert any(expected in e for e in errors_of(data)), errors_of(data)


def test_every_error_is_reported_at_once():
    errors = errors_of({"server": {"listen": ["nope"], "x": 1}, "storage": {"path": 5}})
    assert len(errors) == 3


@pytest.mark.parametrize(
    "address", ["127.0.0.1:8080", "0.0.0.0:0", "[::1]:8080", "[::]:443", "localhost:80",
                "pbx.example.com:8080", "unix:/run/pnbridge/pnbridge.sock", "fd://3"],
)
def test_listen_accepts(address):
    assert listen_problem(address) is None


@pytest.mark.parametrize(
    ("address", "problem"),
    [("::1:8080", "IPv6 address in brackets"), ("8080", "not host:port"),
     ("host:99999", "port must be"), ("fd://x", "file descriptor number"),
     ("unix:", "socket path"), ("http://host:80", "not host:port")],
)
def test_listen_rejects(address, problem):
    assert problem in listen_problem(address)
    assert any(problem in e for e in errors_of({"server": {"listen": [address]}}))


def test_check_config_prints_every_error_and_exits_1(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nlisten = ["::1:80"]\ncolour = "blue"\n[storage]\npath = 3\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert any("server.listen: " in line for line in lines)
    assert any("server.colour: unknown key" in line for line in lines)
    assert any("storage.path: expected a string" in line for line in lines)


def test_check_config_reports_toml_syntax_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[server\n")
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1 and "not valid TOML" in result.stderr and "line 1" in result.stderr
    result = cli("check-config", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_config_from_environment(tmp_path):
    path = tmp_path / "env.toml"
    path.write_text("[storage]\npath = 1\n")
    result = cli("check-config", env={"PNBRIDGE_CONFIG": str(path), "PATH": ""})
    assert result.returncode == 1 and "storage.path" in result.stderr
