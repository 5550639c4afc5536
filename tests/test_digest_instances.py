"""Digest nonces shared by two `pnbridge serve` on one store (either engine): a nonce one
instance issued works on the other, a nonce count used on one is refused on both, and a
nonce expires on both. httpx's DigestAuth would answer a 401 itself: the headers are made
here."""

from __future__ import annotations

import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from configs import free_port
from conftest import PASSWORDS
from pnbridge.access import users

ALICE = "alice"
REALM = "pnbridge"
TARGET = "/token?username=alice&selector=S1&token_msgs=tok"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorization(nonce: str, nc: int, uri: str = TARGET) -> dict[str, str]:
    """What a Digest client (RFC 7616, MD5, qop=auth) sends as alice."""
    count, cnonce = f"{nc:08x}", "0a4f113b"
    ha1 = md5(f"{ALICE}:{REALM}:{PASSWORDS[ALICE]}")
    answer = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{md5(f'GET:{uri}')}")
    return {"Authorization": f'Digest username="{ALICE}", realm="{REALM}", nonce="{nonce}", '
            f'uri="{uri}", qop=auth, nc={count}, cnonce="{cnonce}", response="{answer}", '
            "algorithm=MD5"}


def two(spawn, tmp_path, engine, **auth) -> tuple[str, str]:
    """Two instances on one store, each on a port of its own: their URLs."""
    path = tmp_path / "users"
    users.write(path, {ALICE: users.new_user(ALICE, REALM, PASSWORDS[ALICE])})
    urls = []
    for _ in range(2):
        process = spawn(engine.tables({
            "server": {"listen": [f"127.0.0.1:{free_port()}"]},
            "auth": {"reporter": "digest", "users_file": str(path),
                     "digest_algorithms": ["MD5"], **auth},
        }))
        urls.append(process.url())  # listening: it has read the config the next one rewrites
    return urls[0], urls[1]


def nonce_from(url: str) -> str:
    answer = httpx.get(url + TARGET)
    assert answer.status_code == 401
    return re.search(r'nonce="([^"]+)"', answer.headers["WWW-Authenticate"]).group(1)


def send(url: str, nonce: str, nc: int) -> httpx.Response:
    return httpx.get(url + TARGET, headers=authorization(nonce, nc), timeout=30)


def test_a_nonce_from_one_instance_works_on_the_other_and_no_count_twice(spawn, tmp_path,
                                                                        engine):
    a, b = two(spawn, tmp_path, engine)
    nonce = nonce_from(a)
    assert send(b, nonce, 1).status_code == 200
    for url in (a, b):  # the same count again, on either: refused, not stale
        replay = send(url, nonce, 1)
        assert replay.status_code == 401
        assert "stale" not in replay.headers["WWW-Authenticate"]
    assert send(a, nonce, 2).status_code == 200  # the next count, back on the issuer
    assert send(b, nonce, 2).status_code == 401  # which b has not seen itself
    assert send(b, nonce, 5).status_code == 200
    assert send(a, nonce, 4).status_code == 401  # lower than the highest used, on b


def test_one_count_sent_to_both_at_once_is_accepted_once(spawn, tmp_path, engine):
    a, b = two(spawn, tmp_path, engine)
    nonces = [nonce_from(a if i % 2 else b) for i in range(30)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: send(*job).status_code,
                                [(url, nonce, 1) for nonce in nonces for url in (a, b)]))
    assert all(sorted(answers[i:i + 2]) == [200, 401] for i in range(0, 60, 2)), answers
    # The instance that refused count 1 knows the nonce: it takes count 2.
    for i, nonce in enumerate(nonces):
        refused = (a, b)[answers[2 * i:2 * i + 2].index(401)]
        assert send(refused, nonce, 2).status_code == 200


def test_a_nonce_expires_on_every_instance(spawn, tmp_path, engine):
    a, b = two(spawn, tmp_path, engine, nonce_lifetime=1.0)
    used, unused = nonce_from(a), nonce_from(b)
    assert send(b, used, 1).status_code == 200
    time.sleep(1.2)
    for url, nonce, nc in ((a, used, 2), (b, used, 2), (a, unused, 1), (b, unused, 1)):
        stale = send(url, nonce, nc)
        assert stale.status_code == 401
        assert "stale=true" in stale.headers["WWW-Authenticate"]
    assert send(a, nonce_from(b), 1).status_code == 200  # a new one works


def test_the_store_keeps_one_key_and_each_nonces_highest_count(engine):
    first, second = engine.open(), engine.open()
    assert first.digest_key() is None  # only read: no key yet
    with first.transaction():
        key = first.digest_key(b"k" * 32)
    with second.transaction():
        assert second.digest_key(b"other") == second.digest_key() == key == b"k" * 32
        assert second.use_nonce("N", 100.0, 1) and not second.use_nonce("N", 100.0, 1)
    with first.transaction():
        assert not first.use_nonce("N", 100.0, 1) and first.use_nonce("N", 100.0, 3)
        assert not first.use_nonce("N", 100.0, 2) and first.use_nonce("M", 200.0, 1)
        assert first.prune_nonces(150.0) == 1
        assert first.use_nonce("N", 100.0, 1)  # forgotten (the daemon refuses it as stale)
    first.close()
    second.close()


def test_expired_nonces_are_pruned(spawn, tmp_path, engine):
    a, b = two(spawn, tmp_path, engine, nonce_lifetime=0.5)
    old = nonce_from(a)
    assert send(b, old, 1).status_code == 200
    time.sleep(1.2)  # a lifetime since the last pruning; ``old`` issued two lifetimes ago
    for url in (a, b):
        assert send(url, nonce_from(url), 1).status_code == 200
    kept = [row[0] for row in engine.rows("SELECT nonce FROM digest_nonces")]
    assert old not in kept and len(kept) == 2


async def test_a_nonce_the_store_cannot_record_is_a_503_and_stays_unused(start_daemon, tmp_path,
                                                                         engine):
    path = tmp_path / "users"
    users.write(path, {ALICE: users.new_user(ALICE, REALM, PASSWORDS[ALICE])})
    daemon = await start_daemon(engine.tables({
        "storage": {"busy_timeout": 0.5},
        "auth": {"reporter": "digest", "users_file": str(path), "digest_algorithms": ["MD5"]},
    }))
    challenge = await daemon.client.get(TARGET)
    nonce = re.search(r'nonce="([^"]+)"', challenge.headers["WWW-Authenticate"]).group(1)
    with engine.locked():  # another session holds the write lock: the use cannot be written
        refused = await daemon.client.get(TARGET, headers=authorization(nonce, 1))
    assert refused.status_code == 503, refused.text
    assert "Retry-After" in refused.headers
    assert (await daemon.client.get(TARGET, headers=authorization(nonce, 1))).status_code == 200
