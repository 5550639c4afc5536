"""Properties of the normalizer over arbitrary tokens, field spellings and encodings."""

from __future__ import annotations

import contextlib
import json
import string
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from pnbridge.config.tables import ReporterConfig
from pnbridge.errors import BadReport
from pnbridge.ingest.fields import fold, is_nullish
from pnbridge.ingest.normalize import Reporter

REPORTER = Reporter(ReporterConfig())
tokens = st.text(string.ascii_letters + string.digits + "+/=", min_size=1, max_size=300).filter(
    lambda t: t.strip("=") and not is_nullish(t)
)
selectors = st.from_regex(r"[0-9A-F]{40}:[0-9A-F]{8}", fullmatch=True)
usernames = st.text(string.ascii_letters + string.digits + "._@-", min_size=1, max_size=40).filter(
    lambda u: not is_nullish(u)
)


@given(token=tokens, selector=selectors, username=usernames)
def test_unencoded_tokens_survive_query_and_form(token, selector, username):
    raw = f"username={quote(username)}&selector={selector}&token_msgs={token}&token_calls={token}"
    from_query = REPORTER.read("token", {}, raw.encode(), b"", None)
    from_form = REPORTER.read("token", {}, b"", raw.encode(), None)
    for report in (from_query, from_form):
        assert (report.token_msgs, report.token_calls) == (token, token)
        assert (report.username, report.selector) == (username, selector)


@given(token=tokens, selector=selectors, username=usernames)
def test_encoded_tokens_survive_every_shape(token, selector, username):
    encoded = f"username={quote(username, safe='')}&selector={quote(selector, safe='')}&token={quote(token, safe='')}"
    body = json.dumps({"username": username, "selector": selector, "pushToken": token}).encode()
    for report in (
        REPORTER.read("token", {}, encoded.encode(), b"", None),
        REPORTER.read("token", {}, b"", body, "application/json"),
        REPORTER.read("token", {}, b"", body, None),
    ):
        assert (report.username, report.selector, report.token_msgs) == (username, selector, token)


@given(st.sampled_from(["pushTokenIncomingCall", "pushappid_incoming_call", "appId_msgs", "app_id_calls"]),
       st.data())
def test_alias_spellings_are_case_and_separator_blind(name, data):
    spelled = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in name)
    spelled = spelled.replace("_", data.draw(st.sampled_from(["_", "-", ""])))
    assert fold(spelled) == fold(name)
    assert REPORTER.fields.canonical(spelled) == REPORTER.fields.canonical(name) is not None


@given(st.dictionaries(st.text(max_size=20), st.one_of(st.none(), st.booleans(), st.integers(),
                                                        st.floats(allow_nan=False), st.text(max_size=50),
                                                        st.lists(st.integers(), max_size=3)),
                       max_size=8),
       st.sampled_from(["application/json", "text/plain", None, "application/x-www-form-urlencoded"]))
def test_arbitrary_json_objects_give_a_report_or_a_bad_report(obj, content_type):
    try:
        report = REPORTER.read("token", {}, b"", json.dumps(obj).encode(), content_type)
    except BadReport as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert report.username and report.selector and report.tokens


@given(st.binary(max_size=300), st.binary(max_size=100))
def test_arbitrary_bytes_never_raise_anything_but_bad_report(body, query):
    with contextlib.suppress(BadReport):
        REPORTER.read("removal", {}, query, body, "application/json; charset=utf-8")


def _never_crashes(kind, query, body, content_type):
    """A Report the store can act on, or BadReport with a one-line reason."""
    try:
        report = REPORTER.read(kind, {}, query, body, content_type)
    except BadReport as error:
        assert str(error) and "\n" not in str(error)
    else:
        if kind == "token":
            assert report.selector and report.username and report.tokens
        else:
            assert report.selector or (report.username and report.tokens)


field_names = st.one_of(st.text(max_size=30), st.sampled_from(
    ["username", "selector", "pushToken", "token_msgs", "TOKEN-CALLS", "appId_msgs", "password",
     "username[]", "selector.x", "__proto__", "", " ", "\x00", "\ufeff"]))
values = st.one_of(st.text(max_size=60), st.sampled_from(["null", "(null)", "<null>", "", " "]))
encodings = st.sampled_from(["utf-8", "latin-1", "utf-16", "utf-32", "cp1252", "utf-8-sig"])
content_types = st.one_of(
    st.none(), st.text(max_size=40),
    st.sampled_from(["application/json", "application/json; charset=utf-16", "text/plain",
                     "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; "
                     "charset=latin-1", "multipart/form-data; boundary=x", "text/json",
                     "application/vnd.api+json", "*/*", ";;;", "application/json; charset=bogus"]))


@given(st.lists(st.tuples(field_names, values), max_size=10), encodings, content_types,
       st.sampled_from(["token", "removal"]))
def test_arbitrary_fields_encodings_and_content_types(pairs, encoding, content_type, kind):
    form = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    raw_form = "&".join(f"{k}={v}" for k, v in pairs)
    as_json = "{" + ",".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    for text in (form, raw_form, as_json):
        try:
            body = text.encode(encoding)
        except UnicodeEncodeError:
            body = text.encode("utf-8", "surrogatepass")
        _never_crashes(kind, body, b"", content_type)
        _never_crashes(kind, b"", body, content_type)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=30),
       content_types)
def test_arbitrary_json_documents(document, content_type):
    _never_crashes("token", b"", json.dumps(document).encode(), content_type)


@given(st.integers(min_value=1, max_value=5000))
def test_deeply_nested_json_is_a_bad_report(depth):
    _never_crashes("token", b"", b"[" * depth + b"]" * depth, "application/json")
    _never_crashes("token", b"", b'{"a":' * depth + b"1" + b"}" * depth, None)
