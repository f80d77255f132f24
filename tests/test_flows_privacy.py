"""GDPR erasure and export (``stripeline.flows.privacy``) end to end: a customer,
a payment method and a payment made through the sandbox with the official
SDK, their webhooks through the inbox and the worker, on SQLite and
PostgreSQL; then ``forget`` leaves the person's email and name nowhere in the
database (every table, every column, raw payloads decoded) while the amounts
stay, and no later webhook brings them back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import inspect, select, text, update

from stripeline.app import Stripeline
from stripeline.db import connect, models
from stripeline.errors import ErasureRefused, ModeMismatch, StripeConnectionError
from stripeline.flows.privacy import export, export_async, forget, forget_async, forget_customer
from stripeline.mirror.erasure import scrub
from stripeline.settings import Settings
from stripeline.testing import StripelineEnv, make_event
from stripeline_sandbox import Sandbox

EMAIL = "ada.lovelace@example.com"
NAME = "Ada Lovelace"
PHONE = "+15550100199"
STREET = "12 Analytical Engine Row"


@pytest.fixture
def env(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
) -> Iterator[StripelineEnv]:
    settings = Settings(
        stripe_secret_key=SecretStr(stripe_key),
        stripe_webhook_secret=SecretStr(stripe_sandbox.webhook_secret),
        stripe_api_base=stripe_sandbox.url,
        database_url=database_url,
        max_network_retries=0,
        mirror_coalesce_seconds=0,
    )
    app = Stripeline(settings)
    stripeline_env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, app)
    yield stripeline_env
    stripeline_env.close()
    app.dispose()


def make_customer(env: StripelineEnv, user: str, email: str = EMAIL) -> str:
    """A customer made through the call ledger (its answer recorded there)
    and linked to ``user``, with a card carrying billing details."""
    params: dict[str, Any] = {
        "email": email,
        "name": NAME,
        "phone": PHONE,
        "address": {"line1": STREET, "city": "London", "country": "GB"},
        "description": f"{NAME} <{email}>",
        "metadata": {"user": user},
    }
    customer = env.app.calls.run(
        "customer:create",
        user,
        params,
        lambda client, key: client.v1.customers.create(params, {"idempotency_key": key}),  # type: ignore[arg-type]
    )
    env.app.mirror.link_customer(user, customer["id"])
    return str(customer["id"])


def pay(
    env: StripelineEnv, customer: str, amount: int, email: str = EMAIL, card: str = "tok_visa"
) -> Any:
    client = env.client
    method = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"token": card},
            "billing_details": {"email": email, "name": NAME, "phone": PHONE},
        }
    )
    client.v1.payment_methods.attach(method.id, {"customer": customer})
    return client.v1.payment_intents.create(
        {
            "amount": amount,
            "currency": "eur",
            "customer": customer,
            "payment_method": method.id,
            "confirm": True,
            "receipt_email": email,
            "description": f"Order 42 for {email}",
            "metadata": {"contact": email},
        }
    )


def found_in_database(app: Stripeline, *needles: str) -> list[str]:
    """``table.column`` of every value anywhere in the database that holds
    one of ``needles`` (case-insensitive): every table, every column, bytes
    decoded, JSON as text."""
    wanted = [n.lower() for n in needles]
    hits: list[str] = []
    with connect(app.engine, readonly=True) as conn:
        names = inspect(conn).get_table_names()
        assert "stripeline_events" in names and "stripeline_customers" in names
        for name in names:
            result = conn.execute(text(f'SELECT * FROM "{name}"'))  # noqa: S608 - our own tables
            columns = list(result.keys())
            for row in result:
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("utf-8", "replace")
                    elif not isinstance(value, str):
                        value = json.dumps(value, ensure_ascii=False, default=str)
                    if any(n in value.lower() for n in wanted):
                        hits.append(f"{name}.{column}")
    return sorted(set(hits))


def deleted_at_stripe(env: StripelineEnv, customer: str) -> bool:
    return bool(env.client.v1.customers.retrieve(customer).to_dict().get("deleted"))


def test_forget_leaves_no_email_or_name_anywhere_and_keeps_the_amounts(
    env: StripelineEnv,
) -> None:
    app = env.app
    customer = make_customer(env, "user_1")
    intent = pay(env, customer, 2500)
    assert intent.status == "succeeded"
    env.settle()
    # Before: the person is everywhere (proves the grep finds what it looks for).
    before = found_in_database(app, EMAIL, NAME)
    for place in (
        "stripeline_customers.email",
        "stripeline_customers.name",
        "stripeline_payment_methods.data",
        "stripeline_charges.data",
        "stripeline_payment_intents.data",
        "stripeline_events.payload",
        "stripeline_calls.result",
    ):
        assert place in before
    card = app.mirror.payment_methods(customer=customer)[0]
    assert card.card_last4 == "4242"

    report = forget(app, "user_1")
    assert (report.stripe_action, report.customer_id, report.reason) == ("deleted", customer, None)
    assert report.mirror_rows >= 4 and report.event_payloads >= 4 and not report.repeated
    # Stripe's customer is gone.
    assert deleted_at_stripe(env, customer)
    # customer.deleted (which carries the whole customer, email included) and
    # whatever else Stripe sends now are scrubbed on their way in.
    env.settle()
    assert env.events("customer.deleted")
    assert found_in_database(app, EMAIL, NAME, PHONE, STREET) == []
    # The financial record stays: ids, amounts, currency, status.
    charge = app.mirror.charge(intent.latest_charge)
    assert charge is not None
    assert (charge.amount, charge.currency, charge.status, charge.customer) == (
        2500,
        "eur",
        "succeeded",
        customer,
    )
    assert charge.data["billing_details"]["email"] is None
    assert charge.data["payment_method_details"]["card"]["last4"] is None
    mirrored_intent = app.mirror.payment_intent(intent.id)
    assert mirrored_intent is not None and mirrored_intent.amount_received == 2500
    assert mirrored_intent.data["description"] == "Order 42 for "
    method = app.mirror.payment_method(card.id)
    assert method is not None and method.card_last4 is None and method.card_brand == "visa"
    assert app.mirror.customer_link("user_1") is None
    with connect(app.engine, readonly=True) as conn:
        (erasure,) = conn.execute(select(models.Erasure)).all()
    assert (erasure.app_user_id, erasure.customer_id, erasure.stripe_action) == (
        "user_1",
        customer,
        "deleted",
    )


def test_a_late_webhook_about_an_erased_customer_does_not_bring_the_data_back(
    env: StripelineEnv,
) -> None:
    app = env.app
    customer = make_customer(env, "user_2")
    intent = pay(env, customer, 1200)
    env.settle()
    charge = env.client.v1.charges.retrieve(intent.latest_charge).to_dict()
    assert charge["billing_details"]["email"] == EMAIL
    forget(app, "user_2")
    env.settle()
    # Stripe redelivers an older charge.updated, and a newer one, both with the email.
    late = [
        make_event("charge.updated", charge, created=int(time.time()) + 5),
        make_event("charge.updated", charge, created=int(time.time()) - 3600),
        make_event(
            "customer.updated",
            {"id": customer, "object": "customer", "email": EMAIL, "name": NAME},
            previous_attributes={"email": "old." + EMAIL},
            created=int(time.time()) + 10,
        ),
    ]
    env.deliver(late, copies=1)
    env.settle()
    assert {e.status for e in env.events("charge.updated")} == {"processed"}
    assert found_in_database(app, EMAIL, NAME) == []
    mirrored = app.mirror.charge(charge["id"])
    assert mirrored is not None and mirrored.amount == 1200
    assert mirrored.data["billing_details"]["name"] is None


def test_an_unprocessed_event_about_an_object_the_mirror_never_held_is_scrubbed(
    env: StripelineEnv,
) -> None:
    app = env.app
    customer = make_customer(env, "user_12")
    env.settle()
    # Of the other mode: stored, never processed, never mirrored.
    other_mode = make_event(
        "charge.updated",
        {"customer": customer, "billing_details": {"email": EMAIL, "name": NAME}},
        livemode=True,
    )
    env.deliver([other_mode], copies=1)
    (stored,) = env.events("charge.updated")
    assert stored.status == "ignored" and app.mirror.get(other_mode["data"]["object"]["id"]) is None
    assert "stripeline_events.payload" in found_in_database(app, EMAIL)
    forget(app, "user_12")
    env.settle()
    assert found_in_database(app, EMAIL, NAME) == []


def test_errors_that_quote_the_person_are_scrubbed_from_events_and_attempts(
    env: StripelineEnv,
) -> None:
    app = env.app

    @app.on("customer.created")
    def refuse(event: Any) -> None:
        raise LookupError(f"no account for {event.data['data']['object']['email']}")

    make_customer(env, "user_13")
    env.settle(allow_failures=True)
    before = found_in_database(app, EMAIL)
    for place in (
        "stripeline_events.last_error",
        "stripeline_events.last_traceback",
        "stripeline_attempts.error",
        "stripeline_attempts.traceback",
    ):
        assert place in before
    forget(app, "user_13")
    env.settle(allow_failures=True)  # customer.deleted, scrubbed as it is processed
    assert found_in_database(app, EMAIL, NAME) == []
    (failed,) = env.events("customer.created")
    assert failed.status == "failed"  # still retried, without the email


def test_export_returns_the_persons_data_and_after_forget_what_is_left(
    env: StripelineEnv,
) -> None:
    app = env.app
    customer = make_customer(env, "user_3")
    intent = pay(env, customer, 900)
    env.settle()
    doc = export(app, "user_3")
    json.dumps(doc)  # plain JSON types
    assert doc["customer_id"] == customer and doc["link"]["customer_id"] == customer
    assert doc["customer"]["email"] == EMAIL and doc["customer"]["name"] == NAME
    assert [m["billing_details"]["email"] for m in doc["payment_methods"]] == [EMAIL]
    assert [p["id"] for p in doc["payment_intents"]] == [intent.id]
    assert [c["amount"] for c in doc["charges"]] == [900]
    assert doc["erasures"] == [] and doc["refunds"] == [] and doc["disputes"] == []
    for key in ("invoices", "subscriptions", "checkout_sessions"):
        assert doc[key] == []

    forget(app, "user_3")
    after = export(app, "user_3")
    assert after["link"] is None and after["customer_id"] == customer
    assert [c["amount"] for c in after["charges"]] == [900]
    assert EMAIL not in json.dumps(after) and NAME not in json.dumps(after)
    assert [e["stripe_action"] for e in after["erasures"]] == ["deleted"]
    # Someone never seen: nothing, and no error.
    nobody = export(app, "user_unknown")
    assert nobody["customer"] is None and nobody["charges"] == [] and nobody["link"] is None


def test_open_invoices_make_it_anonymised_not_deleted_and_a_later_forget_deletes(
    env: StripelineEnv,
) -> None:
    app = env.app
    client = env.client
    customer = make_customer(env, "user_4")
    invoice = client.v1.invoices.create(
        {"customer": customer, "collection_method": "send_invoice", "days_until_due": 30}
    )
    client.v1.invoice_items.create(
        {"customer": customer, "amount": 700, "currency": "eur", "invoice": invoice.id}
    )
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    assert invoice.status == "open"
    env.settle()

    report = forget(app, "user_4")
    assert report.stripe_action == "anonymised"
    assert report.reason is not None and invoice.id in report.reason
    assert "open or draft invoice" in report.reason
    assert not deleted_at_stripe(env, customer)
    at_stripe = client.v1.customers.retrieve(customer)
    assert (at_stripe.email, at_stripe.name, at_stripe.phone, at_stripe.address) == (
        None,
        None,
        None,
        None,
    )
    assert (
        at_stripe.description is None
        and at_stripe.metadata is not None
        and at_stripe.metadata.to_dict() == {}
    )
    env.settle()
    assert found_in_database(app, EMAIL, NAME) == []
    mirrored = app.mirror.invoice(invoice.id)
    assert mirrored is not None and mirrored.amount_due == 700 and mirrored.status == "open"

    # Settled later: forgetting again deletes the customer.
    client.v1.invoices.void_invoice(invoice.id)
    env.settle()
    again = forget(app, "user_4")
    assert (again.stripe_action, again.reason, again.repeated) == ("deleted", None, True)
    assert deleted_at_stripe(env, customer)
    with connect(app.engine, readonly=True) as conn:
        rows = conn.execute(select(models.Erasure.stripe_action)).scalars().all()
    assert rows == ["deleted"]  # one erasure of the customer, completed


def test_an_open_dispute_makes_it_anonymised(env: StripelineEnv) -> None:
    app = env.app
    customer = make_customer(env, "user_10")
    intent = env.client.v1.payment_intents.create(
        {
            "amount": 4000,
            "currency": "eur",
            "customer": customer,
            "payment_method": "pm_card_createDispute",
            "confirm": True,
            "receipt_email": EMAIL,
        }
    )
    env.settle()
    (dispute,) = app.mirror.disputes()
    assert dispute.charge == intent.latest_charge and dispute.status not in ("won", "lost")
    report = forget(app, "user_10")
    assert report.stripe_action == "anonymised"
    assert report.reason is not None and dispute.id in report.reason
    assert "not closed" in report.reason
    assert not deleted_at_stripe(env, customer)
    env.settle()
    assert found_in_database(app, EMAIL, NAME) == []
    kept = app.mirror.dispute(dispute.id)
    assert kept is not None and kept.amount == 4000


def test_a_re_fetch_after_the_erasure_is_scrubbed_and_handlers_see_no_personal_data(
    env: StripelineEnv,
) -> None:
    """Stripe keeps a deleted customer's charges whole: a charge read again
    from the API after the erasure (the ``refetch`` policy) carries the email."""
    app = env.app
    seen: list[Any] = []

    @app.on("charge.updated")
    def record(event: Any) -> None:
        seen.append(event.data["data"]["object"]["billing_details"]["email"])

    customer = make_customer(env, "user_11")
    intent = pay(env, customer, 1500)
    env.settle()
    forget(app, "user_11")
    env.settle()
    charge = env.client.v1.charges.retrieve(str(intent.latest_charge)).to_dict()
    assert charge["billing_details"]["email"] == EMAIL  # still there at Stripe
    refetching = Stripeline(
        app.settings.model_copy(update={"mirror_policies": {"charge": "refetch"}})
    )
    refetching.include(app)
    try:
        env.app = refetching
        env.deliver([make_event("charge.updated", charge, created=int(time.time()) + 5)], copies=1)
        env.settle()
    finally:
        env.app = app
        refetching.dispose()
    assert seen == [None]
    assert found_in_database(app, EMAIL, NAME) == []
    mirrored = app.mirror.charge(charge["id"])
    assert mirrored is not None and mirrored.amount == 1500


def test_forget_twice_and_after_a_crash_half_way(
    env: StripelineEnv, stripe_sandbox: Sandbox, stripe_key: str
) -> None:
    app = env.app
    customer = make_customer(env, "user_5")
    pay(env, customer, 300)
    env.settle()
    # The deletion's answer is lost: the erasure is recorded, pending, and
    # what arrives meanwhile is already scrubbed.
    stripe_sandbox.inject_fault(
        "disconnect", path=f"/v1/customers/{customer}", method="DELETE", key=stripe_key
    )
    with pytest.raises(StripeConnectionError):
        forget(app, "user_5")
    with connect(app.engine, readonly=True) as conn:
        (pending,) = conn.execute(select(models.Erasure.stripe_action)).scalars().all()
    assert pending == "pending"
    assert app.mirror.customer_link("user_5") is not None  # not done: the link stays
    env.settle()
    first = forget(app, "user_5")  # a new try finishes the job
    assert (first.stripe_action, first.repeated) == ("deleted", True)
    second = forget(app, "user_5")  # the link is gone: found by the user id
    assert (second.customer_id, second.stripe_action, second.repeated) == (
        customer,
        "deleted",
        True,
    )
    env.settle()
    assert found_in_database(app, EMAIL, NAME) == []
    with connect(app.engine, readonly=True) as conn:
        assert conn.execute(select(models.Erasure.id)).scalars().all() == [first_id(app)]


def first_id(app: Stripeline) -> int:
    with connect(app.engine, readonly=True) as conn:
        return int(conn.execute(select(models.Erasure.id)).scalars().first() or 0)


def test_a_customer_shared_by_two_users_is_refused_then_forgotten_by_id(
    env: StripelineEnv,
) -> None:
    app = env.app
    customer = make_customer(env, "user_6")
    app.mirror.link_customer("user_6b", customer)
    env.settle()
    with pytest.raises(ErasureRefused, match="other user"):
        forget(app, "user_6")
    assert not deleted_at_stripe(env, customer)
    report = forget_customer(app, customer)
    assert report.stripe_action == "deleted" and report.app_user_id is None
    assert app.mirror.users_for_customer(customer) == []
    env.settle()
    assert found_in_database(app, EMAIL, NAME) == []


def test_an_unknown_user_is_recorded_as_not_found(env: StripelineEnv) -> None:
    report = forget(env.app, "nobody")
    assert (report.customer_id, report.stripe_action, report.mirror_rows) == (None, "not_found", 0)
    assert forget(env.app, "nobody").repeated is True


def test_async_twins(env: StripelineEnv) -> None:
    customer = make_customer(env, "user_7")
    env.settle()
    doc = asyncio.run(export_async(env.app, "user_7"))
    assert doc["customer"]["id"] == customer
    report = asyncio.run(forget_async(env.app, "user_7"))
    assert report.stripe_action == "deleted"


def test_a_live_customer_id_is_refused_before_any_call(env: StripelineEnv) -> None:
    app = env.app
    customer = make_customer(env, "user_8")
    env.settle()
    held = app.mirror.customer(customer)
    assert held is not None
    with connect(app.engine) as conn:
        conn.execute(
            update(models.Customer)
            .where(models.Customer.id == customer)
            .values(livemode=True, data={**held.data, "livemode": True})
        )
    with pytest.raises(ModeMismatch):
        forget(app, "user_8")
    assert not deleted_at_stripe(env, customer)
    with connect(app.engine, readonly=True) as conn:
        assert conn.execute(select(models.Erasure.id)).first() is None  # nothing recorded
    assert app.mirror.customer_link("user_8") is not None


def test_docs_example_runs(env: StripelineEnv, tmp_path: Path) -> None:
    del tmp_path
    customer = make_customer(env, "user_9")
    env.settle()
    namespace: dict[str, Any] = {"app": env.app}
    exec(_docs_example(), namespace)  # noqa: S102 - our own docs
    assert namespace["report"].customer_id == customer


def _docs_example() -> str:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "privacy.md").read_text()
    start = doc.index("```python\n") + len("```python\n")
    return doc[start : doc.index("```", start)]


def test_scrub_blanks_personal_keys_at_any_depth_and_keeps_ids_and_amounts() -> None:
    invoice = {
        "id": "in_ada4242",
        "object": "invoice",
        "customer": "cus_ada",
        "amount_due": 700,
        "currency": "eur",
        "customer_email": EMAIL,
        "customer_name": NAME,
        "customer_address": {"line1": STREET, "city": "London", "country": "GB"},
        "customer_tax_ids": [{"type": "eu_vat", "value": "GB123456789"}],
        "footer": f"Thank you, {NAME}!",
        "metadata": {"note": f"call {PHONE}", "order": "42"},
        "lines": {"data": [{"id": "il_1", "amount": 700, "description": f"Gift for {NAME}"}]},
    }
    clean = scrub(invoice)
    assert clean["customer_email"] is None and clean["customer_name"] is None
    assert clean["customer_address"] == {"line1": None, "city": None, "country": None}
    assert clean["customer_tax_ids"] == []
    assert clean["footer"] == "Thank you, !"
    assert clean["lines"]["data"][0] == {"id": "il_1", "amount": 700, "description": "Gift for "}
    assert (clean["id"], clean["customer"], clean["amount_due"], clean["currency"]) == (
        "in_ada4242",
        "cus_ada",
        700,
        "eur",
    )
    # Values given from elsewhere (the person's other objects) are cut too.
    assert scrub(invoice, [PHONE])["metadata"] == {"note": "call ", "order": "42"}
    tax_id = scrub({"id": "txi_1", "object": "tax_id", "value": "GB123456789", "type": "eu_vat"})
    assert tax_id == {"id": "txi_1", "object": "tax_id", "value": None, "type": "eu_vat"}
    assert scrub(invoice) == scrub(scrub(invoice))  # scrubbing again changes nothing
