"""Pure handshake rules: origin lists with wildcards, the query, the phoenix.js token subprotocol."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chanctl.origins import OriginPolicy
from chanctl.server.handshake import query_params, token_from_subprotocols

POLICY = OriginPolicy(["https://app.example.com", "//chanctl.dev", "*.example.org", "http://localhost:8080"])


@pytest.mark.parametrize(
    "origin, allowed",
    [
        (None, True),
        ("https://app.example.com", True), ("https://app.example.com:8443", True), ("http://app.example.com", False),
        ("https://chanctl.dev", True), ("http://chanctl.dev:3000", True), ("https://x.chanctl.dev", False),
        ("https://example.org", True), ("https://a.b.example.org", True), ("https://badexample.org", False),
        ("http://localhost:8080", True), ("http://localhost:8081", False),
        ("null", False), ("https://app.example.com:99999", False), ("", False),
    ],
)
def test_origin_policy(origin, allowed):
    assert POLICY.allows(origin) is allowed


def test_an_origin_entry_without_a_host_is_refused():
    with pytest.raises(ValueError, match="names no host"):
        OriginPolicy(["https://"])


def test_token_from_subprotocols_takes_btoa_without_padding_and_urlsafe_too():
    token = "ab?c>de"  # base64: "YWI/Yz5kZQ==", a "/" and padding
    b64 = base64.b64encode(token.encode()).decode()
    assert token_from_subprotocols(["phoenix", "base64url.bearer.phx." + b64.rstrip("=")]) == token
    urlsafe = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    assert token_from_subprotocols(["base64url.bearer.phx." + urlsafe, "phoenix"]) == token
    assert token_from_subprotocols(["phoenix"]) is None
    assert token_from_subprotocols(["base64url.bearer.phx.!!!"]) is None


@pytest.mark.parametrize("query", [
    "token=a.b.c&vsn=2.0.0", "vsn=1.0.0&vsn=2.0.0", "token=&vsn=2.0.0", "token&vsn", "=x&&a=1", "",
    "token=a%2Eb&vsn=2.0.0", "token=a+b", "a=b=c", "apikey=k&token=t",
])
def test_query_params_are_parse_qs_last_values(query):
    assert query_params(query) == {name: values[-1] for name, values in parse_qs(query).items()}


@given(st.text(alphabet="ab=&%+.2E-_ ", max_size=30))
def test_query_params_agree_with_parse_qs_on_any_query(query):
    assert query_params(query) == {name: values[-1] for name, values in parse_qs(query).items()}
