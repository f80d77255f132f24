"""The shop under test: stripeline's pytest plugin gives the sandbox account,
its SDK client and a ``Stripeline`` app carrying the shop's handlers on a fresh
database; the shop is served on 127.0.0.1 and receives the account's webhooks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

import stripeline
from flask_shop.billing import billing
from flask_shop.models import init_db
from flask_shop.shop import create_app
from stripeline.gateway import StripeClient
from stripeline_sandbox import Sandbox


@pytest.fixture
def stripeline_base_app() -> stripeline.Stripeline:
    """The app whose handlers the plugin's ``stripeline_app`` carries."""
    return billing


@pytest.fixture
def plan_price(stripe_client: StripeClient) -> str:
    product = stripe_client.v1.products.create({"name": "Shop membership"})
    price = stripe_client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
        }
    )
    return price.id


@dataclass
class Shop:
    app: Flask
    client: FlaskClient
    url: str


@pytest.fixture
def shop(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripeline_app: stripeline.Stripeline,
    plan_price: str,
) -> Iterator[Shop]:
    init_db(stripeline_app.engine)
    flask_app = create_app(stripeline_app, plan_price=plan_price, run_worker=True)
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    stripe_sandbox.listen(f"{url}/stripe/webhooks/stripe", ["*"], key=stripe_key)
    try:
        yield Shop(flask_app, flask_app.test_client(), url)
    finally:
        server.shutdown()
        thread.join(10)
        assert flask_app.extensions["stripeline"].wsgi.stop(timeout=10)
