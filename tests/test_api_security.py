"""The push API's keys: stored hashed, compared in constant time, limited per key, and
servable only on the admin listener."""

from __future__ import annotations

import hashlib
import re

import httpx
import trio
from conftest import cli
from pnbridge.access.apikeys import ApiKeys, hash_key
from pnbridge.config.tables import ApiConfig

PUSH = "/api/v1/push"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key() -> tuple[str, str]:
    result = cli("api-key", "new")
    assert result.returncode == 0, result.stderr
    key = re.search(r"^key:\s+(\S+)$", result.stdout, re.M).group(1)
    line = re.search(r'^hash:\s+"(sha256:[0-9a-f]{64})"', result.stdout, re.M).group(1)
    return key, line


def test_api_key_new_prints_a_key_and_its_hash():
    key, line = new_key()
    assert len(key) >= 32 and line == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert new_key()[0] != key


def test_keys_match_by_hash_only():
    keys = ApiKeys(ApiConfig(keys=["plain-key-0123456789"], key_hashes=[hash_key("hashed-key")]))
    assert keys.match("plain-key-0123456789") and keys.match("hashed-key")
    assert keys.match("hashed-key") != keys.match("plain-key-0123456789")
    assert keys.match("") is None and keys.match("hashed-ke") is None
    assert not ApiKeys(ApiConfig())


async def test_hashed_key_opens_the_api_and_a_wrong_one_does_not(start_daemon):
    key, line = new_key()
    daemon = await start_daemon({"api": {"key_hashes": [line]}})
    wrong = await daemon.client.post(PUSH, content=b"{}", headers=bearer(key + "x"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    right = await daemon.client.post(PUSH, content=b"not json", headers=bearer(key))
    assert right.status_code == 400  # past the key check, stopped by the body


async def test_per_key_rate_limit_answers_429_and_recovers(start_daemon):
    key, line = new_key()
    other, other_line = new_key()
    daemon = await start_daemon({"api": {"key_hashes": [line, other_line],
                                         "key_rate": 10.0, "key_burst": 2}})
    codes = [(await daemon.client.post(PUSH, content=b"x", headers=bearer(key))).status_code
             for _ in range(3)]
    assert codes == [400, 400, 429]
    limited = await daemon.client.post(PUSH, content=b"x", headers=bearer(key))
    assert limited.headers["Retry-After"] == "1" and "too many" in limited.json()["error"]
    assert (await daemon.client.post(PUSH, content=b"x", headers=bearer(other))).status_code == 400
    await trio.sleep(0.15)
    assert (await daemon.client.post(PUSH, content=b"x", headers=bearer(key))).status_code == 400


async def test_api_only_on_the_admin_listener(start_daemon, tmp_path):
    key, line = new_key()
    admin_socket = tmp_path / "admin.sock"
    daemon = await start_daemon({
        "server": {"admin_listen": [f"unix:{admin_socket}"]},
        "api": {"key_hashes": [line], "admin_only": True},
    })
    public = await daemon.client.post(PUSH, content=b"x", headers=bearer(key))
    assert public.status_code == 404
    transport = httpx.AsyncHTTPTransport(uds=str(admin_socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as admin:
        assert (await admin.post(PUSH, content=b"x", headers=bearer(key))).status_code == 400
        # The admin listener's bodies are bounded by [reporter] max_body too (it was Quart's
        # 16 MB, and a 16 MB body of brackets took 1.4 s to check).
        big = await admin.post(PUSH, content=b"[" * (64 * 1024 + 1), headers=bearer(key))
        assert big.status_code == 413


def test_admin_only_needs_an_admin_listener_and_plain_keys_warn(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[api]\nadmin_only = true\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1 and "api.admin_only: needs [server] admin_listen" in result.stderr
    path.write_text('[api]\nkeys = ["plain-key-0123456789"]\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 0 and "WARNING: [api] keys holds plain keys" in result.stderr
    path.write_text(f'[api]\nkey_hashes = ["{hash_key("k")}"]\n')
    assert "plain keys" not in cli("check-config", "--config", str(path)).stderr
    path.write_text('[api]\nkey_hashes = ["md5:abc"]\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1 and "api.key_hashes: not [NAME:]sha256:" in result.stderr
    assert "'md5:abc'" in result.stderr


def test_api_key_new_with_a_name_prints_a_named_hash_line(tmp_path):
    result = cli("api-key", "new", "--name", "kamailio")
    assert result.returncode == 0, result.stderr
    key = re.search(r"^key:\s+(\S+)$", result.stdout, re.M).group(1)
    line = re.search(r'^hash:\s+"([^"]+)"', result.stdout, re.M).group(1)
    assert line == "kamailio:sha256:" + hashlib.sha256(key.encode()).hexdigest()
    path = tmp_path / "c.toml"
    path.write_text(f'[api]\nkey_hashes = ["{line}", "{hash_key("other")}"]\n')
    assert cli("check-config", "--config", str(path)).returncode == 0
    bad = cli("api-key", "new", "--name", "no spaces")
    assert bad.returncode == 2 and "--name" in bad.stderr and "Traceback" not in bad.stderr
    assert cli("api-key", "new", "--name", "x" * 65).returncode == 2
    path.write_text(f'[api]\nkey_hashes = ["{hash_key("k")}", "a b:{hash_key("k")}"]\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1 and f"'a b:{hash_key('k')}'" in result.stderr
    assert f"'{hash_key('k')}'," not in result.stderr  # only the bad entry is named


def test_a_named_key_matches_by_its_name_an_unnamed_one_by_its_id():
    named, plain = hash_key("named-key", "pbx-1.a_b"), hash_key("plain-key")
    keys = ApiKeys(ApiConfig(key_hashes=[named, plain]))
    assert keys.match("named-key") == "pbx-1.a_b"
    assert keys.match("plain-key") == plain.removeprefix("sha256:")[:12]
    assert keys.match("other") is None
