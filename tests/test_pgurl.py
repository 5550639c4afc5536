"""``[storage] url`` checked by check-config as libpq reads it (psycopg's parser, or the
strict fallback without the extra), and wrong connection options named at run time."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import cli, pnbridge
from pnbridge.config.pgurl import url_problem

BAD = [
    ("postgresql://", "names no database"),
    ("postgres://x@/", "names no database"),
    ("postgresql://u:pw@h:99999/d", "port '99999' is not a port number (1-65535)"),
    ("postgresql://h:abc/d", "port 'abc' is not a port number"),
    ("postgresql:///d", "names no host"),
    ("mysql://h/d", "must start with postgresql:// (or postgres://), got a 'mysql' URL"),
    ("h/d", "not a URL"),
    ("postgresql://h/d?sslmode=bogus", "invalid sslmode value 'bogus' (one of: disable,"),
    ("postgresql://h/d?target_session_attrs=x", "invalid target_session_attrs value 'x'"),
    ("postgresql://h/d?connect_timeout=soon", "invalid connect_timeout value 'soon'"),
    ("postgresql://h/d?bogus=1", "bogus"),
    ("postgresql://h/d?sslmode", "is not a valid PostgreSQL URL"),
]
GOOD = [
    "postgresql://pnbridge@db.example:5432/pnbridge",
    "postgres://db/pnbridge?sslmode=verify-full&connect_timeout=3",
    "postgresql://u@/pnbridge?host=/run/postgresql",
    "postgresql://h1:5432,h2:5433/pnbridge?target_session_attrs=read-write",
    "postgresql://[::1]:5432/pnbridge",
    "postgresql://pnbridge:s3cret@db/pnbridge",
]


@pytest.fixture(params=["psycopg", "fallback"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each check with psycopg's parser and with the fallback (psycopg not importable)."""
    if request.param == "fallback":
        monkeypatch.setitem(sys.modules, "psycopg", None)
    else:
        pytest.importorskip("psycopg", reason="the [postgresql] extra is not installed")
    return str(request.param)


@pytest.mark.parametrize(("url", "said"), BAD)
def test_a_wrong_url_is_refused_saying_why(parser: str, url: str, said: str):
    problem = url_problem(url)
    assert problem is not None and said in problem


@pytest.mark.parametrize("url", GOOD)
def test_a_right_url_passes(parser: str, url: str):
    assert url_problem(url) is None


def test_a_malformed_password_is_not_shown(parser: str):
    problem = url_problem("postgresql://u:s3cr%zzet@h/d") or ""
    assert "not a valid PostgreSQL URL" in problem and "s3cr" not in problem
    problem = url_problem("postgresql://h/d?password=s3cr%zzet&sslmode=x") or ""
    assert problem and "s3cr" not in problem


def _config(tmp_path: Path, url: str) -> str:
    path = tmp_path / "pnbridge.toml"
    path.write_text(f'[storage]\nurl = "{url}"\n')
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize(("url", "said"), BAD[:3] + BAD[7:8])
def test_check_config_refuses_in_one_line_naming_the_key(tmp_path: Path, url: str, said: str):
    result = cli("check-config", "--config", _config(tmp_path, url), "--user", "root")
    assert result.returncode != 0 and "OK" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pnbridge: error: storage.url: ")
    assert said in lines[0] and "pw@" not in lines[0]


def test_check_config_warns_of_a_password_in_the_url_without_showing_it(tmp_path: Path):
    result = cli("check-config", "--config",
                 _config(tmp_path, "postgresql://pnbridge:s3cret@db/pnbridge"), "--user", "root")
    assert result.returncode == 0, result.stderr
    assert "[storage] url holds a password" in result.stderr and "password_file" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    result = cli("check-config", "--config",
                 _config(tmp_path, "postgresql://pnbridge@db/pnbridge"), "--user", "root")
    assert "holds a password" not in result.stderr


@pytest.mark.parametrize(("env", "said"), [
    ({"PGSSLMODE": "bogus"}, '[storage] url: invalid sslmode value: "bogus"'),
    ({"PGTARGETSESSIONATTRS": "x"}, '[storage] url: invalid target_session_attrs value: "x"'),
    ({}, "cannot reach the PostgreSQL server"),
])
def test_a_wrong_connection_option_at_run_time_names_the_url(tmp_path: Path, env: dict[str, str],
                                                             said: str):
    """libpq's own refusal of an option (here from its PG* environment) is not an outage."""
    pytest.importorskip("psycopg", reason="the [postgresql] extra is not installed")
    config = _config(tmp_path, "postgresql://pnbridge:s3cret@127.0.0.1:1/pnbridge")
    result = pnbridge("devices", "list", "--config", config, env={**os.environ, **env})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pnbridge: {said}"), lines
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
