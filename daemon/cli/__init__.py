"""The ``pnbridge`` command."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sqlite3
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import IO, Any, BinaryIO

import click
import trio

from .. import __version__
from ..access import apikeys, users
from ..access.auth import load_users, plugin_problems, security_warnings
from ..config import paths, running
from ..config.tables import Config, load_config
from ..config.typed import ConfigError
from ..delivery.commands import config_option, fail, json_option, read_config, table
from ..delivery.discovery import add_commands, discover, with_instances
from ..delivery.pluginhost import PluginError, PluginHost, load_plugins
from ..http.worker import ListenError, leaves
from ..ingest import transfer
from ..ingest.normalize import BadReport, Reporter
from ..model import Device, isotime
from ..ops.log import describe, escape, redact, setup_logging, shorten
from ..push.fanout import VERBS, BadPush, UnknownUser, parse_request, push_once
from ..storage.interface import Failure, Store, StoreError
from ..storage.sqlite.store import SQLiteStore

log = logging.getLogger("pnbridge")

def read_plugins(config: Config) -> PluginHost:
    """The plugins of ``config``, with what the auth settings need of them and of the users
    file checked."""
    try:
        plugins = load_plugins(config.plugins)
        if problems := plugin_problems(config, plugins):
            raise ConfigError(problems)
        load_users(config)
    except ConfigError as error:
        fail(*(f"error: {line}" for line in error.errors))
    return plugins


def open_store(config: Config, *, create: bool = False, reading: bool = False) -> Store:
    """The database of ``config``, which must exist already (serve creates it) unless
    ``create``; opened read-only, never migrated, when ``reading``."""
    path = config.storage.path
    if not create and not os.path.exists(path):
        fail(f"no database at {os.path.abspath(path)} (start pnbridge serve once, or pass "
             "--config)")
    try:
        return SQLiteStore(path, config.storage.busy_timeout, reading=reading)
    except StoreError as error:
        fail(str(error))


class Main(click.Group):
    """The ``pnbridge`` group: its own commands, and those the plugins add
    (``register_commands``), which are looked for when the command line is read."""

    plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self.plugins_added:
            self.plugins_added = True
            for problem in add_commands(self):
                click.echo(f"pnbridge: warning: {escape(problem)}", err=True)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pnbridge")
def main() -> None:
    """Push token and account removal reporter for Acrobits softphones."""
    for arg in sys.argv[1:]:  # bytes that are no UTF-8 arrive as lone surrogates
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            fail(f"argument {ascii(arg)[:60]} is not valid UTF-8")


@main.command()
@config_option
def serve(config_path: str | None) -> None:
    """Run the daemon until SIGINT or SIGTERM."""
    from ..server import run

    config = read_config(config_path)
    setup_logging(config.server.log_level)
    plugins = read_plugins(config)
    if config_path is None:
        log.info(
            "no config file given and no %s: running on the embedded defaults "
            "(listen %s, database ./%s, no plugins)", paths.default_config_location(),
            ", ".join(config.server.listen), config.storage.path,
        )
    else:
        log.info("config %s", config_path)
    for warning in security_warnings(config, config_path):
        log.warning(warning)
    # fail() only after the except* blocks: a SystemExit raised inside one reaches CPython
    # 3.11.0-3.11.3 (Debian 12's python3) wrapped in a group, printed as a traceback.
    failed: list[str] = []
    try:
        trio.run(partial(
            run, config, handle_signals=True, load_config=partial(load_config, config_path),
            plugins=plugins,
        ))
    except* (PluginError, StoreError, ConfigError, ListenError) as group:
        failed += map(str, leaves(group))
    except* OSError as group:
        failed += (f"cannot serve: {describe(e)}" for e in leaves(group))
    if failed:
        fail(*failed)


@main.command("check-config")
@config_option
@click.option("--user", "service_user", metavar="NAME",
              help="Check that this user can read (and write) every file the daemon needs "
              f"(default: {paths.SERVICE_USER}, for {paths.DEFAULT_CONFIG}).")
def check_config(config_path: str | None, service_user: str | None) -> None:
    """Validate a config file (and the settings of its plugins); print every error with its key."""
    config = read_config(config_path)
    read_plugins(config)
    try:
        service = paths.service_account(config_path, service_user)
    except ValueError as error:
        fail(str(error))
    for warning in security_warnings(config, config_path, service):
        click.echo(f"pnbridge: WARNING: {warning}", err=True)
    for line in running.notes(*running.compare(config)):
        click.echo(f"pnbridge: note: {escape(line)}", err=True)
    if service and (problems := paths.access_problems(config, config_path, service)):
        fail(*(f"error: {problem}" for problem in problems))
    click.echo(f"{config_path or 'embedded defaults'}: OK")


@main.command()
@config_option
@click.option("--user", "user", help="The service user to check access as (default: you).")
@click.option("--root", type=click.Path(file_okay=False),
              help="Check the systemd units of the system image at this directory.")
def doctor(config_path: str | None, user: str | None, root: str | None) -> None:
    """Check the install: config, file access, database, ports, plugins, systemd unit.
    Exit status 0: all ok, 1: a warning, 2: a failure."""
    from ..ops import doctor as checks

    findings = trio.run(checks.run, config_path, user, root)
    for finding in findings:
        click.echo(redact(escape(finding.line())))
    raise SystemExit(checks.exit_status(findings))


@main.group("config")
def config_group() -> None:
    """The example config."""


@config_group.command("sample")
def config_sample() -> None:
    """Print the fully commented example config (every key with its default)."""
    from ..ops.shipped import sample_config

    click.echo(sample_config(), nl=False)


@main.command("install-units")
@click.option("--prefix", default="/", show_default=True, type=click.Path(file_okay=False),
              help="Write under this directory (a system image) instead of /.")
def install_units(prefix: str) -> None:
    """Write the systemd units (ExecStart= this pnbridge) to PREFIX/etc/systemd/system and
    the docs to PREFIX/usr/share/doc/pnbridge."""
    from ..ops.shipped import install_units as write

    try:
        written = write(prefix)
    except OSError as error:
        fail(f"install-units: cannot write {error.filename}: {error.strerror}")
    for path in written:
        click.echo(f"wrote {path}")


@main.group()
def devices() -> None:
    """List, show and remove stored devices (no running daemon needed)."""


@devices.command("list")
@config_option
@click.option("--username", help="Only this user's devices.")
@click.option("--limit", type=click.IntRange(min=0), default=0, show_default=True,
              help="List the first N devices (0: all); the count goes to stderr.")
@json_option
def devices_list(config_path: str | None, username: str | None, limit: int,
                 as_json: bool) -> None:
    """List devices (by username and selector); how many there are goes to stderr."""
    store = open_store(read_config(config_path), reading=True)
    found = store.devices(username, limit or -1)
    total = store.count_devices(username) if limit else len(found)
    store.close()
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in found], indent=2))
    else:
        rows = [("SELECTOR", "USERNAME", "CALLS TOKEN", "MSGS TOKEN", "LAST SEEN")]
        rows += [
            (d.selector, d.username, shorten(d.token_calls), shorten(d.token_msgs),
             isotime(d.last_seen))
            for d in found
        ]
        table(rows)
    shown = f"{len(found):,} of " if len(found) < total else ""
    click.echo(f"{shown}{total:,} device{'' if total == 1 else 's'}", err=True)


@devices.command("show")
@config_option
@click.argument("selector")
@json_option
def devices_show(config_path: str | None, selector: str, as_json: bool) -> None:
    """Show one device in full."""
    store = open_store(read_config(config_path), reading=True)
    device = store.device(selector)
    store.close()
    if device is None:
        fail(f"no device with selector {selector}")
    if as_json:
        click.echo(json.dumps(device.to_dict(), indent=2))
        return
    for key, value in _describe(device).items():
        click.echo(f"{key + ':':<13} {escape(value)}")


def _describe(device: Device) -> dict[str, Any]:
    data = device.to_dict()
    data["extras"] = json.dumps(data["extras"]) if data["extras"] else "-"
    return {k: "-" if v is None else v for k, v in data.items()}


@devices.command("remove")
@config_option
@click.argument("selector")
def devices_remove(config_path: str | None, selector: str) -> None:
    """Remove a device (a removal event with reason "operator")."""
    store = open_store(read_config(config_path))
    with store.transaction():
        changes = store.remove(
            selector=selector, reason="operator",
            source={"command": "devices remove"}, now=time.time(),
        )
    store.close()
    if not changes:
        fail(f"no device with selector {selector}")
    click.echo(escape(f"removed {selector} (username {changes[0].device.username})"))



@devices.command("export")
@config_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True, help="JSON lines (one device a line) or CSV with a header.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write here (created with mode 0600: it holds tokens) instead of stdout.")
def devices_export(config_path: str | None, fmt: transfer.Format, output: str) -> None:
    """Write every device to stdout (or --output), for pnbridge devices import elsewhere."""
    store = open_store(read_config(config_path), reading=True)
    found = store.devices()
    store.close()
    try:
        with _output(output) as out, _bar(len(found), "exporting", out) as advance:
            count = transfer.export(found, fmt, out, advance)
    except OSError as error:
        fail(f"--output: cannot write {output}: {error.strerror or error}")
    click.echo(f"exported {count} device(s)", err=True)


@contextlib.contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    """stdout for ``-``; else the file ``path``, mode 0600 whatever the umask (a device such
    as /dev/null keeps its own)."""
    if path == "-":
        yield click.open_file("-", "w")
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
    except OSError as error:
        fail(f"--output: cannot write {path}: {error.strerror}")
    with open(fd, "w", encoding="utf-8", newline="") as out:
        yield out


@devices.command("import")
@config_option
@click.argument("file", type=click.File("rb"))
def devices_import(config_path: str | None, file: BinaryIO) -> None:
    """Import devices from FILE (JSON lines or CSV, as export writes them; - for stdin).

    The whole file is read first: one that is not UTF-8 is refused, nothing imported. Bad
    rows are reported with their line number and left out; the rest is written in one
    transaction, keeping the times the file gives. Beyond [storage] max_devices_per_user,
    a user's most recently seen devices are kept. Importing the same file twice changes
    nothing; each new or changed device is an event. The exit status is 1 when a row was
    left out.
    """
    config = read_config(config_path)
    reporter = Reporter(config.reporter)
    source = {"command": "devices import", "file": file.name}
    problems: list[str] = []
    rows: list[transfer.Row] = []
    now = time.time()
    data = file.read()
    try:
        text = transfer.decode(data, file.name)
    except transfer.Unreadable as error:
        fail(str(error))
    with _bar(len(text.encode()), "importing") as advance:
        lines = transfer.counting(io.StringIO(text), advance)
        for number, row in transfer.read_rows(lines):
            try:
                if isinstance(row, str):
                    raise BadReport(row)
                rows.append(transfer.to_row(reporter, number, row, now))
            except BadReport as error:
                problems.append(f"{file.name}: line {number}: {error} (skipped)")
    outcomes: Counter[str] = Counter()
    store = open_store(config, create=True)
    try:
        with store.transaction():
            plan = transfer.plan(store, rows, config.storage.max_devices_per_user, now)
            with _bar(len(plan.rows), "writing") as advance:
                for device in plan.evict:
                    store.remove(selector=device.selector, reason="evicted",
                                 source=source, now=now)
                for planned in plan.rows:
                    outcomes[transfer.import_row(store, planned,
                                                 {**source, "line": planned.line}, now)] += 1
                    advance(1)
    except sqlite3.Error as error:
        fail(f"cannot write database {config.storage.path}: {error}: nothing imported")
    finally:
        store.close()
    for line in problems + plan.notes:
        click.echo(f"pnbridge: {escape(line)}", err=True)
    summary = ", ".join(f"{outcomes[o]} {o}" for o in ("created", "changed", "unchanged"))
    summary += f", {len(problems)} skipped"
    if plan.over_cap:
        summary += f", {plan.over_cap} over the cap"
    if plan.evict:
        summary += f", {len(plan.evict)} stored evicted"
    click.echo(escape(f"imported {file.name}: {summary}"))
    if problems or plan.over_cap:
        raise SystemExit(1)


@contextlib.contextmanager
def _bar(length: int, label: str, out: IO[str] | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``length`` items on a terminal (not when ``out``, where the
    items go, is that terminal); elsewhere nothing."""
    if not length or not sys.stderr.isatty() or (out is not None and out.isatty()):
        yield lambda _: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


@main.command("plugins")
@config_option
@json_option
def plugins_list(config_path: str | None, as_json: bool) -> None:
    """List every plugin found, whether it is enabled, and the hooks it implements."""
    config = read_config(config_path)
    errors: list[str] = []
    found = with_instances(discover(config.plugins.paths, errors), config.plugins)
    for line in errors:
        click.echo(f"pnbridge: warning: {escape(line)}", err=True)
    enabled = config.plugins.enabled
    record, differ = running.compare(config)
    for line in running.notes(record, differ):
        click.echo(f"pnbridge: {escape(line)}", err=True)
    runs = {p.name: record is not None and p.name in record.enabled for p in found.values()}
    if as_json:  # "running": null when no daemon runs on this database
        click.echo(json.dumps([{**p.to_dict(p.name in enabled),
                                "running": runs[p.name] if record else None}
                               for p in found.values()], indent=2))
        return
    rows = [("NAME", "ENABLED", *["RUNNING"][:bool(record)], "HOOKS", "SOURCE")]
    rows += [
        (p.name, "yes" if p.name in enabled else "no",
         *["yes" if runs[p.name] else "no"][:bool(record)],
         f"error: {p.error}" if p.error else ", ".join(p.hooks) or "-", p.source)
        for p in found.values()
    ]
    table(rows)


@main.group("events", invoke_without_command=True)
@config_option
@click.option("--plugin", help="Only this plugin's delivery state.")
@click.option("--failed", is_flag=True, help="Only events parked as failed.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="List the newest N events of the journal (0: all of it).")
@json_option
@click.pass_context
def events(
    ctx: click.Context, config_path: str | None, plugin: str | None, failed: bool, limit: int,
    as_json: bool,
) -> None:
    """List the event journal (the newest --limit events) and each enabled plugin's delivery
    state."""
    if ctx.invoked_subcommand is not None:
        return
    config = read_config(config_path)
    store = open_store(config, reading=True)
    if failed:
        parked = store.failures(plugin)
        store.close()
        _show_failures(parked, as_json)
        return
    record, differ = running.compare(config)
    for line in running.notes(record, differ):
        click.echo(f"pnbridge: {escape(line)}", err=True)
    plugins = [plugin] if plugin else record.enabled if record else config.plugins.enabled
    cursors, parked = store.cursors(), store.failures(plugin)
    journal = store.newest_events(limit) if limit else store.events(0, limit=-1)
    store.close()
    states = {(f.plugin, f.event.seq): "failed" if f.status == "parked" else "retry"
              for f in parked}
    listed = []
    for event in journal:
        status = {
            name: states.get((name, event.seq))
            or ("delivered" if event.seq <= cursors.get(name, 0) else "pending")
            for name in plugins
        }
        listed.append((event, status))
    if as_json:
        data = [{**event.to_dict(), "plugins": status} for event, status in listed]
        click.echo(json.dumps(data, indent=2))
        return
    rows = [("SEQ", "TIME", "KIND", "REASON", "SELECTOR", "USERNAME", "PLUGINS")]
    rows += [
        (str(e.seq), isotime(e.time), e.kind, e.reason, e.selector, e.username,
         " ".join(f"{name}:{state}" for name, state in status.items()) or "-")
        for e, status in listed
    ]
    table(rows)


def _show_failures(parked: list[Failure], as_json: bool) -> None:
    parked = [replace(f, error=redact(f.error)) for f in parked]  # stored by older versions
    if as_json:
        click.echo(json.dumps([f.to_dict() for f in parked], indent=2))
        return
    rows = [("SEQ", "ID", "KIND", "SELECTOR", "PLUGIN", "STATUS", "ATTEMPTS", "ERROR")]
    rows += [
        (str(f.event.seq), f.event.id, f.event.kind, f.event.selector, f.plugin,
         "failed" if f.status == "parked" else "retry", str(f.attempts), f.error)
        for f in parked
    ]
    table(rows)


@events.command("retry")
@config_option
@click.option("--plugin", help="Only events parked by this plugin.")
@click.argument("event", nargs=-1)
def events_retry(config_path: str | None, plugin: str | None, event: tuple[str, ...]) -> None:
    """Send parked events (seq or id; all when none given) again.

    A running daemon picks them up within a second; otherwise at its next start.
    """
    store = open_store(read_config(config_path))
    with store.transaction():
        count = store.retry(plugin, event)
    store.close()
    if event and not count:
        fail("no parked event matches " + " ".join(event))
    click.echo(f"{count} parked event(s) will be sent again")


@main.group("users")
def users_group() -> None:
    """Manage the users file of the digest and basic reporter modes ([auth] users_file)."""


def _users_file(config: Config) -> tuple[str, dict[str, users.User]]:
    path = config.auth.users_file
    if not path:
        fail("no users file: set [auth] users_file in the config")
    if not os.path.exists(path):
        return path, {}
    try:
        return path, users.read(path)
    except users.UsersFileError as error:
        fail(str(error))


def _write_users(path: str, known: dict[str, users.User]) -> None:
    try:
        users.write(path, known)
    except users.UsersFileError as error:
        fail(str(error))


@users_group.command("add")
@config_option
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
def users_add(config_path: str | None, username: str, password_stdin: bool) -> None:
    """Add USERNAME, or set a new password for it (asked twice on a terminal)."""
    config = read_config(config_path)
    path, known = _users_file(config)
    if problem := users.name_problem(username) or users.write_problem(path):
        fail(problem)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        fail("stdin is no terminal: pass the password with --password-stdin")
    if not password:
        fail("the password is empty")
    existed = username in known
    known[username] = users.new_user(username, config.auth.realm, password)
    _write_users(path, known)
    click.echo(f"{'changed' if existed else 'added'} {username} (realm {config.auth.realm}) in "
               f"{path}; a running daemon reads it on SIGHUP")


@users_group.command("remove")
@config_option
@click.argument("username")
def users_remove(config_path: str | None, username: str) -> None:
    """Remove USERNAME from the users file."""
    path, known = _users_file(read_config(config_path))
    if known.pop(username, None) is None:
        fail(f"no user {username} in {path}")
    _write_users(path, known)
    click.echo(f"removed {username} from {path}; a running daemon reads it on SIGHUP")


@users_group.command("list")
@config_option
def users_list(config_path: str | None) -> None:
    """List the users (a realm other than [auth] realm cannot use digest)."""
    config = read_config(config_path)
    path, known = _users_file(config)
    if not os.path.exists(path):
        fail(f"no users file at {path} yet: pnbridge users add USERNAME creates it")
    rows = [("USERNAME", "REALM")]
    rows += [
        (u.name, u.realm + ("" if u.realm == config.auth.realm else " (not [auth] realm)"))
        for u in sorted(known.values(), key=lambda u: u.name)
    ]
    table(rows)


@main.command("push")
@config_option
@click.argument("verb", type=click.Choice(VERBS))
@click.option("--username", required=True, help="The user whose devices get the push.")
@click.option("--selector", help="Only this device of the user.")
@click.option("--id", "push_id", help="The call's id (required for the call verbs).")
@click.option("--message", help="The text to show.")
@click.option("--badge", type=click.IntRange(min=0), help="The app badge number.")
@click.option("--sound", help="The sound to play.")
@click.option("--display-name", help="The caller's or sender's name.")
@click.option("--thread-id", help="The conversation, to group notifications.")
@json_option
def push(config_path: str | None, verb: str, username: str, as_json: bool,
         **fields: Any) -> None:
    """Send VERB to the devices of a user, as the push API does; print what happened to each.

    The enabled plugins that send pushes (pnmediator) start and stop around it; no other
    plugin runs (an auditlog would create its file as you). Exits 0 when
    at least one device was sent the push, else 1.
    """
    config = read_config(config_path)
    setup_logging("error")
    fields["id"] = fields.pop("push_id")
    given = {k: v for k, v in fields.items() if v is not None}
    try:
        wanted = parse_request({"username": username, "verb": verb, **given})
    except BadPush as error:
        fail(f"--{error.field.replace('_', '-')}: {str(error).split(': ', 1)[1]}")
    open_store(config).close()
    host = read_plugins(config)
    failed: list[str] = []  # fail() after the except* blocks: see serve
    try:
        results = trio.run(push_once, config, host, wanted)
    except* UnknownUser:
        failed.append(f"no device of user {username}" + (
            f" with selector {wanted.selector}" if wanted.selector else ""))
    except* (LookupError, PluginError, StoreError) as group:
        failed += map(str, leaves(group))
    if failed:
        fail(*failed)
    if as_json:
        click.echo(json.dumps({"username": username, "verb": verb,
                               "devices": [r.to_dict() for r in results]}, indent=2))
    else:
        rows = [("SELECTOR", "PAIR", "OUTCOME", "ATTEMPTS", "REASON")]
        rows += [(r.selector, r.pair or "-", r.outcome, str(r.attempts), r.reason or "-")
                 for r in results]
        table(rows)
    if not any(r.outcome == "sent" for r in results):
        raise SystemExit(1)


@main.group("api-key")
def api_key() -> None:
    """Keys of the push API."""


@api_key.command("new")
def api_key_new() -> None:
    """Print a new random key (give it to the PBX) and its hash line (for [api] key_hashes)."""
    key = apikeys.new_key()
    click.echo(f"key:  {key}")
    click.echo(f'hash: "{apikeys.hash_key(key)}"   # add to [api] key_hashes')
