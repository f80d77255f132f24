"""Webhook signatures: fixed vectors, the SDK as a second opinion, hypothesis."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from stripeline.core.signature import compute_signature, parse_header, sign, verify
from stripeline.errors import SignatureError

# Computed with `openssl dgst -sha256 -hmac SECRET` over "t.body", not with our code.
VECTORS = [
    (
        "whsec_test_secret_one",
        1700000000,
        b'{"id":"evt_1","object":"event"}',
        "f47f64da9d1ba42eb488b654a981fb3ad1d6774e08e65b8ecea14a14ecf4d750",
    ),
    (
        "whsec_test_secret_two",
        1700000000,
        b'{"id":"evt_1","object":"event"}',
        "c915de56380b766e336f8006fbc4a662307f778f65fa5e1d8a1cfdc71ab9effe",
    ),
    (
        "whsec_0123456789abcdef",
        1234567890,
        b"",
        "3a000e8923e220ccdbdbefed12a2a7beb18fab70a1b6a7904162e087d37273c1",
    ),
    (
        "whsec_plain",
        1893456000,
        '{"ünï":"cødé"}\n'.encode(),
        "fb9db98dd777ab74e1720f711fc87fe32e64b84227a3f693f02e9b10249475db",
    ),
]


@pytest.mark.parametrize(("secret", "timestamp", "body", "expected"), VECTORS)
def test_fixed_vectors(secret: str, timestamp: int, body: bytes, expected: str) -> None:
    assert compute_signature(body, secret, timestamp) == expected
    header = f"t={timestamp},v1={expected}"
    assert verify(body, header, [secret], now=timestamp) == timestamp


@pytest.mark.parametrize(("secret", "timestamp", "body", "expected"), VECTORS)
def test_official_sdk_accepts_what_we_sign(
    secret: str, timestamp: int, body: bytes, expected: str
) -> None:
    header = sign(body, secret, timestamp)
    # The SDK checks the timestamp against the wall clock; tolerance 0 disables that.
    assert stripe.WebhookSignature.verify_header(body.decode(), header, secret, tolerance=0)


def test_two_rotated_secrets_both_verify() -> None:
    body = b'{"id":"evt_rot"}'
    old, new = "whsec_old_secret_value", "whsec_new_secret_value"
    for signer in (old, new):
        header = sign(body, signer, 1_700_000_000)
        assert verify(body, header, [old, new], now=1_700_000_000) == 1_700_000_000
    # Stripe sends one v1 per active secret while rolling: either secret alone suffices.
    both = sign(body, [old, new], 1_700_000_000)
    assert verify(body, both, [new], now=1_700_000_000)
    assert verify(body, both, [old], now=1_700_000_000)
    with pytest.raises(SignatureError) as err:
        verify(body, header, ["whsec_other_secret_value"], now=1_700_000_000)
    assert err.value.reason == "no_matching_signature"


def test_only_v1_counts() -> None:
    body = b"{}"
    good = compute_signature(body, "whsec_abcdefgh", 100)
    with pytest.raises(SignatureError) as err:
        verify(body, f"t=100,v0={good}", ["whsec_abcdefgh"], now=100)
    assert err.value.reason == "no_v1_signature"
    assert verify(body, f"t=100,v0=deadbeef,v1={good}", ["whsec_abcdefgh"], now=100) == 100


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_header"),
        ("", "missing_header"),
        ("garbage", "malformed_header"),
        ("v1=abc", "malformed_header"),
        ("t=abc,v1=abc", "malformed_header"),
        ("t=1,t=2,v1=abc", "malformed_header"),
        ("t=-5,v1=abc", "malformed_header"),
        ("t=100", "no_v1_signature"),
        ("t=100,v1=" + "0" * 64, "no_matching_signature"),
        ("t=100,v1=ünïcode", "no_matching_signature"),
        ("t=1," + "x" * 9000, "malformed_header"),
    ],
)
def test_bad_headers(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureError) as err:
        verify(b"{}", header, ["whsec_abcdefgh"], now=100)
    assert err.value.reason == reason


def test_tolerance_both_ways() -> None:
    body = b"{}"
    secret = "whsec_abcdefgh"
    now = 1_800_000_000
    assert verify(body, sign(body, secret, now - 300), [secret], now=now)
    assert verify(body, sign(body, secret, now + 300), [secret], now=now)
    with pytest.raises(SignatureError) as err:
        verify(body, sign(body, secret, now - 301), [secret], now=now)
    assert err.value.reason == "timestamp_too_old"
    with pytest.raises(SignatureError) as err:
        verify(body, sign(body, secret, now + 301), [secret], now=now)
    assert err.value.reason == "timestamp_in_future"


def test_no_secret_configured_verifies_nothing() -> None:
    with pytest.raises(SignatureError):
        verify(b"{}", sign(b"{}", "whsec_abcdefgh", 1), [], now=1)


def test_parse_header_keeps_every_v1() -> None:
    assert parse_header("t=5,v1=a,v1=b,v0=c") == (5, ["a", "b"])


def test_secret_never_in_error_repr() -> None:
    secret = "whsec_supersecretvalue"
    with pytest.raises(SignatureError) as err:
        verify(b"{}", "t=1,v1=00", [secret], now=1)
    assert secret not in repr(err.value) and secret not in str(err.value)


SECRET = "whsec_property_secret"
NOW = 1_750_000_000


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=512), data=st.data())
def test_any_changed_byte_of_body_fails(body: bytes, data: st.DataObject) -> None:
    header = sign(body, SECRET, NOW)
    assert verify(body, header, [SECRET], now=NOW) == NOW
    if body:
        i = data.draw(st.integers(0, len(body) - 1))
        flip = data.draw(st.integers(1, 255))
        changed = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
    else:
        changed = data.draw(st.binary(min_size=1, max_size=4))
    with pytest.raises(SignatureError):
        verify(changed, header, [SECRET], now=NOW)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=256), data=st.data())
def test_any_changed_byte_of_timestamp_or_signature_fails(body: bytes, data: st.DataObject) -> None:
    signature = compute_signature(body, SECRET, NOW)
    header = f"t={NOW},v1={signature}"
    start = data.draw(st.sampled_from([2, len(f"t={NOW},v1=")]))
    end = start + (len(str(NOW)) if start == 2 else len(signature))
    i = data.draw(st.integers(start, end - 1))
    replacement = data.draw(
        st.characters(codec="ascii", exclude_characters=[header[i], ",", "="], min_codepoint=33)
    )
    changed = header[:i] + replacement + header[i + 1 :]
    with pytest.raises(SignatureError):
        verify(body, changed, [SECRET], now=NOW)


def test_signature_is_hmac_sha256_of_t_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"whsec_x1234567", b"42." + body, hashlib.sha256).hexdigest()
    assert compute_signature(body, "whsec_x1234567", 42) == expected
