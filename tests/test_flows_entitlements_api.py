"""Features from Stripe's Entitlements API, end to end: the sandbox's product
features and its ``entitlements.active_entitlement_summary.updated`` events,
received by the app's webhook route and the worker, answer ``has_access``
through a subscription's life (start, upgrade, cancel) — and a local mapping
of the same products gives the same answers. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from stripeline.app import Stripeline
from stripeline.flows.entitlements import Entitlements
from stripeline.mirror import Mirror
from stripeline.mirror._store import summary_id
from stripeline.settings import Settings
from stripeline.testing import (
    StripelineEnv,
    deliver,
    drain,
    entitlement_summary,
    make_event,
    object_shape,
)

DAY = 86400
SUMMARY_EVENT = "entitlements.active_entitlement_summary.updated"
FEATURES = ("reports", "api")


@pytest.fixture
def env(
    stripe_sandbox: Any, stripe_key: str, stripe_client: Any, database_url: str
) -> Iterator[StripelineEnv]:
    """The sandbox account's webhooks, received by an app on ``database_url``."""
    settings = Settings(
        stripe_secret_key=SecretStr(stripe_key),
        stripe_webhook_secret=SecretStr(stripe_sandbox.webhook_secret),
        stripe_api_base=stripe_sandbox.url,
        database_url=database_url,
        mirror_coalesce_seconds=0,
    )
    application = Stripeline(settings)
    environment = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, application)
    yield environment
    environment.close()
    application.dispose()


def sandbox_now(env: StripelineEnv) -> datetime:
    return datetime.fromtimestamp(env.sandbox.clock.now(), UTC)


def advance(env: StripelineEnv, seconds: int) -> None:
    """Move the sandbox's clock; its due billing work runs on the next billing call."""
    env.advance_clock(seconds)
    env.client.v1.subscriptions.list({"limit": 1})
    env.settle()


def product_with_price(env: StripelineEnv, name: str, amount: int) -> tuple[str, str]:
    price = env.client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": name},
        }
    )
    return str(price.product), price.id


#: (step, the features the customer may use after it). The same for Stripe's
#: summary and for the local mapping of the same products.
TABLE: list[tuple[str, set[str]]] = [
    ("before any subscription", set()),
    ("start Basic with a trial", {"reports"}),
    ("the trial ends, the first invoice is paid", {"reports"}),
    ("upgrade to Pro", {"reports", "api"}),
    ("cancel at the period's end", {"reports", "api"}),
    ("the period ends: canceled", set()),
]


def test_access_follows_the_summary_event_and_the_mapping_answers_the_same(
    env: StripelineEnv,
) -> None:
    client = env.client
    basic, basic_price = product_with_price(env, "Basic", 1000)
    pro, pro_price = product_with_price(env, "Pro", 3000)
    reports = client.v1.entitlements.features.create({"name": "Reports", "lookup_key": "reports"})
    api = client.v1.entitlements.features.create({"name": "API", "lookup_key": "api"})
    client.v1.products.features.create(basic, {"entitlement_feature": reports.id})
    client.v1.products.features.create(pro, {"entitlement_feature": reports.id})
    client.v1.products.features.create(pro, {"entitlement_feature": api.id})

    customer = client.v1.customers.create(
        {
            "email": "entitled@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    ).id
    user = f"user-{uuid.uuid4().hex[:8]}"
    Mirror(env.app.engine).link_customer(user, customer)
    from_stripe = env.app.entitlements  # no mapping: every feature from the summary
    assert from_stripe.source == "auto" and from_stripe.mapping == {}
    strict = Entitlements(env.app, source="stripe")
    mapping = Entitlements(env.app, {basic: {"reports"}, pro: {"reports", "api"}}, source="mapping")
    subscriptions = env.app.subscriptions
    seen: list[tuple[str, set[str], set[str], set[str]]] = []

    def check(step: str) -> None:
        env.settle()
        now = sandbox_now(env)
        got_stripe = {f for f in FEATURES if from_stripe.has_access(user, f, at=now)}
        got_strict = {f for f in FEATURES if strict.has_access(customer, f, at=now)}
        got_mapping = {f for f in FEATURES if mapping.has_access(customer, f, at=now)}
        seen.append((step, got_stripe, got_strict, got_mapping))
        # What the sandbox itself says the customer holds now.
        listed = client.v1.entitlements.active_entitlements.list({"customer": customer})
        assert {e.lookup_key for e in listed.data} == got_stripe, step

    check("before any subscription")
    started = subscriptions.start(customer, basic_price, trial_days=7)
    assert started.status == "trialing"
    check("start Basic with a trial")
    advance(env, 8 * DAY)
    assert subscriptions.get(started.subscription.id).status == "active"
    check("the trial ends, the first invoice is paid")
    subscriptions.swap(started.subscription.id, pro_price)
    check("upgrade to Pro")
    subscriptions.cancel(started.subscription.id, at_period_end=True)
    check("cancel at the period's end")
    held = Mirror(env.app.engine).subscription(started.subscription.id)
    assert held is not None and held.current_period_end is not None
    advance(env, int((held.current_period_end - sandbox_now(env)).total_seconds()) + 3600)
    check("the period ends: canceled")

    expected = [(step, want, want, want) for step, want in TABLE]
    assert seen == expected
    # The mirror holds the newest summary: empty, after the cancel.
    summary = Mirror(env.app.engine).get(summary_id(customer))
    assert summary is not None and summary["entitlements"]["data"] == []
    # Every change of the customer's entitlements was one summary event: start,
    # upgrade, end (the trial's end and the scheduled cancel changed nothing).
    assert len(env.events(SUMMARY_EVENT)) == 3


def test_make_event_builds_the_summary_event(database_url: str) -> None:
    """The test-data helper: a summary has no id of its own, the mirror keeps
    the newest per customer and the answers follow it."""
    summary = entitlement_summary("cus_helper", "pro", "api")
    event = make_event(SUMMARY_EVENT, summary, created=1_900_000_000)
    obj = event["data"]["object"]
    assert "id" not in obj and obj["object"] == "entitlements.active_entitlement_summary"
    assert set(obj) == set(object_shape("entitlements.active_entitlement_summary"))
    assert [e["lookup_key"] for e in obj["entitlements"]["data"]] == ["pro", "api"]
    assert obj["entitlements"]["data"][0]["feature"] == "feat_test_pro"
    secret = "whsec_entitlement_summary_helper"
    app = Stripeline(
        Settings(
            database_url=database_url,
            stripe_webhook_secret=SecretStr(secret),
            mirror_coalesce_seconds=0,
        )
    )
    try:
        later = make_event(
            SUMMARY_EVENT, entitlement_summary("cus_helper", "api"), created=1_900_000_010
        )
        for batch in ([event], [later]):
            assert all(d.status == 200 for d in deliver(app, batch))
            drain(app)
        entitlements = Entitlements(app, source="stripe")
        assert not entitlements.has_access("cus_helper", "pro")
        assert entitlements.has_access("cus_helper", "api")
        assert entitlements.has_access("cus_helper", "feat_test_api")  # the feature id too
    finally:
        app.dispose()
