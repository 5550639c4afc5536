"""The systemd units: ``systemd-analyze verify`` passes and the service's exposure stays <= 2.0.

Both work without systemd running; .ci/run installs systemd-analyze where it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
INSTALLED = "/opt/pnbridge/venv/bin/pnbridge"
MAX_EXPOSURE = 2.0

if shutil.which("systemd-analyze") is None:
    if os.environ.get("CI"):
        raise RuntimeError("systemd-analyze is missing (.ci/run installs the systemd package)")
    pytest.skip("systemd-analyze is not installed", allow_module_level=True)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )


def test_verify_passes_on_both_units(tmp_path):
    # verify checks that ExecStart exists: point it at this install's pnbridge instead of
    # the /opt/pnbridge one docs/install.md sets up (the only line that differs).
    service = (UNITS / "pnbridge.service").read_text()
    assert f"ExecStart={INSTALLED} serve --config /etc/pnbridge/pnbridge.toml" in service
    here = Path(sys.executable).parent / "pnbridge"
    (tmp_path / "pnbridge.service").write_text(service.replace(INSTALLED, str(here)))
    shutil.copy(UNITS / "pnbridge.socket", tmp_path)
    units = [str(tmp_path / name) for name in ("pnbridge.service", "pnbridge.socket")]
    result = analyze("verify", *units)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def exposure() -> float:
    result = analyze("security", "--offline=true", "--no-pager", str(UNITS / "pnbridge.service"))
    found = re.search(r"Overall exposure level for pnbridge\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def test_exposure_is_at_most_two_and_documented():
    figure = exposure()
    assert figure <= MAX_EXPOSURE, f"exposure {figure} > {MAX_EXPOSURE}: harden the unit again"
    install = (ROOT / "docs" / "install.md").read_text()
    assert f"exposure level {figure}" in install, "docs/install.md states another figure"
    assert INSTALLED in install


def template_as(tmp_path: Path, name: str) -> Path:
    text = (UNITS / "pnbridge@.service").read_text()
    assert f"ExecStart={INSTALLED} serve --config /etc/pnbridge/%i.toml" in text
    unit = tmp_path / name
    unit.write_text(text.replace(INSTALLED, str(Path(sys.executable).parent / "pnbridge")))
    return unit


def test_template_unit_verifies_as_template_and_as_an_instance(tmp_path):
    for name in ("pnbridge@.service", "pnbridge@a.service"):
        result = analyze("verify", str(template_as(tmp_path, name)))
        assert result.returncode == 0 and result.stderr == "", (name, result.stderr)


def test_template_unit_is_hardened_as_the_service(tmp_path):
    """Everything from [Service] on is pnbridge.service's but the config file's name; its
    exposure as an instance is the service's."""
    service = (UNITS / "pnbridge.service").read_text().partition("[Service]")[2]
    template = (UNITS / "pnbridge@.service").read_text().partition("[Service]")[2]
    assert template.replace("/etc/pnbridge/%i.toml", "/etc/pnbridge/pnbridge.toml") == service
    result = analyze("security", "--offline=true", "--no-pager",
                     str(template_as(tmp_path, "pnbridge@a.service")))
    found = re.search(r"Overall exposure level for pnbridge@a\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) == exposure()
