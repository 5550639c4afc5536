"""Properties of the normalizer over arbitrary tokens, field spellings and encodings."""

from __future__ import annotations

import contextlib
import json
import string
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from pnbridge.config import ReporterConfig
from pnbridge.fields import fold, is_nullish
from pnbridge.reporter import BadReport, Reporter

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
