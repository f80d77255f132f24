"""Subscriptions (``stripeline.flows.subscriptions``) end to end: the official
SDK against the sandbox on a test clock, webhooks into a served app, on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe
from pydantic import SecretStr

from stripeline.app import Stripeline
from stripeline.declines import advise
from stripeline.errors import ModeMismatch, StripeConnectionError, SubscriptionNotFound
from stripeline.flows.subscriptions import (
    PaymentActionRequired,
    PaymentFailed,
    Started,
    SubscriptionEnded,
    Subscriptions,
    SwapPreview,
    TrialWillEnd,
    UpcomingRenewal,
)
from stripeline.settings import Settings
from stripeline.testing import StripelineEnv
from stripeline_sandbox import Sandbox

pytest_plugins = ["pytester"]

DAY = 86400
HOUR = 3600
#: 2026-01-01 00:00:00 UTC.
START = 1_767_225_600


def settings_for(sandbox: Sandbox, key: str, database_url: str) -> Settings:
    return Settings(
        stripe_secret_key=SecretStr(key),
        stripe_webhook_secret=SecretStr(sandbox.webhook_secret),
        stripe_api_base=sandbox.url,
        database_url=database_url,
        max_network_retries=0,
        mirror_coalesce_seconds=0,
    )


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    app = Stripeline(settings_for(stripe_sandbox, stripe_key, database_url))
    yield app
    app.dispose()


@pytest.fixture
def env(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    app: Stripeline,
) -> Iterator[StripelineEnv]:
    env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, app)
    yield env
    env.close()


def at(moment: int) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def clocked_customer(
    client: stripe.StripeClient, card: str | None = "pm_card_visa"
) -> tuple[str, str]:
    """A test clock at ``START`` and a customer on it (paying with ``card``)."""
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START})
    params: dict[str, Any] = {
        "email": "ada@example.com",
        "name": "Ada",
        "test_clock": clock.id,
        "metadata": {"stripeline_user_id": "user_ada"},
    }
    if card:
        params["payment_method"] = card
        params["invoice_settings"] = {"default_payment_method": card}
    customer = client.v1.customers.create(params)  # type: ignore[arg-type]
    return clock.id, customer.id


def price(client: stripe.StripeClient, amount: int, name: str = "Pro", **recurring: Any) -> str:
    params: dict[str, Any] = {
        "currency": "usd",
        "unit_amount": amount,
        "recurring": {"interval": "month", **recurring},
        "product_data": {"name": name},
    }
    return client.v1.prices.create(params).id  # type: ignore[arg-type]


def use_card(client: stripe.StripeClient, customer_id: str, card: str) -> None:
    payment_method = client.v1.payment_methods.attach(card, {"customer": customer_id})
    client.v1.customers.update(
        customer_id, {"invoice_settings": {"default_payment_method": payment_method.id}}
    )


def assert_mirrored(env: StripelineEnv, subscription_id: str, **expected: Any) -> dict[str, Any]:
    """Stripe's subscription and the mirror's agree on ``expected`` (after settle)."""
    env.settle()
    fresh = env.client.v1.subscriptions.retrieve(subscription_id).to_dict()
    held = env.mirror(subscription_id)
    assert held is not None
    for name, value in expected.items():
        assert fresh[name] == value, (name, fresh[name])
        assert held[name] == value, (name, held[name])
    return fresh


def test_start_returns_the_client_secret_and_the_same_intent_is_one_subscription(
    env: StripelineEnv,
) -> None:
    subscriptions = Subscriptions(env.app)
    pro, team = price(env.client, 2000), price(env.client, 5000, "Team")
    started = subscriptions.start("user_1", pro)
    assert isinstance(started, Started)
    assert started.status == "incomplete" and started.client_secret
    assert started.subscription.status == "incomplete"  # in the mirror at once
    assert started.subscription.data["metadata"]["stripeline_user_id"] == "user_1"
    again = subscriptions.start("user_1", pro)
    assert again.subscription.id == started.subscription.id
    assert again.client_secret == started.client_secret
    # Several subscriptions per customer: another price, or its own reference.
    other = subscriptions.start("user_1", [(team, 3)])
    second_pro = subscriptions.start("user_1", pro, reference="user_1:second_seat")
    ids = {started.subscription.id, other.subscription.id, second_pro.subscription.id}
    assert len(ids) == 3
    customer = started.subscription.customer
    listed = env.client.v1.subscriptions.list({"customer": str(customer), "status": "all"})
    assert {s.id for s in listed.data} == ids
    assert other.subscription.data["items"]["data"][0]["quantity"] == 3
    # The browser pays the first invoice with the secret: active, from the inbox.
    invoice = env.client.v1.invoices.retrieve(str(started.invoice_id))
    pi = invoice.payments.data[0].payment.payment_intent  # type: ignore[union-attr]
    env.client.v1.payment_intents.confirm(str(pi), {"payment_method": "pm_card_visa"})
    assert_mirrored(env, started.subscription.id, status="active")
    assert subscriptions.get(started.subscription.id).status == "active"
    assert subscriptions.get("user_1:second_seat").id == second_pro.subscription.id


def test_a_start_whose_answer_is_lost_then_a_restart_is_one_subscription(
    env: StripelineEnv, stripe_sandbox: Sandbox, stripe_key: str
) -> None:
    pro = price(env.client, 2000)
    _, customer = clocked_customer(env.client)
    stripe_sandbox.inject_fault(
        "disconnect", path="/v1/subscriptions$", method="POST", key=stripe_key
    )
    with pytest.raises(StripeConnectionError):
        Subscriptions(env.app).start(customer, pro, payment_behavior="allow_incomplete")
    restarted = Stripeline(env.app.settings)  # a new process: only the database
    try:
        started = Subscriptions(restarted).start(customer, pro, payment_behavior="allow_incomplete")
    finally:
        restarted.dispose()
    assert started.status == "active"
    listed = env.client.v1.subscriptions.list({"customer": customer, "status": "all"})
    assert [s.id for s in listed.data] == [started.subscription.id]
    invoices = env.client.v1.invoices.list({"customer": customer}).data
    assert [i.amount_paid for i in invoices] == [2000]  # charged once


def test_a_three_d_secure_first_payment_and_the_action_required_hook(env: StripelineEnv) -> None:
    subscriptions = Subscriptions(env.app)
    seen: list[PaymentActionRequired] = []
    subscriptions.on_payment_action_required(seen.append)
    _, customer = clocked_customer(env.client, card=None)
    started = subscriptions.start(
        customer,
        price(env.client, 1500),
        payment_behavior="allow_incomplete",
        payment_method="pm_card_authenticationRequired",
    )
    assert started.requires_action and started.payment_intent_status == "requires_action"
    assert started.client_secret and started.status == "incomplete"
    env.settle()
    assert len(seen) == 1
    notice = seen[0]
    assert notice.subscription_id == started.subscription.id
    assert notice.invoice_id == started.invoice_id
    assert notice.hosted_invoice_url and notice.hosted_invoice_url.startswith("https://")
    assert (notice.amount_due, notice.currency, notice.email) == (1500, "usd", "ada@example.com")
    invoice = env.client.v1.invoices.retrieve(str(started.invoice_id))
    pi = str(invoice.payments.data[0].payment.payment_intent)  # type: ignore[union-attr]
    env.control("POST", f"/_sandbox/payment_intents/{pi}/authenticate", outcome="succeeded")
    assert_mirrored(env, started.subscription.id, status="active")
    env.deliver([e.data for e in env.events()], order="shuffled", seed=3, copies=2)
    env.settle()
    assert len(seen) == 1


@pytest.mark.parametrize("behavior", ["create_prorations", "always_invoice"])
def test_preview_swap_equals_the_proration_the_swap_bills(
    env: StripelineEnv, behavior: Any
) -> None:
    subscriptions = Subscriptions(env.app)
    clock, customer = clocked_customer(env.client)
    pro, team = price(env.client, 2000), price(env.client, 5000, "Team")
    started = subscriptions.start(customer, pro, payment_behavior="allow_incomplete")
    assert started.status == "active" and started.client_secret is None
    sub = started.subscription.id
    env.advance_clock(10 * DAY + 7, test_clock=clock)
    preview = subscriptions.preview_swap(sub, team, proration_behavior=behavior)
    assert isinstance(preview, SwapPreview)
    # 2000 → 5000 with 21 of 31 days left, each side rounded to the cent.
    remaining = 31 * DAY - (10 * DAY + 7)
    expected = round(5000 * remaining / (31 * DAY)) - round(2000 * remaining / (31 * DAY))
    assert preview.amount == expected and preview.currency == "usd"
    assert preview.proration_date == START + 10 * DAY + 7
    assert env.client.v1.subscriptions.retrieve(sub)["items"].data[0].price.id == pro
    swapped = subscriptions.swap(
        sub, team, proration_behavior=behavior, proration_date=preview.proration_date
    )
    assert swapped.data["items"]["data"][0]["price"]["id"] == team  # the mirror, at once
    if behavior == "always_invoice":
        billed = env.client.v1.invoices.retrieve(str(swapped.latest_invoice))
        assert billed.billing_reason == "subscription_update"
        assert billed.amount_due == preview.amount == preview.amount_due
    else:
        pending = env.client.v1.invoice_items.list({"customer": customer}).data
        assert sum(i.amount for i in pending) == preview.amount
        env.advance_clock(22 * DAY, test_clock=clock)
        renewal = env.client.v1.invoices.retrieve(
            str(env.client.v1.subscriptions.retrieve(sub).latest_invoice)
        )
        assert renewal.amount_paid == 5000 + preview.amount == preview.amount_due
    fresh = assert_mirrored(env, sub, status="active")
    assert fresh["items"]["data"][0]["price"]["id"] == team
    # The same swap again is the same call; back and forth again is a new one.
    same: dict[str, Any] = {
        "proration_behavior": behavior,
        "proration_date": preview.proration_date,
    }
    assert subscriptions.swap(sub, team, **same).id == sub
    item = swapped.data["items"]["data"][0]["id"]
    assert env.app.calls.record("subscription:swap", f"{sub}:{item}:{team}#2") is None
    subscriptions.swap(sub, pro, proration_behavior="none")
    subscriptions.swap(sub, team, proration_behavior="none")
    second = env.app.calls.record("subscription:swap", f"{sub}:{item}:{team}#2")
    assert second is not None and second.status == "done"
    assert_mirrored(env, sub, status="active")
    assert env.mirror(sub)["items"]["data"][0]["price"]["id"] == team  # type: ignore[index]


def test_quantity_cancel_resume_pause_unpause_end_in_stripes_state_and_the_mirrors(
    env: StripelineEnv,
) -> None:
    subscriptions = Subscriptions(env.app)
    clock, customer = clocked_customer(env.client)
    seats = price(env.client, 1000, "Seat")
    sub = subscriptions.start(
        customer, (seats, 2), trial_days=14, payment_behavior="allow_incomplete"
    ).subscription
    assert sub.status == "trialing"
    assert sub.trial_end == at(START + 14 * DAY)

    changed = subscriptions.change_quantity(sub, 5)
    assert changed.data["items"]["data"][0]["quantity"] == 5
    assert assert_mirrored(env, sub.id)["items"]["data"][0]["quantity"] == 5

    assert subscriptions.cancel(sub).cancel_at_period_end is True
    assert_mirrored(env, sub.id, cancel_at_period_end=True, status="trialing")
    assert subscriptions.resume(sub).cancel_at_period_end is False
    assert_mirrored(env, sub.id, cancel_at_period_end=False, cancel_at=None)
    # Cancel again after the resume: a new call, not the recorded first one.
    assert subscriptions.cancel(sub).cancel_at_period_end is True
    assert subscriptions.resume(sub).cancel_at_period_end is False

    ended = subscriptions.end_trial_now(sub)
    assert ended.status == "active"
    invoice = env.client.v1.invoices.retrieve(str(ended.latest_invoice))
    assert invoice.amount_due == 5000 and invoice.status == "paid"
    assert_mirrored(env, sub.id, status="active")

    paused = subscriptions.pause_collection(sub, behavior="void")
    assert paused.data["pause_collection"]["behavior"] == "void"
    assert_mirrored(env, sub.id, pause_collection={"behavior": "void", "resumes_at": None})
    env.advance_clock(32 * DAY, test_clock=clock)
    voided = env.client.v1.invoices.retrieve(
        str(env.client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    )
    assert voided.status == "void"  # collection paused: the renewal is not charged
    assert subscriptions.unpause(sub).data["pause_collection"] is None
    assert_mirrored(env, sub.id, pause_collection=None, status="active")

    canceled = subscriptions.cancel(sub, at_period_end=False)
    assert canceled.status == "canceled"
    assert_mirrored(env, sub.id, status="canceled")
    assert subscriptions.cancel(sub, at_period_end=False).status == "canceled"  # recorded


def test_a_metered_subscription_bills_the_reported_usage_at_renewal(env: StripelineEnv) -> None:
    subscriptions = Subscriptions(env.app)
    clock, customer = clocked_customer(env.client)
    meter = env.client.v1.billing.meters.create(
        {
            "display_name": "API calls",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
        }
    )
    base = price(env.client, 900, "Base")
    calls = price(env.client, 2, "Calls", usage_type="metered", meter=meter.id)
    sub = subscriptions.start(
        customer, [base, calls], payment_behavior="allow_incomplete"
    ).subscription
    assert sub.status == "active"
    first = subscriptions.report_usage(customer, "api_calls", 120, identifier="usage_1")
    assert (first.identifier, first.timestamp) == ("usage_1", START)
    subscriptions.report_usage(customer, "api_calls", 30, identifier="usage_2")
    # The same usage again (a retry) is not counted twice.
    subscriptions.report_usage(customer, "api_calls", 30, identifier="usage_2")
    env.advance_clock(31 * DAY + 2 * HOUR, test_clock=clock)
    renewed = env.client.v1.subscriptions.retrieve(sub.id)
    invoice = env.client.v1.invoices.retrieve(str(renewed.latest_invoice))
    assert invoice.billing_reason == "subscription_cycle" and invoice.status == "paid"
    assert invoice.amount_paid == 900 + 150 * 2
    held = env.mirror(invoice.id)
    assert held is not None and held["amount_paid"] == 1200 and held["status"] == "paid"


def dunning_hooks(subscriptions: Subscriptions) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {
        "trial": [],
        "failed": [],
        "action": [],
        "upcoming": [],
        "ended": [],
    }
    subscriptions.on_trial_will_end(seen["trial"].append)
    subscriptions.on_payment_failed(seen["failed"].append)
    subscriptions.on_payment_action_required(seen["action"].append)
    subscriptions.on_upcoming_renewal(seen["upcoming"].append)
    subscriptions.on_subscription_ended(seen["ended"].append)
    return seen


def counts(seen: dict[str, list[Any]]) -> dict[str, int]:
    return {name: len(found) for name, found in seen.items()}


def replay_everything(env: StripelineEnv) -> None:
    # Duplicated and shuffled ("shuffled" alone sends each event once).
    env.deliver([e.data for e in env.events()] * 2, order="shuffled", seed=11)
    env.settle()


def test_trial_renewal_failed_payment_and_recovery_run_each_hook_once(
    env: StripelineEnv,
) -> None:
    subscriptions = Subscriptions(env.app)
    seen = dunning_hooks(subscriptions)
    clock, customer = clocked_customer(env.client)
    pro = price(env.client, 2000)
    sub = subscriptions.start(customer, pro, trial_days=7).subscription
    assert sub.status == "trialing"

    env.advance_clock(4 * DAY + HOUR, test_clock=clock)
    assert counts(seen)["trial"] == 1
    trial: TrialWillEnd = seen["trial"][0]
    assert trial.subscription_id == sub.id and trial.trial_end == at(START + 7 * DAY)
    assert (trial.email, trial.name, trial.user_id) == ("ada@example.com", "Ada", "user_ada")
    assert trial.has_payment_method is True

    env.advance_clock(3 * DAY + 2 * HOUR, test_clock=clock)  # the trial ends: paid
    assert_mirrored(env, sub.id, status="active")
    renews = START + 7 * DAY + 31 * DAY
    env.advance_clock(to=renews - 6 * DAY, test_clock=clock)
    assert counts(seen)["upcoming"] == 1
    upcoming: UpcomingRenewal = seen["upcoming"][0]
    assert (upcoming.subscription_id, upcoming.renews_at) == (sub.id, at(renews))
    assert (upcoming.amount_due, upcoming.currency) == (2000, "usd")

    use_card(env.client, customer, "pm_card_chargeCustomerFail")
    env.advance_clock(to=renews + 2 * HOUR, test_clock=clock)
    assert_mirrored(env, sub.id, status="past_due")
    assert counts(seen)["failed"] == 1
    failed: PaymentFailed = seen["failed"][0]
    assert failed.subscription_id == sub.id and failed.attempt_count == 1
    assert failed.next_attempt_at == at(renews + HOUR + DAY) and not failed.final
    assert failed.hosted_invoice_url and failed.hosted_invoice_url.startswith("https://")
    assert (failed.amount_due, failed.billing_reason) == (2000, "subscription_cycle")
    assert failed.decline == advise("generic_decline", code="card_declined")
    assert failed.email == "ada@example.com"

    use_card(env.client, customer, "pm_card_visa")  # a new card: the retry pays
    env.advance_clock(DAY, test_clock=clock)
    assert_mirrored(env, sub.id, status="active")
    replay_everything(env)
    assert counts(seen) == {"trial": 1, "failed": 1, "action": 0, "upcoming": 1, "ended": 0}


def test_failure_exhausted_retries_and_canceled_run_each_hook_once(
    env: StripelineEnv, stripe_sandbox: Sandbox, stripe_key: str
) -> None:
    stripe_sandbox.set_billing(retry_days=[1, 2], after_retries="cancel", key=stripe_key)
    subscriptions = Subscriptions(env.app)
    seen = dunning_hooks(subscriptions)
    clock, customer = clocked_customer(env.client)
    sub = subscriptions.start(
        customer, price(env.client, 3000), payment_behavior="allow_incomplete"
    ).subscription
    assert sub.status == "active"
    use_card(env.client, customer, "pm_card_chargeCustomerFail")
    env.advance_clock(31 * DAY + 2 * HOUR, test_clock=clock)
    env.advance_clock(DAY, test_clock=clock)
    env.advance_clock(2 * DAY, test_clock=clock)
    assert_mirrored(env, sub.id, status="canceled")
    failed: list[PaymentFailed] = seen["failed"]
    assert [f.attempt_count for f in failed] == [1, 2, 3]
    assert [f.final for f in failed] == [False, False, True]
    assert len({f.invoice_id for f in failed}) == 1
    ended: SubscriptionEnded = seen["ended"][0]
    assert (ended.subscription_id, ended.reason) == (sub.id, "payment_failed")
    assert ended.ended_at is not None and ended.user_id == "user_ada"
    replay_everything(env)
    assert counts(seen) == {"trial": 0, "failed": 3, "action": 0, "upcoming": 1, "ended": 1}


def test_unknown_subscriptions_and_other_mode_ids_are_refused(
    env: StripelineEnv, stripe_sandbox: Sandbox, stripe_key: str, database_url: str
) -> None:
    subscriptions = Subscriptions(env.app)
    with pytest.raises(SubscriptionNotFound):
        subscriptions.cancel("sub_missing")
    with pytest.raises(SubscriptionNotFound):
        subscriptions.get("never_started")
    started = subscriptions.start("user_m", price(env.client, 700))
    live = Stripeline(
        settings_for(stripe_sandbox, stripe_key, database_url).model_copy(
            update={"mode": "live", "stripe_secret_key": None}
        )
    )
    try:
        with pytest.raises(ModeMismatch):
            Subscriptions(live).cancel(started.subscription.id)
    finally:
        live.dispose()


def test_the_async_twins(env: StripelineEnv) -> None:
    subscriptions = Subscriptions(env.app)
    _, customer = clocked_customer(env.client)
    pro, team = price(env.client, 2000), price(env.client, 3000, "Team")

    async def run() -> None:
        started = await subscriptions.start_async(
            customer, pro, payment_behavior="allow_incomplete"
        )
        sub = started.subscription.id
        preview = await subscriptions.preview_swap_async(sub, team)
        assert preview.amount == 1000  # a whole month left
        assert (await subscriptions.swap_async(sub, team)).id == sub
        assert (await subscriptions.change_quantity_async(sub, 2)).id == sub
        assert (await subscriptions.cancel_async(sub)).cancel_at_period_end
        assert not (await subscriptions.resume_async(sub)).cancel_at_period_end
        assert (await subscriptions.pause_collection_async(sub)).data["pause_collection"]
        assert not (await subscriptions.unpause_async(sub)).data["pause_collection"]
        assert (await subscriptions.get_async(sub)).status == "active"
        assert (await subscriptions.cancel_async(sub, at_period_end=False)).status == "canceled"

    asyncio.run(run())


def test_a_coupon_or_a_promotion_code_discounts_the_first_invoice(env: StripelineEnv) -> None:
    subscriptions = Subscriptions(env.app)
    _, customer = clocked_customer(env.client)
    pro = price(env.client, 4000)
    coupon = env.client.v1.coupons.create({"percent_off": 50, "duration": "once"})
    code = env.client.v1.promotion_codes.create(
        {"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "HALF"}
    )
    with pytest.raises(ValueError):
        subscriptions.start(customer, pro, coupon=coupon.id, promotion_code=code.id)
    by_code = subscriptions.start(
        customer, pro, promotion_code=code.id, payment_behavior="allow_incomplete"
    )
    by_coupon = subscriptions.start(
        customer, [(pro, 2)], coupon=coupon.id, payment_behavior="allow_incomplete"
    )
    paid = [
        env.client.v1.invoices.retrieve(str(s.invoice_id)).amount_paid for s in (by_code, by_coupon)
    ]
    assert paid == [2000, 4000]
    assert by_code.subscription.data["discounts"] and by_code.status == "active"


DOC = Path(__file__).resolve().parent.parent / "docs" / "subscriptions.md"


def doc_block(name: str) -> str:
    """The python block of docs/subscriptions.md whose first line is ``# <name>``."""
    match = re.search(rf"```python\n(# {re.escape(name)}\n.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"docs/subscriptions.md has no block {name}"
    return match.group(1)


@pytest.mark.slow
def test_the_documented_subscription_service_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(billing=doc_block("billing.py"), test_billing=doc_block("test_billing.py"))
    pytester.makeini(
        """
        [pytest]
        stripeline_app = billing:app
        filterwarnings = error
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=240)
    result.assert_outcomes(passed=1)
