"""The PBX files pnbridge ships (config/pbx/asterisk, config/pbx/freeswitch): the docs quote
them as they are, the dialplan reads as Asterisk reads extensions.conf, its AGI calls work
against the real daemon, and the JSON of the curl variants survives the PBX's own argument
parsing."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio
from agitools import CONTACT, UNIQUEID, agi_config, session
from pnbridge.agi.scripts import POSITIONAL, SCRIPTS
from pnmediator_stub import Stub
from reports import report

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "pbx-integration.md"
SHIPPED = [ROOT / "config" / "pbx" / d for d in ("asterisk", "freeswitch")]
DIALPLAN = ROOT / "config" / "pbx" / "asterisk" / "extensions.conf"


def quoted_files() -> dict[str, str]:
    """Each block of the doc marked ``<!-- shipped: PATH -->``: PATH and the block's text."""
    found = re.findall(r"<!-- shipped: (\S+) -->\n```[a-z]*\n(.*?)```\n", DOC.read_text(),
                       re.S)
    return dict(found)


def test_the_doc_quotes_every_shipped_file_as_it_is():
    quoted = quoted_files()
    files = sorted(str(p.relative_to(ROOT)) for d in SHIPPED for p in d.iterdir())
    assert files and set(files) <= set(quoted), files
    for path, text in quoted.items():
        assert (ROOT / path).read_text() == text, path


def dialplan(text: str) -> dict[str, dict[str, list[tuple[int, str | None, str, str]]]]:
    """extensions.conf read as Asterisk's pbx_config reads it: context, extension, then
    (priority, label, application, data) per line; AssertionError on what it refuses."""
    contexts: dict[str, dict[str, list[tuple[int, str | None, str, str]]]] = {}
    context = extension = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(?<!\\);.*", "", raw).strip()
        if not line:
            continue
        if head := re.fullmatch(r"\[([A-Za-z0-9_-]+)\]", line):
            context = head[1]
            assert context not in contexts, f"line {number}: context {context} twice"
            contexts[context], extension = {}, None
            continue
        found = re.fullmatch(r"(exten|same)\s*=>\s*(.*)", line)
        assert found and context, f"line {number}: not a context, exten or same: {raw}"
        rest = found[2]
        if found[1] == "exten":
            extension, _, rest = rest.partition(",")
            assert extension, f"line {number}: no extension"
        assert extension is not None, f"line {number}: same => before any exten"
        step = re.fullmatch(r"(\d+|n)(?:\(([A-Za-z0-9_-]+)\))?,([A-Za-z]+)(?:\((.*)\))?", rest)
        assert step, f"line {number}: not priority,App(data): {rest}"
        steps = contexts[context].setdefault(extension, [])
        priority = 1 if not steps else steps[-1][0] + 1
        assert step[1] == ("1" if not steps else "n") or int(step[1]) == priority, (
            f"line {number}: priority {step[1]}, expected {priority}")
        data = step[4] or ""
        assert data.count("(") == data.count(")"), f"line {number}: unbalanced parentheses"
        assert data.count("${") <= data.count("}"), f"line {number}: unclosed ${{"
        steps.append((priority, step[2], step[3], data))
    return contexts


def test_the_dialplan_reads_as_asterisk_config():
    contexts = dialplan(DIALPLAN.read_text())
    assert set(contexts) == {"pnbridge-call", "pnbridge-push-id", "pnbridge-answered",
                             "pnbridge-hangup"}
    targets = set()
    for context, extensions in contexts.items():
        for steps in extensions.values():
            labels = {label for _, label, _, _ in steps if label}
            for _, _, app, data in steps:
                for label in re.findall(r"\]\?([A-Za-z0-9_-]+)\)?$", data) if app == "GotoIf" \
                        else []:
                    assert label in labels, f"{context}: GotoIf to a missing label {label}"
                targets |= set(re.findall(r"[bU]\(([a-z-]+)\^", data))
                targets |= set(re.findall(r"hangup_handler_push\)=([a-z-]+),", data))
            if context != "pnbridge-call":
                assert steps[-1][2] == "Return", f"{context}: a subroutine ends with Return()"
    assert targets == {"pnbridge-push-id", "pnbridge-answered", "pnbridge-hangup"}


def agi_calls(text: str) -> list[tuple[str, list[str]]]:
    """Each AGI(agi://127.0.0.1:4573/SCRIPT,ARGS...) of the dialplan: script and arguments."""
    calls = []
    for found in re.finditer(r"AGI\(agi://127\.0\.0\.1:4573/([^,)]*)((?:,[^,)]*)*)\)", text):
        calls.append((found[1], found[2].split(",")[1:]))
    return calls


def test_the_dialplan_calls_every_script_with_arguments_it_takes():
    calls = agi_calls(DIALPLAN.read_text())
    assert sorted(script for script, _ in calls) == sorted(SCRIPTS)
    for script, args in calls:
        assert len(args) <= len(POSITIONAL[script])


@pytest.fixture
async def stub(nursery: trio.Nursery) -> Stub:
    return await nursery.start(Stub().serve)


# What the dialplan's variables hold when it reaches each AGI call.
VALUES = {"${PNBRIDGE_USER}": "1001", "${ARG1}": "1001", "${PNBRIDGE_PUSH_ID}": UNIQUEID,
          "${ARG2}": UNIQUEID}


async def test_the_dialplans_agi_calls_work_against_the_daemon(start_daemon, stub):
    daemon = await start_daemon(agi_config(stub))
    await report(daemon, "IPHONE",
                 path="/token", username="1001", token=None, calls="voip-tok", msgs="apns-tok")
    for script, args in agi_calls(DIALPLAN.read_text()):
        values = [VALUES.get(arg, arg) for arg in args]
        assert not any("$" in value for value in values), values
        asterisk = await session(daemon, script, *values, contacts=[f"200 result=1 ({CONTACT})"],
                                 agi_extension="s")
        assert asterisk.variables["PNBRIDGE_STATUS"] in ("sent", "queued"), asterisk.variables
    with trio.fail_after(5):  # the follow-ups return before their push is done
        while len(stub.requests) < 3:
            await trio.sleep(0.01)
    verbs = sorted({(r["verb"], r["Id"]) for r in stub.requests})
    assert verbs == sorted((verb, UNIQUEID) for verb in (
        "NotifyIncomingCall", "NotifyIncomingCallMissed", "NotifyIncomingCallAnsweredElsewhere"))


def asterisk_function_args(text: str) -> list[str]:
    """A dialplan function's arguments as Asterisk separates them (__ast_app_separate_args
    with remove_chars): split on "," outside (), [] and quotes; quotes removed; a backslash
    keeps the next character."""
    args, current, paren, bracket, quote, escaped = [], "", 0, 0, False, False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quote = not quote
        elif char == "," and not (paren or bracket or quote):
            args, current = [*args, current], ""
        else:
            paren += (char == "(") - (char == ")" and paren > 0)
            bracket += (char == "[") - (char == "]" and bracket > 0)
            current += char
    return [*args, current]


def curl_calls(text: str) -> list[str]:
    """The argument text of each ${CURL(...)} in ``text``, parentheses matched."""
    calls = []
    for found in re.finditer(r"\$\{CURL\(", text):
        depth, start = 1, found.end()
        for index in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[index], 0)
            if depth == 0:
                calls.append(text[start:index])
                break
    return calls


def test_the_curl_variant_sends_json_that_asterisk_leaves_whole():
    doc = DOC.read_text()
    calls = curl_calls(doc)
    assert len(calls) == 2
    for call in calls:
        text = call.replace("${EXTEN}", "1001").replace("${PUSHID}", "1733467000.42")
        url, body = asterisk_function_args(text)
        assert url == "http://127.0.0.1:8080/api/v1/push"
        data = json.loads(body)
        assert data["username"] == "1001" and data["id"] == "1733467000.42"
        assert data["verb"] in ("NotifyIncomingCall", "NotifyIncomingCallMissed")
    # Without the escapes it is what the issue saw arrive.
    assert asterisk_function_args('u,{"username":"1001","verb":"x"}') == [
        "u", "{username:1001", "verb:x}"]


def freeswitch_args(text: str) -> list[str]:
    """An application's data as FreeSWITCH's switch_separate_string splits it on spaces:
    quotes ('...' or "...") keep spaces and are removed, the other kind inside them kept; a
    backslash keeps the next character."""
    args, current, inside, escaped, started = [], "", "", False, False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = started = True
        elif char in "'\"" and inside in ("", char):
            inside, started = ("" if inside else char), True
        elif char == " " and not inside:
            if started:
                args.append(current)
            current, started = "", False
        else:
            current, started = current + char, True
    return [*args, current] if started else args


def test_the_freeswitch_extension_is_xml_and_its_json_survives_the_argument_parser():
    root = ET.parse(ROOT / "config" / "pbx" / "freeswitch" / "pnbridge.xml").getroot()
    actions = root.findall("./extension/condition/action")
    bodies = []
    for action in actions:
        data = action.get("data", "")
        if action.get("application") == "set" and "=curl " in data:
            data = data.partition("=")[2].removeprefix("curl ")
        elif action.get("application") != "curl":
            continue
        args = freeswitch_args(data)
        assert len(args) <= 10, args  # mod_curl reads at most 10, the url included
        assert args[args.index("append_headers") + 1] == "Authorization: Bearer KEY"
        body = json.loads(args[args.index("post") + 1].replace("$1", "1001"))
        bodies.append((body["verb"], body["username"], body["id"]))
    assert sorted(bodies) == sorted((verb, "1001", "${push_id}") for verb in (
        "NotifyIncomingCall", "NotifyIncomingCallMissed", "NotifyIncomingCallAnsweredElsewhere"))
    applications = [a.get("application") for a in actions]
    assert applications.index("lua") < applications.index("bridge")
    assert freeswitch_args("post {\"a\":1}") == ["post", "{a:1}"]  # why the single quotes


@pytest.mark.parametrize("path", ["asterisk/extensions.conf", "freeswitch/pnbridge.xml",
                                  "freeswitch/pnbridge_wait.lua"])
def test_shipped_files_have_no_tabs_and_end_with_a_newline(path):
    text = (ROOT / "config" / "pbx" / path).read_text()
    assert text.endswith("\n") and "\t" not in text
