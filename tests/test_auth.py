"""Reporter authentication against the real daemon: digest (with httpx's own Digest client),
basic, secret, hook and none; nobody changes another user's devices; failures change nothing."""

from __future__ import annotations

import signal

import httpx
import pytest
import trio
from conftest import PASSWORDS, SECRET, cli
from plugintools import install_plugins
from pnbridge.access import users
from reports import report

ALICE, BOB = "alice", "bob"


def token_params(username: str | None, selector: str, token: str = "tok") -> dict[str, str]:
    params = {"selector": selector, "token_msgs": token}
    return {**params, "username": username} if username else params


def write_users(tmp_path, realm: str = "pnbridge") -> str:
    path = tmp_path / "users"
    users.write(path, {n: users.new_user(n, realm, p) for n, p in PASSWORDS.items()})
    return str(path)


def digest(user: str, password: str | None = None) -> httpx.DigestAuth:
    return httpx.DigestAuth(user, password or PASSWORDS[user])


def basic(user: str, password: str | None = None) -> httpx.BasicAuth:
    return httpx.BasicAuth(user, password or PASSWORDS[user])


async def auth_daemon(start_daemon, tmp_path, mode: str, **auth):
    config = {
        "auth": {"reporter": mode, "users_file": write_users(tmp_path), "secret": SECRET, **auth},
    }
    if mode == "hook":
        plugins_dir = install_plugins(tmp_path / "plugins", "auth/pbxauth")
        config["plugins"] = {"paths": [str(plugins_dir)], "enabled": ["pbxauth"],
                             "pbxauth": {"passwords": PASSWORDS}}
    return await start_daemon(config)


def devices(daemon) -> dict[str, str]:
    store = daemon.store()
    try:
        return {d.selector: d.username for d in store.devices()}
    finally:
        store.close()


def journal(daemon) -> list[tuple[str, str, str]]:
    store = daemon.store()
    try:
        return [(e.kind, e.reason, e.selector) for e in store.events()]
    finally:
        store.close()


# -- digest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_digest_exchange_with_a_real_client(start_daemon, tmp_path, algorithm):
    daemon = await auth_daemon(start_daemon, tmp_path, "digest", digest_algorithms=[algorithm])
    r = await daemon.client.get("/token", params=token_params(ALICE, "S1"), auth=digest(ALICE))
    assert r.status_code == 200, r.text
    (challenge,) = r.history
    assert challenge.status_code == 401
    offered = challenge.headers["WWW-Authenticate"]
    assert offered.startswith('Digest realm="pnbridge", qop="auth"')
    assert f"algorithm={algorithm}," in offered
    sent = r.request.headers["Authorization"]
    assert f"algorithm={algorithm}" in sent and "qop=auth" in sent and "nc=00000001" in sent
    assert devices(daemon) == {"S1": ALICE}
    # httpx reuses the nonce with the next nonce count: accepted, nc=2.
    auth = digest(ALICE)
    await daemon.client.get("/token", params=token_params(ALICE, "S2"), auth=auth)
    r = await daemon.client.get("/token", params=token_params(ALICE, "S3"), auth=auth)
    assert r.status_code == 200 and not r.history and "nc=00000002" in r.request.headers["Authorization"]


async def test_digest_offers_both_algorithms_by_default(start_daemon, tmp_path):
    daemon = await auth_daemon(start_daemon, tmp_path, "digest")
    r = await daemon.client.get("/token", params=token_params(ALICE, "S1"))
    assert r.status_code == 401
    offered = r.headers.get_list("WWW-Authenticate")
    assert ["algorithm=MD5" in offered[0], "algorithm=SHA-256" in offered[1]] == [True, True]
    assert devices(daemon) == {}


async def test_replayed_digest_nonce_is_refused(start_daemon, tmp_path):
    daemon = await auth_daemon(start_daemon, tmp_path, "digest")
    params = token_params(ALICE, "S1", "first")
    r = await daemon.client.get("/token", params=params, auth=digest(ALICE))
    assert r.status_code == 200
    captured = r.request.headers["Authorization"]
    replay = await daemon.client.get("/token", params=params,
                                     headers={"Authorization": captured})
    assert replay.status_code == 401 and "stale" not in replay.headers["WWW-Authenticate"]
    # Replayed onto another request (another token), the response does not match either.
    moved = await daemon.client.get("/token", params=token_params(ALICE, "S1", "evil"),
                                    headers={"Authorization": captured})
    assert moved.status_code == 401
    assert journal(daemon) == [("registered", "new", "S1")]


async def test_expired_nonce_is_stale_and_the_client_retries(start_daemon, tmp_path):
    daemon = await auth_daemon(start_daemon, tmp_path, "digest", nonce_lifetime=0.3)
    auth = digest(ALICE)
    assert (await daemon.client.get("/token", params=token_params(ALICE, "S1"), auth=auth)
            ).status_code == 200
    await trio.sleep(0.4)
    r = await daemon.client.get("/token", params=token_params(ALICE, "S2"), auth=auth)
    assert r.status_code == 200  # after a 401 that said stale=true
    assert [h.status_code for h in r.history] == [401]
    assert "stale=true" in r.history[0].headers["WWW-Authenticate"]


@pytest.mark.parametrize("mode", ["digest", "basic"])
async def test_wrong_password_and_unknown_user_are_refused(start_daemon, tmp_path, mode):
    daemon = await auth_daemon(start_daemon, tmp_path, mode)
    make = digest if mode == "digest" else basic
    for auth in (make(ALICE, "wrong-password"), httpx.DigestAuth("mallory", "x")
                 if mode == "digest" else httpx.BasicAuth("mallory", "x"), None):
        r = await daemon.client.get("/token", params=token_params(ALICE, "S1"), auth=auth)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].lower().startswith(mode)
    assert devices(daemon) == {} and journal(daemon) == []


async def test_basic_accepts_the_right_password(start_daemon, tmp_path):
    daemon = await auth_daemon(start_daemon, tmp_path, "basic")
    r = await daemon.client.post("/token", data=token_params(ALICE, "S1"), auth=basic(ALICE))
    assert r.status_code == 200
    assert devices(daemon) == {"S1": ALICE}


# -- nobody changes another user's devices ---------------------------------------------------


def credentials(mode: str, user: str) -> dict:
    """httpx request arguments that carry ``user``'s credentials in ``mode``."""
    if mode == "digest":
        return {"auth": digest(user)}
    if mode == "basic":
        return {"auth": basic(user)}
    return {"extra": {"password": PASSWORDS[user]}}


async def report_as(daemon, path: str, mode: str, as_user: str, params: dict
                    ) -> httpx.Response:
    """Report ``params`` to ``path`` with ``as_user``'s credentials in ``mode``."""
    given = credentials(mode, as_user)
    fields = {"username": None, "token": None, **params, **given.get("extra", {})}
    return await report(daemon, path=path, auth=given.get("auth"), status=None, **fields)


@pytest.mark.parametrize("mode", ["digest", "basic", "hook"])
async def test_nobody_registers_or_removes_devices_of_another_user(start_daemon, tmp_path, mode):
    daemon = await auth_daemon(start_daemon, tmp_path, mode)
    assert (await report_as(daemon, "/token", mode, BOB, token_params(BOB, "BOB-1", "bobs"))
            ).status_code == 200
    # Alice's own credentials, Bob's username: refused, for registration and removal.
    r = await report_as(daemon, "/token", mode, ALICE, token_params(BOB, "ALICE-1", "alices"))
    assert r.status_code == 401
    r = await report_as(daemon, "/removeToken", mode, ALICE, token_params(BOB, "BOB-1"))
    assert r.status_code == 401
    # Alice's username with Bob's selector: his device stays his.
    r = await report_as(daemon, "/token", mode, ALICE, token_params(ALICE, "BOB-1", "alices"))
    assert r.status_code == 403
    # A removal by selector alone removes only Alice's own devices: none here.
    r = await report_as(daemon, "/removeToken", mode, ALICE, {"selector": "BOB-1"})
    assert r.status_code in (200, 401)
    assert devices(daemon) == {"BOB-1": BOB}
    assert journal(daemon) == [("registered", "new", "BOB-1")]
    # Bob removes his own device.
    r = await report_as(daemon, "/removeToken", mode, BOB, token_params(BOB, "BOB-1"))
    assert r.status_code == 200 and devices(daemon) == {}


async def test_digest_removal_by_selector_alone_is_the_users_own(start_daemon, tmp_path):
    daemon = await auth_daemon(start_daemon, tmp_path, "digest")
    for user, selector in ((ALICE, "A1"), (BOB, "B1")):
        await daemon.client.get("/token", params=token_params(user, selector), auth=digest(user))
    r = await daemon.client.get("/removeToken", params={"selector": "B1"}, auth=digest(ALICE))
    assert r.status_code == 200 and devices(daemon) == {"A1": ALICE, "B1": BOB}
    r = await daemon.client.get("/removeToken", params={"selector": "A1"}, auth=digest(ALICE))
    assert r.status_code == 200 and devices(daemon) == {"B1": BOB}


async def test_hook_authenticate_report_checks_the_pbx_password(start_daemon, tmp_path):
    daemon = await auth_daemon(start_daemon, tmp_path, "hook")
    ok = {**token_params(ALICE, "S1"), "password": PASSWORDS[ALICE]}
    assert (await daemon.client.get("/token", params={**ok, "password": "nope"})).status_code == 401
    assert (await daemon.client.get("/token", params=token_params(ALICE, "S1"))).status_code == 401
    # No plugin knows mallory: no answer means no.
    assert (await daemon.client.get("/token", params={**token_params("mallory", "S9"),
                                                       "password": "x"})).status_code == 401
    assert devices(daemon) == {}
    assert (await daemon.client.get("/token", params=ok)).status_code == 200
    store = daemon.store()
    assert store.device("S1").extras == {}  # the password was checked, not stored
    store.close()


async def test_hook_mode_needs_a_plugin(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[auth]\nreporter = "hook"\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1 and "implements authenticate_report" in result.stderr


async def test_route_auth_overrides_the_default(start_daemon, tmp_path):
    daemon = await start_daemon({
        "storage": {"path": str(tmp_path / "two.db")},
        "auth": {"reporter": "none", "users_file": write_users(tmp_path)},
        "reporter": {"routes": [{"path": "/safe/token", "kind": "token", "auth": "basic"}]},
    })
    assert (await daemon.client.get("/safe/token", params=token_params(ALICE, "S1"))
            ).status_code == 401
    assert (await daemon.client.get("/safe/token", params=token_params(ALICE, "S1"),
                                    auth=basic(ALICE))).status_code == 200
    assert (await daemon.client.get("/token", params=token_params(BOB, "S2"))).status_code == 200


# -- secret ----------------------------------------------------------------------------------


async def test_secret_in_header_or_parameter(start_daemon, tmp_path):
    daemon = await auth_daemon(start_daemon, tmp_path, "secret")
    r = await daemon.client.get("/token", params=token_params(ALICE, "S1"),
                                headers={"X-Pnbridge-Secret": SECRET})
    assert r.status_code == 200
    r = await daemon.client.post("/token", json={**token_params(BOB, "S2"), "secret": SECRET})
    assert r.status_code == 200
    store = daemon.store()
    assert store.device("S2").extras == {}
    store.close()


async def test_wrong_and_missing_secret_get_the_same_answer(start_daemon, tmp_path):
    daemon = await auth_daemon(start_daemon, tmp_path, "secret")
    params = token_params(ALICE, "S1")
    answers = [
        await daemon.client.get("/token", params=params),
        await daemon.client.get("/token", params=params, headers={"X-Pnbridge-Secret": "wrong"}),
        await daemon.client.get("/token", params={**params, "secret": SECRET[:-1]}),
        await daemon.client.get("/token", params=params, headers={"X-Pnbridge-Secret": ""}),
    ]
    shapes = {
        (r.status_code, r.content, tuple(sorted((k, v) for k, v in r.headers.items()
                                                if k not in ("date",))))
        for r in answers
    }
    assert len(shapes) == 1 and answers[0].status_code == 401
    assert devices(daemon) == {} and journal(daemon) == []


# -- none, warnings, the users file ---------------------------------------------------------


def test_none_warns_in_check_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[auth]\nreporter = \"none\"\n")
    path.chmod(0o600)
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 0
    assert 'WARNING: reporter routes with auth mode "none"' in result.stderr
    path.write_text(f'[auth]\nreporter = "secret"\nsecret = "{SECRET}"\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 0 and "WARNING" not in result.stderr
    path.chmod(0o644)
    result = cli("check-config", "--config", str(path))
    assert "is readable by others (mode 0644): chmod o-rwx it" in result.stderr


def test_users_cli_round_trip(tmp_path):
    config = tmp_path / "c.toml"
    users_file = tmp_path / "users"
    config.write_text(f'[auth]\nreporter = "digest"\nrealm = "pbx"\nusers_file = "{users_file}"\n')
    missing = cli("users", "list", "--config", str(config))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == f"pnbridge: no users file at {users_file} yet: pnbridge users add " \
        "USERNAME creates it\n"
    add = cli("users", "add", ALICE, "--password-stdin", "--config", str(config),
                   input=PASSWORDS[ALICE] + "\n")
    assert add.returncode == 0, add.stderr
    assert "added alice" in add.stdout
    assert users_file.stat().st_mode & 0o777 == 0o600
    text = users_file.read_text()
    assert PASSWORDS[ALICE] not in text
    (user,) = users.read(users_file).values()
    assert user.ha1["MD5"] == users.ha1("MD5", ALICE, "pbx", PASSWORDS[ALICE])
    assert users.scrypt_verify(user.scrypt, PASSWORDS[ALICE])
    assert not users.scrypt_verify(user.scrypt, "wrong")
    again = cli("users", "add", ALICE, "--password-stdin", "--config", str(config),
                     input=PASSWORDS[BOB] + "\n")
    assert "changed alice" in again.stdout
    assert users_file.read_text() != text
    assert cli("users", "add", "a:b", "--password-stdin", "--config", str(config),
                    input="x\n").returncode == 1
    assert cli("users", "add", BOB, "--config", str(config), input="x\n").returncode == 1
    listed = cli("users", "list", "--config", str(config))
    assert listed.stdout.split() == ["USERNAME", "REALM", "alice", "pbx"]
    assert cli("users", "remove", ALICE, "--config", str(config)).returncode == 0
    assert cli("users", "remove", ALICE, "--config", str(config)).returncode == 1
    assert cli("users", "list", "--config", str(config)).stdout.split() == ["USERNAME", "REALM"]


def test_serve_warns_and_rereads_the_users_file_on_sighup(spawn, tmp_path):
    users_file = tmp_path / "users"
    users.write(users_file, {})
    toml = (f'[server]\nlisten = ["127.0.0.1:0"]\n[storage]\npath = "{tmp_path / "db"}"\n'
            f'[auth]\nreporter = "digest"\nusers_file = "{users_file}"\n'
            '[[reporter.routes]]\npath = "/open"\nkind = "token"\nauth = "none"\n')
    process = spawn(toml)
    url = process.url()
    process.wait_for(r'WARNING pnbridge: reporter routes with auth mode "none"')
    params = token_params(ALICE, "S1")
    assert httpx.get(f"{url}/token", params=params, auth=digest(ALICE)).status_code == 401
    config = tmp_path / "pnbridge.toml"
    added = cli("users", "add", ALICE, "--password-stdin", "--config", str(config),
                     input=PASSWORDS[ALICE] + "\n")
    assert added.returncode == 0, added.stderr
    process.popen.send_signal(signal.SIGHUP)
    process.wait_for("config reloaded")
    assert httpx.get(f"{url}/token", params=params, auth=digest(ALICE)).status_code == 200
    assert process.stop() == 0
