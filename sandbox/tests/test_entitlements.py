"""The Entitlements API through the official SDK: features, product features,
active entitlements and the summary event that follows a subscription's life."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from stripeline_sandbox import Sandbox

from .test_billing_subscriptions import DAY, START, _advance, _setup
from .test_conformance import _check

SUMMARY_EVENT = "entitlements.active_entitlement_summary.updated"


def _summaries(client: stripe.StripeClient, customer: str) -> list[list[str]]:
    """Each summary event of ``customer``, oldest first, as its sorted lookup keys."""
    found = []
    for event in client.v1.events.list({"type": SUMMARY_EVENT, "limit": 100}).auto_paging_iter():
        summary: Any = event.data.object
        assert summary["object"] == "entitlements.active_entitlement_summary"
        assert "id" not in summary  # Stripe's summary has no id of its own
        if summary["customer"] == customer:
            entitlements = summary["entitlements"]
            assert entitlements["object"] == "list" and entitlements["has_more"] is False
            found.append(sorted(e["lookup_key"] for e in entitlements["data"]))
    return list(reversed(found))


def _active(client: stripe.StripeClient, customer: str) -> list[str]:
    listed = client.v1.entitlements.active_entitlements.list({"customer": customer})
    return sorted(entitlement.lookup_key for entitlement in listed.data)


def test_features_are_created_retrieved_listed_updated_and_their_lookup_key_is_unique(
    client: stripe.StripeClient,
) -> None:
    feature = client.v1.entitlements.features.create(
        {"name": "API access", "lookup_key": "api", "metadata": {"tier": "pro"}}
    )
    assert isinstance(feature, stripe.entitlements.Feature)
    assert feature.id.startswith("feat_") and feature.object == "entitlements.feature"
    assert (feature.active, feature.lookup_key, feature.name) == (True, "api", "API access")
    assert feature.metadata.to_dict() == {"tier": "pro"} and feature.livemode is False
    with pytest.raises(stripe.InvalidRequestError) as taken:
        client.v1.entitlements.features.create({"name": "Again", "lookup_key": "api"})
    assert taken.value.param == "lookup_key"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.entitlements.features.create({"name": "No key"})  # type: ignore[typeddict-item]
    assert missing.value.param == "lookup_key"
    other = client.v1.entitlements.features.create({"name": "Seats", "lookup_key": "seats"})
    assert client.v1.entitlements.features.retrieve(feature.id).lookup_key == "api"
    updated = client.v1.entitlements.features.update(
        feature.id, {"name": "API", "active": False, "metadata": {"tier": ""}}
    )
    assert (updated.name, updated.active, updated.metadata.to_dict()) == ("API", False, {})
    listed = client.v1.entitlements.features.list()
    assert [f.id for f in listed.data] == [other.id, feature.id]  # newest first
    assert [f.id for f in client.v1.entitlements.features.list({"archived": True}).data] == [
        feature.id
    ]
    assert [f.id for f in client.v1.entitlements.features.list({"lookup_key": "seats"}).data] == [
        other.id
    ]
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.entitlements.features.retrieve("feat_missing")
    assert unknown.value.http_status == 404


def test_product_features_attach_list_retrieve_and_detach(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Pro"})
    api = client.v1.entitlements.features.create({"name": "API", "lookup_key": "api"})
    seats = client.v1.entitlements.features.create({"name": "Seats", "lookup_key": "seats"})
    attached = client.v1.products.features.create(product.id, {"entitlement_feature": api.id})
    assert isinstance(attached, stripe.ProductFeature)
    assert attached.object == "product_feature" and attached.entitlement_feature.id == api.id
    assert attached.entitlement_feature.lookup_key == "api"
    with pytest.raises(stripe.InvalidRequestError) as twice:
        client.v1.products.features.create(product.id, {"entitlement_feature": api.id})
    assert twice.value.param == "entitlement_feature"
    second = client.v1.products.features.create(product.id, {"entitlement_feature": seats.id})
    listed = client.v1.products.features.list(product.id)
    assert [f.entitlement_feature.lookup_key for f in listed.data] == ["seats", "api"]
    assert client.v1.products.features.retrieve(product.id, attached.id).id == attached.id
    deleted = client.v1.products.features.delete(product.id, second.id)
    assert deleted.deleted is True and deleted.id == second.id
    assert [f.id for f in client.v1.products.features.list(product.id).data] == [attached.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.features.retrieve(product.id, second.id)
    archived = client.v1.entitlements.features.create({"name": "Old", "lookup_key": "old"})
    client.v1.entitlements.features.update(archived.id, {"active": False})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.features.create(product.id, {"entitlement_feature": archived.id})


def test_a_subscriptions_life_changes_the_active_entitlements_and_emits_each_summary(
    client: stripe.StripeClient,
) -> None:
    clock, customer, basic_price = _setup(client, amount=1000)
    basic = str(basic_price.product)
    pro_price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 3000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
        }
    )
    pro = str(pro_price.product)
    reports = client.v1.entitlements.features.create({"name": "Reports", "lookup_key": "reports"})
    api = client.v1.entitlements.features.create({"name": "API", "lookup_key": "api"})
    client.v1.products.features.create(basic, {"entitlement_feature": reports.id})
    client.v1.products.features.create(pro, {"entitlement_feature": reports.id})
    client.v1.products.features.create(pro, {"entitlement_feature": api.id})
    assert _active(client, customer.id) == [] and _summaries(client, customer.id) == []

    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": basic_price.id}], "trial_period_days": 7}
    )
    assert subscription.status == "trialing"
    assert _active(client, customer.id) == ["reports"]
    assert _summaries(client, customer.id) == [["reports"]]
    listed = client.v1.entitlements.active_entitlements.list({"customer": customer.id})
    entitlement = listed.data[0]
    assert isinstance(entitlement, stripe.entitlements.ActiveEntitlement)
    assert entitlement.id.startswith("ent_") and entitlement.feature == reports.id
    retrieved = client.v1.entitlements.active_entitlements.retrieve(entitlement.id)
    assert retrieved.lookup_key == "reports" and retrieved.object == (
        "entitlements.active_entitlement"
    )

    # The trial ends and the first invoice is paid: still the same features, no summary.
    _advance(client, clock.id, START + 8 * DAY)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    assert len(_summaries(client, customer.id)) == 1

    # Upgrade: the new product's features, the kept one keeps its entitlement id.
    item = subscription["items"]["data"][0]
    client.v1.subscriptions.update(
        subscription.id, {"items": [{"id": item.id, "price": pro_price.id}]}
    )
    assert _active(client, customer.id) == ["api", "reports"]
    assert _summaries(client, customer.id)[-1] == ["api", "reports"]
    kept = client.v1.entitlements.active_entitlements.list({"customer": customer.id}).data
    assert entitlement.id in {e.id for e in kept}

    # A feature detached from the product is taken away at once; attached again, given back.
    attached = client.v1.products.features.list(pro).data
    api_link = next(f for f in attached if f.entitlement_feature.id == api.id)
    client.v1.products.features.delete(pro, api_link.id)
    assert _active(client, customer.id) == ["reports"]
    client.v1.products.features.create(pro, {"entitlement_feature": api.id})
    assert _active(client, customer.id) == ["api", "reports"]

    # A cancel at period end keeps them until the period ends, then they go.
    client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    assert _active(client, customer.id) == ["api", "reports"]
    _advance(client, clock.id, START + 8 * DAY + 32 * DAY)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "canceled"
    assert _active(client, customer.id) == []
    assert _summaries(client, customer.id) == [
        ["reports"],
        ["api", "reports"],
        ["reports"],
        ["api", "reports"],
        [],
    ]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.entitlements.active_entitlements.retrieve(entitlement.id)


def test_the_summary_event_follows_the_subscription_event_and_a_cancel_now(
    client: stripe.StripeClient,
) -> None:
    _, customer, price = _setup(client)
    feature = client.v1.entitlements.features.create({"name": "Pro", "lookup_key": "pro"})
    client.v1.products.features.create(str(price.product), {"entitlement_feature": feature.id})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    assert subscription.status == "active" and _active(client, customer.id) == ["pro"]
    client.v1.subscriptions.cancel(subscription.id)
    types = [
        e.type
        for e in reversed(list(client.v1.events.list({"limit": 100}).auto_paging_iter()))
        if e.type.startswith(("customer.subscription.", "entitlements."))
    ]
    assert types == [
        "customer.subscription.created",
        SUMMARY_EVENT,
        "customer.subscription.deleted",
        SUMMARY_EVENT,
    ]
    assert _summaries(client, customer.id) == [["pro"], []]
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.entitlements.active_entitlements.list({"customer": "cus_missing"})
    assert unknown.value.param == "customer"


def test_an_account_without_features_gets_no_summary_event(
    client: stripe.StripeClient, sandbox: Sandbox, key: str
) -> None:
    _, customer, price = _setup(client)
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    assert "entitlements.active_entitlement_summary.updated" not in sandbox.event_types(
        sandbox.event_ids(key=key), key=key
    )


def test_conformance_of_the_entitlements_objects(client: stripe.StripeClient) -> None:
    _, customer, price = _setup(client)
    feature = client.v1.entitlements.features.create({"name": "Pro", "lookup_key": "pro"})
    _check("entitlements.feature", feature)
    attached = client.v1.products.features.create(
        str(price.product), {"entitlement_feature": feature.id}
    )
    _check("product_feature", attached)
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    listed = client.v1.entitlements.active_entitlements.list({"customer": customer.id})
    _check("entitlements.active_entitlement", listed.data[0])
    event = client.v1.events.list({"type": SUMMARY_EVENT}).data[0]
    _check("entitlements.active_entitlement_summary", event.data.object)
