"""Every error shown to a user derives from PnbridgeError (pnbridge.errors), and the CLI turns
each into ``pnbridge: ...`` lines in one place, whichever stage raised it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner
from pnbridge import errors
from pnbridge.cli import main

ROOT = Path(__file__).parent.parent
# What steers the flow, no error shown to a user: a plugin's answer about its delivery, an
# AGI channel that hung up.
STEERING = {"RetryLater", "PermanentFailure", "Hangup"}


def test_every_exception_of_pnbridge_is_in_errors_and_has_the_base():
    defined = {
        f"{path.relative_to(ROOT)}:{node.name}"
        for path in sorted((ROOT / "daemon").rglob("*.py")) if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name not in STEERING
        and any(getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception"))
                for b in node.bases)
    }
    assert defined == set()
    classes = [v for v in vars(errors).values()
               if isinstance(v, type) and issubclass(v, BaseException)]
    assert len(classes) > 10
    assert all(issubclass(c, errors.PnbridgeError) for c in classes)


@pytest.mark.parametrize("stage", ["config", "storage", "users", "import", "push", "plugins"])
def test_each_stage_s_error_is_one_pnbridge_line(tmp_path, stage):
    config = tmp_path / "pnbridge.toml"
    db = tmp_path / "pnbridge.db"
    text = f'[storage]\npath = "{db}"\n'
    args: list[str] = []
    expected = ""
    if stage == "config":
        text += "[storage.nope]\n"
        args, expected = ["devices", "list"], "error: storage.nope"
    elif stage == "storage":
        db.write_bytes(b"this is no database" * 100)
        args, expected = ["devices", "list"], str(db)
    elif stage == "users":
        users = tmp_path / "users"
        users.write_text("no colon here\n")
        text += f'[auth]\nusers_file = "{users}"\n'
        args, expected = ["users", "list"], str(users)
    elif stage == "import":
        bad = tmp_path / "devices.jsonl"
        bad.write_bytes(b"\xff\xfe{}\n")
        args, expected = ["devices", "import", str(bad)], "not UTF-8"
    else:  # push, plugins: a database with no device
        empty = tmp_path / "empty.jsonl"
        empty.write_text("")
        config.write_text(text)
        CliRunner().invoke(main, ["devices", "import", "--config", str(config), str(empty)])
        args = ["push", "NotifyTextMessage", "--username", "nobody"]
        if stage == "push":
            text += '[plugins]\nenabled = ["pnmediator"]\n'
            expected = "no device of user nobody"
        else:
            expected = "no enabled plugin sends pushes"
    config.write_text(text)
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.splitlines()
    assert lines and all(line.startswith("pnbridge: ") for line in lines), lines
    assert expected in result.output
    assert "Traceback" not in result.output
