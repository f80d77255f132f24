"""The wire protocol: auth, accounts, errors, lists, expand, metadata, idempotency."""

from __future__ import annotations

import uuid

import pytest
import stripe

from stripeline_sandbox import API_VERSION, Sandbox
from stripeline_sandbox._form import decode

from .conftest import control


def test_form_decoding_nests_hashes_and_arrays() -> None:
    body = "a[b][0][c]=1&a[b][1][c]=2&expand[]=x&expand[]=y&metadata[k]=&plain=v"
    assert decode(body) == {
        "a": {"b": [{"c": "1"}, {"c": "2"}]},
        "expand": ["x", "y"],
        "metadata": {"k": ""},
        "plain": "v",
    }


def test_api_version_is_the_sdk_pin() -> None:
    assert API_VERSION == stripe.api_version


def test_bad_and_live_keys_are_refused(
    sandbox: Sandbox, http_client: stripe.RequestsClient
) -> None:
    for key in ("sk_test_", "sk_live_abcdefghijkl", "pk_test_abcdefgh"):
        client = stripe.StripeClient(
            key, base_addresses={"api": sandbox.url}, http_client=http_client
        )
        with pytest.raises(stripe.AuthenticationError) as caught:
            client.v1.customers.list()
        assert caught.value.http_status == 401
        assert caught.value.request_id


def test_each_key_is_its_own_account(
    sandbox: Sandbox, client: stripe.StripeClient, http_client: stripe.RequestsClient
) -> None:
    customer = client.v1.customers.create({"email": "a@example.com"})
    other = stripe.StripeClient(
        sandbox.new_key(), base_addresses={"api": sandbox.url}, http_client=http_client
    )
    assert other.v1.customers.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as caught:
        other.v1.customers.retrieve(customer.id)
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    assert caught.value.error is not None and caught.value.error.param == "id"


def test_unknown_route_is_404(sandbox: Sandbox, key: str) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as caught:
        control(sandbox, key, "GET", "/v1/no_such_things")
    error = caught.value
    error.close()
    assert error.code == 404
    assert error.headers["Request-Id"].startswith("req_")


def test_lists_paginate_newest_first(client: stripe.StripeClient) -> None:
    ids = [client.v1.customers.create({"name": str(i)}).id for i in range(5)]
    newest_first = ids[::-1]
    page = client.v1.customers.list({"limit": 2})
    assert [c.id for c in page.data] == newest_first[:2] and page.has_more
    page = client.v1.customers.list({"limit": 2, "starting_after": newest_first[1]})
    assert [c.id for c in page.data] == newest_first[2:4] and page.has_more
    page = client.v1.customers.list({"limit": 2, "starting_after": newest_first[3]})
    assert [c.id for c in page.data] == newest_first[4:] and not page.has_more
    page = client.v1.customers.list({"limit": 2, "ending_before": newest_first[4]})
    assert [c.id for c in page.data] == newest_first[2:4] and page.has_more
    assert [c.id for c in client.v1.customers.list({"limit": 2}).auto_paging_iter()] == newest_first
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.list({"limit": 101})


def test_expand_replaces_ids_with_objects(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    assert customer.invoice_settings is not None
    assert isinstance(customer.invoice_settings.default_payment_method, str)
    expanded = client.v1.customers.retrieve(
        customer.id, {"expand": ["invoice_settings.default_payment_method"]}
    )
    assert expanded.invoice_settings is not None
    payment_method = expanded.invoice_settings.default_payment_method
    assert isinstance(payment_method, stripe.PaymentMethod)
    assert payment_method.card is not None and payment_method.card.last4 == "4242"
    listed = client.v1.customers.list({"expand": ["data.invoice_settings.default_payment_method"]})
    listed_settings = listed.data[0].invoice_settings
    assert listed_settings is not None
    assert isinstance(listed_settings.default_payment_method, stripe.PaymentMethod)


def test_metadata_rules(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"metadata": {"a": "1", "b": "2"}})
    customer = client.v1.customers.update(customer.id, {"metadata": {"a": "", "c": "3"}})
    assert customer.metadata is not None
    assert customer.metadata.to_dict() == {"b": "2", "c": "3"}
    customer = client.v1.customers.update(customer.id, {"metadata": ""})
    assert customer.metadata is not None
    assert customer.metadata.to_dict() == {}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.update(customer.id, {"metadata": {"k" * 41: "v"}})
    assert caught.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(customer.id, {"metadata": {str(i): "v" for i in range(51)}})


def test_idempotent_replay_mismatch_and_expiry(
    sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    key = str(uuid.uuid4())
    first = client.v1.customers.create({"email": "x@example.com"}, {"idempotency_key": key})
    again = client.v1.customers.create({"email": "x@example.com"}, {"idempotency_key": key})
    assert again.id == first.id
    assert again.last_response is not None and first.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.request_id == first.last_response.request_id
    assert "Idempotent-Replayed" not in first.last_response.headers
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.customers.create({"email": "y@example.com"}, {"idempotency_key": key})
    assert caught.value.http_status == 400
    assert len(client.v1.customers.list().data) == 1
    sandbox.advance_clock(24 * 3600 + 1)
    later = client.v1.customers.create({"email": "x@example.com"}, {"idempotency_key": key})
    assert later.id != first.id


def test_declines_are_replayed_but_validation_errors_are_not(client: stripe.StripeClient) -> None:
    key = str(uuid.uuid4())
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create({"metadata": {"k" * 41: "v"}}, {"idempotency_key": key})
    # Nothing was saved for a validation failure: the key is free for the fixed call.
    customer = client.v1.customers.create({"metadata": {"k": "v"}}, {"idempotency_key": key})
    assert customer.metadata is not None
    assert customer.metadata.to_dict() == {"k": "v"}
