"""A built wheel is a complete install: built with ``pip wheel``, installed into a fresh
virtual environment (the dependencies from this one), its ``pnbridge config sample`` prints
config/pnbridge.toml and ``pnbridge install-units`` writes units that ``systemd-analyze
verify`` accepts, with the docs their ``Documentation=`` names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from checkout import copy_checkout

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # builds a wheel and a venv


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel of this checkout in it (the dependencies come from
    this venv's site-packages through a .pth line, whose own .pth files, among them the
    editable install of the checkout, are not read)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from the tracked files: a build/ directory a local build left would lend the
    # wheel packages that pyproject no longer lists.
    source = copy_checkout(tmp / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp / "dist").glob("pnbridge-*.whl")
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], capture_output=True, text=True, check=True)
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "pnbridge"), *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env={**os.environ, "PYTHONPATH": ""})


def test_the_wheel_is_what_runs(venv, tmp_path):
    found = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import pnbridge; print(pnbridge.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    assert found.stdout.startswith(str(venv)), found.stdout


def test_every_module_of_the_checkout_imports_from_the_wheel(venv, tmp_path):
    """A package left out of pyproject's list is missing from the wheel only: an installed
    daemon then fails to import it (pnbridge.agi once did) while the checkout works."""
    names = sorted(
        ".".join((package, *path.relative_to(top).with_suffix("").parts)).removesuffix(".__init__")
        for top, package in ((ROOT / "daemon", "pnbridge"), (ROOT / "plugins", "pnbridge.plugins"))
        for path in top.rglob("*.py") if path.name != "__main__.py"
    )
    script = ("import importlib, sys\n"
              "for name in sys.argv[1:]:\n"
              "    module = importlib.import_module(name)\n"
              f"    assert module.__file__.startswith({str(venv)!r}), module.__file__\n")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", script, *names],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert "pnbridge.agi.service" in names and "pnbridge.plugins.webhook" in names


def test_config_sample_is_the_example_config(venv, tmp_path):
    result = run(venv, "config", "sample", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "config" / "pnbridge.toml").read_text()
    (tmp_path / "sample.toml").write_text(result.stdout)
    checked = run(venv, "check-config", "--config", str(tmp_path / "sample.toml"), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_the_pbx_files_are_in_the_wheel(venv, tmp_path):
    found = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import pnbridge, pathlib; print(pathlib.Path(pnbridge.__file__)"
                            ".parent / '_config' / 'pbx')"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    installed = Path(found.stdout.strip())
    shipped = sorted(p.relative_to(ROOT / "config" / "pbx")
                     for p in (ROOT / "config" / "pbx").rglob("*") if p.is_file())
    assert shipped
    for path in shipped:
        assert (installed / path).read_text() == (ROOT / "config" / "pbx" / path).read_text()


def test_the_console_templates_and_static_files_are_in_the_wheel(venv, tmp_path):
    found = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import pnbridge.console, pathlib; print(pathlib.Path("
                            "pnbridge.console.__file__).parent)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    installed = Path(found.stdout.strip())
    console = ROOT / "daemon" / "console"
    shipped = sorted(p.relative_to(console) for d in ("templates", "static")
                     for p in (console / d).iterdir() if p.is_file())
    assert Path("templates/base.html") in shipped and Path("static/console.js") in shipped
    for path in shipped:
        assert (installed / path).read_bytes() == (console / path).read_bytes(), path


def test_install_units_writes_units_systemd_accepts_and_their_docs(venv, tmp_path):
    prefix = tmp_path / "image"
    old = os.umask(0o077)
    try:
        result = run(venv, "install-units", "--prefix", str(prefix), cwd=tmp_path)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    units = prefix / "etc/systemd/system"
    service = (units / "pnbridge.service").read_text()
    shipped = (ROOT / "systemd" / "pnbridge.service").read_text()
    assert service == shipped.replace("/opt/pnbridge/venv/bin/pnbridge",
                                      str(venv / "bin" / "pnbridge"))
    assert (units / "pnbridge.socket").read_text() == (ROOT / "systemd/pnbridge.socket").read_text()
    template = (ROOT / "systemd" / "pnbridge@.service").read_text()
    assert (units / "pnbridge@.service").read_text() == template.replace(
        "/opt/pnbridge/venv/bin/pnbridge", str(venv / "bin" / "pnbridge"))
    for unit in ("pnbridge.service", "pnbridge.socket"):
        [doc] = [line for line in (units / unit).read_text().splitlines()
                 if line.startswith("Documentation=")]
        installed = prefix / doc.removeprefix("Documentation=file:///")
        assert installed.read_text() == (ROOT / "docs" / "install.md").read_text()
    assert (prefix / "usr/share/doc/pnbridge/plugins/webhook.md").is_file()
    for path in [prefix, *prefix.rglob("*")]:
        if path != prefix:
            assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    if shutil.which("systemd-analyze") is None:
        assert not os.environ.get("CI"), "systemd-analyze is missing"
        return
    verify = subprocess.run(["systemd-analyze", "verify", str(units / "pnbridge.service"),
                             str(units / "pnbridge.socket"), str(units / "pnbridge@.service")], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
