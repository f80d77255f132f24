"""``stripeline.contrib.flask``: the extension's blueprint, worker and helpers,
through Flask's own test client (the WSGI interface)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask
from pydantic import SecretStr
from sqlalchemy import select

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.contrib.flask import (
    EXTENSION_KEY,
    StripelineFlask,
    StripelineState,
    get_mirror,
    get_state,
    get_stripeline,
)
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import Event
from stripeline.mirror import Mirror
from stripeline.settings import Settings
from tests.factories import SECRET, encode, event, signed


@pytest.fixture
def billing(database_url: str) -> Iterator[Stripeline]:
    settings = Settings(
        stripe_webhook_secret=SecretStr(SECRET), database_url=database_url, body_limit=4096
    )
    app = Stripeline(settings, engine=make_engine(database_url))
    yield app
    app.dispose()


def statuses(app: Stripeline) -> dict[str, str]:
    with connect(app.engine, readonly=True) as conn:
        return {row.id: row.status for row in conn.execute(select(Event.id, Event.status))}


def test_init_app_mounts_the_routes_under_the_prefix(billing: Stripeline) -> None:
    extension = StripelineFlask(app=billing, url_prefix="/billing")
    flask_app = Flask(__name__)
    state = extension.init_app(flask_app)
    assert flask_app.extensions[EXTENSION_KEY] is state and state.worker is None
    client = flask_app.test_client()
    body = encode(event(id="evt_flask_1"))
    first = client.post("/billing/webhooks/stripe", data=body, headers=signed(body))
    again = client.post("/billing/webhooks/stripe", data=body, headers=signed(body))
    assert first.status_code == 200 and first.get_json()["duplicate"] is False
    assert again.get_json()["duplicate"] is True
    assert statuses(billing) == {"evt_flask_1": "pending"}
    bad = client.post("/billing/webhooks/stripe", data=body, headers=signed(body, "whsec_x"))
    assert (bad.status_code, bad.get_json()["error"]) == (400, "bad_signature")
    large = client.post("/billing/webhooks/stripe", data=b" " * 5000, headers=signed(body))
    assert large.status_code == 413
    connect_answer = client.post("/billing/webhooks/stripe/connect", data=body)
    assert connect_answer.status_code == 404
    assert client.get("/billing/healthz").get_json() == {"status": "ok"}
    assert client.get("/billing/readyz").get_json()["status"] == "ready"
    text = client.get("/billing/metrics").get_data(as_text=True)
    for outcome, count in (("stored", 1), ("duplicate", 1), ("bad_signature", 1)):
        assert f'endpoint="account",outcome="{outcome}"}} {count}.0' in text
    assert 'outcome="too_large"} 1.0' in text
    assert client.post("/webhooks/stripe", data=body).status_code == 404  # only under the prefix


def test_views_get_the_app_and_its_mirror(billing: Stripeline) -> None:
    flask_app = Flask(__name__)
    StripelineFlask(flask_app, billing)

    @flask_app.get("/who")
    def who() -> dict[str, object]:
        mirror = get_mirror()
        return {
            "same_app": get_stripeline() is billing,
            "mirror": isinstance(mirror, Mirror) and mirror.engine is billing.engine,
            "connected": get_mirror("acct_1").account,
            "link": mirror.customer_link("nobody") is None,
        }

    answer = flask_app.test_client().get("/who").get_json()
    assert answer == {"same_app": True, "mirror": True, "connected": "acct_1", "link": True}
    with flask_app.app_context():
        assert isinstance(get_state(), StripelineState)


def test_set_up_once_with_an_app(billing: Stripeline) -> None:
    flask_app = Flask(__name__)
    StripelineFlask(flask_app, billing)
    with pytest.raises(RuntimeError, match="already set up"):
        StripelineFlask(flask_app, billing)
    with pytest.raises(TypeError, match="needs the Stripeline app"):
        StripelineFlask(Flask(__name__))
    with Flask(__name__).app_context(), pytest.raises(RuntimeError, match="not set up"):
        get_mirror()


def test_the_worker_thread_starts_with_the_first_request_of_any_view(billing: Stripeline) -> None:
    handled: list[str] = []

    @billing.on("customer.updated")
    def record(received: ReceivedEvent) -> None:
        handled.append(received.id)

    flask_app = Flask(__name__)
    StripelineFlask(flask_app, billing, run_worker=True)
    worker = flask_app.extensions[EXTENSION_KEY].worker
    assert worker is not None and not worker.running  # nothing before a request

    @flask_app.get("/")
    def home() -> str:
        return "shop"

    client = flask_app.test_client()
    assert client.get("/").status_code == 200
    assert worker.running  # started by the shop's own page
    body = encode(event(id="evt_flask_worker"))
    assert (
        client.post("/stripe/webhooks/stripe", data=body, headers=signed(body)).status_code == 200
    )
    deadline = time.monotonic() + 30
    while statuses(billing) != {"evt_flask_worker": "processed"}:
        assert time.monotonic() < deadline, statuses(billing)
        time.sleep(0.02)
    assert handled == ["evt_flask_worker"]
    assert flask_app.extensions[EXTENSION_KEY].wsgi.stop(timeout=10)
