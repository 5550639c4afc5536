"""The users file of the ``digest`` and ``basic`` reporter modes: no password in it, ever.

One line per user, ``username:realm:MD5-HA1:SHA-256-HA1:scrypt$N$r$p$SALT$HASH``: the digest
HA1 (``H(username:realm:password)``) for each algorithm, which is all Digest needs, and a slow
salted hash (scrypt) that ``basic`` checks a password against. Lines starting with ``#`` are
comments. ``pnbridge users add|remove|list`` manage the file; it is written atomically (a
temp file renamed over it), keeping its owner, group and mode.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsersFileError

HEADER = "# pnbridge users: username:realm:md5-ha1:sha256-ha1:scrypt (pnbridge users add|remove)\n"

# scrypt cost: about 16 MiB and tens of milliseconds per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1

DIGESTS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def name_problem(username: str) -> str | None:
    """Why ``username`` cannot be in the users file, or None."""
    if not username:
        return "a username cannot be empty"
    if ":" in username or not username.isprintable() or username != username.strip():
        return "a username has no ':', control characters or surrounding spaces"
    return None


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``H(username:realm:password)`` as RFC 7616 defines it, in hex."""
    return DIGESTS[algorithm](f"{username}:{realm}:{password}".encode()).hexdigest()


def scrypt_hash(password: str) -> str:
    """A salted scrypt hash of ``password``: ``scrypt$N$r$p$SALT$HASH`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def scrypt_verify(stored: str, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (slow on purpose; call it off the trio loop)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(got, expected)


# Checked for an unknown username, so that it costs as long as a known one.
DUMMY_HASH = scrypt_hash(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    name: str
    realm: str
    ha1: dict[str, str]
    scrypt: str

    def line(self) -> str:
        return f"{self.name}:{self.realm}:{self.ha1['MD5']}:{self.ha1['SHA-256']}:{self.scrypt}\n"


def new_user(username: str, realm: str, password: str) -> User:
    return User(
        username, realm, {a: ha1(a, username, realm, password) for a in DIGESTS},
        scrypt_hash(password),
    )


def parse(text: str, source: str = "users file") -> dict[str, User]:
    """The users in a users file's ``text``; raises UsersFileError naming a bad line."""
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 5 or name_problem(parts[0]) or not parts[4].startswith("scrypt$"):
            raise UsersFileError(f"{source}: line {number}: not username:realm:md5:sha256:scrypt")
        name, realm, md5, sha256, slow = parts
        users[name] = User(name, realm, {"MD5": md5, "SHA-256": sha256}, slow)
    return users


def read(path: str | Path) -> dict[str, User]:
    """The users in the file at ``path`` (blocking; not on the trio loop)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsersFileError(f"{path}: cannot read: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise UsersFileError(f"{path}: not UTF-8") from error
    return parse(text, str(path))


def write(path: str | Path, users: dict[str, User]) -> None:
    """Replace the file at ``path`` with ``users``, atomically (a temp file in the same
    directory, renamed over it), keeping the old file's owner, group and mode. A new file
    is the caller's, with its directory's group and mode 0640 when that is another group
    (``root:pnbridge`` in install.md's ``/etc/pnbridge``), else mode 0600. Raises
    UsersFileError, one line naming the path, when the file cannot be written."""
    target = Path(path)
    text = HEADER + "".join(u.line() for u in sorted(users.values(), key=lambda u: u.name))
    try:
        _replace(target, text)
    except OSError as error:
        hint = " (run as root)" if isinstance(error, PermissionError) and os.geteuid() else ""
        reason = (error.strerror or str(error)).lower()
        raise UsersFileError(f"cannot write {target}: {reason}{hint}") from error


def write_problem(path: str | Path) -> str | None:
    """Why ``write`` would be refused for want of the directory, as its one line, or None:
    checked before a password is asked for."""
    target = Path(path)
    if not target.parent.is_dir():
        return f"cannot write {target}: no such file or directory"
    if not os.access(target.parent, os.W_OK | os.X_OK):
        return f"cannot write {target}: permission denied (run as root)"
    return None


def _replace(target: Path, text: str) -> None:
    try:
        old = os.stat(target)
        owner, group, mode = old.st_uid, old.st_gid, stat.S_IMODE(old.st_mode)
    except FileNotFoundError:
        owner, group, mode = os.geteuid(), os.getegid(), 0o600
        shared = os.stat(target.parent).st_gid
        if shared != group and (owner == 0 or shared in os.getgroups()):
            group, mode = shared, 0o640  # a directory shared with a group: so is the file
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            if (owner, group) != (os.geteuid(), os.getegid()):
                os.fchown(file.fileno(), owner, group)
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
