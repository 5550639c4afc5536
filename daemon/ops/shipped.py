"""The files that ship with pnbridge (package data in the wheel; config/, systemd/ and docs/
in a checkout): the commented example config, the systemd units, the docs."""

from __future__ import annotations

import sys
from pathlib import Path

UNIT_DIR = "etc/systemd/system"
DOC_DIR = "usr/share/doc/pnbridge"  # the units' Documentation= points here
INSTALLED = "/opt/pnbridge/venv/bin/pnbridge"  # the units' ExecStart= (docs/install.md)
HERE = Path(__file__).resolve().parent.parent  # the pnbridge package (daemon/ in a checkout)


def shipped(name: str) -> Path:
    """The directory ``name`` (config, systemd, docs): package data ``pnbridge/_NAME`` in an
    installed wheel, the checkout's own ``NAME`` in an editable install."""
    installed = HERE / f"_{name}"
    return installed if installed.is_dir() else HERE.parent / name


def sample_config() -> str:
    """The example config, every key with its default and a comment."""
    return (shipped("config") / "pnbridge.toml").read_text(encoding="utf-8")


def _write(path: Path, text: str) -> Path:
    for directory in reversed([path.parent, *path.parent.parents]):
        if not directory.is_dir():
            directory.mkdir()
            directory.chmod(0o755)  # whatever the umask
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)  # whatever the umask: systemd and man readers need it
    return path


def _tree(source: Path, target: Path) -> list[Path]:
    written = []
    for item in sorted(source.iterdir()):
        if item.is_dir():
            written += _tree(item, target / item.name)
        elif item.name.endswith(".md"):
            written.append(_write(target / item.name, item.read_text(encoding="utf-8")))
    return written


def install_units(prefix: str) -> list[Path]:
    """Write the units to PREFIX/etc/systemd/system, their ``ExecStart=`` pointing at this
    installation's ``pnbridge``, and the docs to PREFIX/usr/share/doc/pnbridge (the units'
    ``Documentation=``). The paths written; raises OSError."""
    root = Path(prefix)
    here = Path(sys.executable).parent / "pnbridge"
    program = str(here) if here.is_file() else INSTALLED
    written = []
    for unit in sorted(shipped("systemd").iterdir()):
        if unit.name.endswith((".service", ".socket")):
            text = unit.read_text(encoding="utf-8").replace(f"ExecStart={INSTALLED} ",
                                                           f"ExecStart={program} ")
            written.append(_write(root / UNIT_DIR / unit.name, text))
    return written + _tree(shipped("docs"), root / DOC_DIR)
