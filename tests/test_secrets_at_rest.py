"""After every other test: no password or secret that any test sent is in a database, a
journal, a plugin's output or a log that the test run left behind."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from checkout import tracked_files
from conftest import SENT_SECRETS

REPO = Path(__file__).parent.parent


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def project_files() -> set[bytes]:
    """Digests of the project's own files: their copies (the docs install-units writes, a
    checkout copied to be installed) are the project, not something a test left behind."""
    return {_digest(path.read_bytes()) for path in tracked_files()}


def texts(root: Path):
    """(path, text) of every file under ``root``; a database also as its SQL dump. Left
    out: virtual environments the tests install into, and copies of the project's files."""
    venvs = {cfg.parent for cfg in root.rglob("pyvenv.cfg")}
    ours = project_files()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix in (".toml", ".py"):
            continue  # configs hold the [auth] secret, stand-in PBX plugins their passwords
        if venvs.intersection(path.parents):
            continue
        raw = path.read_bytes()
        if _digest(raw) in ours:
            continue
        yield path, raw.decode("utf-8", "replace")
        if raw.startswith(b"SQLite format 3\x00"):
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                yield path, "\n".join(conn.iterdump())
            except sqlite3.Error:
                pass
            finally:
                conn.close()


@pytest.mark.run_last
def test_no_secret_any_test_sent_is_at_rest_or_in_a_log(run_log):
    scanned = 0
    found = []
    for path, text in texts(run_log):
        scanned += 1
        found += [f"{path}: {secret!r}" for secret in SENT_SECRETS if secret in text]
    assert scanned, "the run left nothing to look at"
    assert not found, "\n".join(found)
