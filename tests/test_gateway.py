"""The gateway: the SDK client it builds, its retries, and the error mapping.

Stripe is faked only at the HTTP boundary: a local server answers what Stripe
would (status, headers, error body) and counts the requests it gets.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe
from stripe._http_client import HTTPClient

from stripeline.errors import (
    ConfigError,
    StripeAPIError,
    StripeAuthenticationError,
    StripeCardError,
    StripeConnectionError,
    StripeIdempotencyError,
    StripeInvalidRequestError,
    StripelineError,
    StripePermissionError,
    StripeRateLimitError,
    StripeServerError,
)
from stripeline.gateway import make_client, stripe_errors
from stripeline.gateway.client import DEFAULT_MAX_NETWORK_RETRIES
from stripeline.settings import load_settings

KEY = "sk_test_gatewaytestkey123456"


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeStripe:
    url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def fake_stripe(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    # The SDK sleeps 0.5 s to 5 s between retries; the count is what we test.
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.001)
    monkeypatch.setattr(HTTPClient, "MAX_DELAY", 0.002)
    state = FakeStripe(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append({"path": self.path, "headers": dict(self.headers)})
            reply = state.replies.pop(0) if len(state.replies) > 1 else state.replies[0]
            body = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Request-Id", f"req_{len(state.requests)}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _client(url: str, **kwargs: Any) -> stripe.StripeClient:
    settings = load_settings(stripe_secret_key=KEY, stripe_api_base=url)
    return make_client(settings, **kwargs)


def _error(status: int, **error: Any) -> dict[str, Any]:
    return {"error": {"type": "invalid_request_error", "message": "nope", **error}}


def _call(client: stripe.StripeClient) -> Any:
    with stripe_errors():
        return client.v1.events.retrieve("evt_123")


def test_no_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="STRIPE_SECRET_KEY"):
        make_client(load_settings())


def test_client_talks_to_the_configured_base_with_the_sdk_version(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.replies = [Reply(200, {"id": "evt_123", "object": "event"})]
    event = _call(_client(fake_stripe.url + "/"))
    assert event.id == "evt_123"
    (request,) = fake_stripe.requests
    assert request["path"] == "/v1/events/evt_123"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["Stripe-Version"] == stripe.api_version


def test_arguments_override_the_settings(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies = [Reply(200, {"id": "evt_123", "object": "event"})]
    settings = load_settings(stripe_api_base="http://127.0.0.1:9")
    _call(make_client(settings, api_key="sk_test_fromthesandbox1", api_base=fake_stripe.url))
    assert fake_stripe.requests[0]["headers"]["Authorization"] == "Bearer sk_test_fromthesandbox1"


def test_server_errors_are_retried_by_default_then_mapped(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies = [Reply(500, {"error": {"type": "api_error", "message": "boom"}})]
    with pytest.raises(StripeServerError) as info:
        _call(_client(fake_stripe.url))
    assert len(fake_stripe.requests) == 1 + DEFAULT_MAX_NETWORK_RETRIES
    err = info.value
    assert err.http_status == 500
    assert err.retryable is True
    assert err.request_id == f"req_{1 + DEFAULT_MAX_NETWORK_RETRIES}"
    assert isinstance(err, StripeAPIError) and isinstance(err, StripelineError)
    assert isinstance(err.__cause__, stripe.APIError)


def test_a_retry_succeeds_after_a_transient_failure(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies = [
        Reply(503, {"error": {"type": "api_error", "message": "busy"}}),
        Reply(200, {"id": "evt_123", "object": "event"}),
    ]
    assert _call(_client(fake_stripe.url)).id == "evt_123"
    assert len(fake_stripe.requests) == 2


def test_max_network_retries_is_honoured(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies = [Reply(409, _error(409, code="lock_timeout"))]
    with pytest.raises(StripeInvalidRequestError) as info:
        _call(_client(fake_stripe.url, max_network_retries=4))
    assert len(fake_stripe.requests) == 5
    assert info.value.retryable is True


def test_stripe_should_retry_false_wins(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies = [
        Reply(500, {"error": {"type": "api_error"}}, {"Stripe-Should-Retry": "false"})
    ]
    with pytest.raises(StripeServerError) as info:
        _call(_client(fake_stripe.url))
    assert len(fake_stripe.requests) == 1
    assert info.value.retryable is False


def test_card_error_keeps_decline_code_and_is_not_retried(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies = [
        Reply(
            402,
            {
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.",
                }
            },
        )
    ]
    with pytest.raises(StripeCardError) as info:
        _call(_client(fake_stripe.url))
    err = info.value
    assert len(fake_stripe.requests) == 1
    assert (err.code, err.decline_code, err.http_status) == (
        "card_declined",
        "insufficient_funds",
        402,
    )
    assert err.retryable is False
    assert err.message == "Your card has insufficient funds."


@pytest.mark.parametrize(
    ("status", "error", "expected", "retryable"),
    [
        (404, {"code": "resource_missing", "param": "id"}, StripeInvalidRequestError, False),
        (400, {"type": "idempotency_error"}, StripeIdempotencyError, False),
        (429, {"code": "rate_limit"}, StripeRateLimitError, True),
        (403, {}, StripePermissionError, False),
    ],
)
def test_status_maps_to_error_class(
    fake_stripe: FakeStripe,
    status: int,
    error: dict[str, Any],
    expected: type[StripeAPIError],
    retryable: bool,
) -> None:
    fake_stripe.replies = [Reply(status, _error(status, **error))]
    with pytest.raises(expected) as info:
        _call(_client(fake_stripe.url, max_network_retries=0))
    assert info.value.http_status == status
    assert info.value.retryable is retryable
    if "code" in error:
        assert info.value.code == error["code"]
    if isinstance(info.value, StripeInvalidRequestError) and "param" in error:
        assert info.value.param == "id"


def test_authentication_error_never_shows_a_key(fake_stripe: FakeStripe) -> None:
    leaked = "sk_test_51Habcdefghijklmnopqrstuvwxyz"
    fake_stripe.replies = [
        Reply(
            401,
            _error(401, message=f"Invalid API Key provided: {leaked} and whsec_abcdefgh12345"),
        )
    ]
    with pytest.raises(StripeAuthenticationError) as info:
        _call(_client(fake_stripe.url))
    err = info.value
    for text in (str(err), repr(err), err.message):
        assert leaked not in text
        assert "abcdefgh" not in text
        assert KEY not in text
    assert "sk_test_…" in err.message
    assert "whsec_…" in err.message
    assert repr(err).startswith("StripeAuthenticationError(message=")
    assert "http_status=401" in repr(err)
    assert "request_id='req_1'" in repr(err)
    assert len(fake_stripe.requests) == 1


def test_unreachable_stripe_is_a_retryable_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on that port now.
    with pytest.raises(StripeConnectionError) as info:
        _call(_client(f"http://127.0.0.1:{port}", max_network_retries=0))
    assert info.value.retryable is True
    assert info.value.http_status is None
    assert KEY not in repr(info.value)
