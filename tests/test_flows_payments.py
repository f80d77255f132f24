"""Payments (``stripeline.flows.payments``) end to end: the official SDK
against the sandbox, webhooks into a served app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import stripe
from pydantic import SecretStr

from stripeline.app import Stripeline
from stripeline.declines import advise
from stripeline.errors import (
    CallConflict,
    ModeMismatch,
    NotRefundable,
    PaymentNotFound,
    StripeConnectionError,
    StripeInvalidRequestError,
)
from stripeline.flows.payments import (
    Canceled,
    Declined,
    Fulfilment,
    Payments,
    Processing,
    Refunded,
    RequiresAction,
    RequiresCapture,
    RequiresPaymentMethod,
    Succeeded,
)
from stripeline.settings import Settings
from stripeline.testing import StripelineEnv, make_event
from stripeline_sandbox import Sandbox

pytest_plugins = ["pytester"]


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


def fulfilled_by(payments: Payments) -> list[Fulfilment]:
    """Register a hook recording each fulfilment (in the event's transaction)."""
    seen: list[Fulfilment] = []

    @payments.fulfil
    def record(fulfilment: Fulfilment) -> None:
        seen.append(fulfilment)

    return seen


def payment_intents(client: stripe.StripeClient) -> list[stripe.PaymentIntent]:
    return list(client.v1.payment_intents.list({"limit": 100}).auto_paging_iter())


def charges(client: stripe.StripeClient) -> list[stripe.Charge]:
    return list(client.v1.charges.list({"limit": 100}).auto_paging_iter())


def redeliver_everything(env: StripelineEnv) -> None:
    """Replays: every stored event delivered twice more, out of order."""
    env.deliver([e.data for e in env.events()], order="shuffled", seed=7, copies=2)
    env.settle()


@pytest.mark.parametrize("lost", ["create", "confirm"])
def test_a_start_whose_answer_is_lost_then_a_restart_is_one_payment_one_fulfilment(
    env: StripelineEnv, stripe_sandbox: Sandbox, stripe_key: str, lost: str
) -> None:
    fulfilments = fulfilled_by(Payments(env.app))
    path = "/v1/payment_intents$" if lost == "create" else "/confirm$"
    stripe_sandbox.inject_fault("disconnect", path=path, method="POST", key=stripe_key)
    with pytest.raises(StripeConnectionError):
        Payments(env.app).start("order_42", 2000, "usd", payment_method="pm_card_visa")
    # A new process: nothing in memory, only the database.
    restarted = Stripeline(env.app.settings)
    try:
        outcome = Payments(restarted).start("order_42", 2000, "usd", payment_method="pm_card_visa")
    finally:
        restarted.dispose()
    assert isinstance(outcome, Succeeded)
    assert (outcome.order_id, outcome.amount_received, outcome.currency) == (
        "order_42",
        2000,
        "usd",
    )
    (made,) = payment_intents(env.client)
    assert made.id == outcome.payment_intent_id
    assert made.metadata["stripeline_order_id"] == "order_42"
    assert len(charges(env.client)) == 1
    env.settle()
    redeliver_everything(env)
    assert [(f.order_id, f.payment_intent_id, f.amount) for f in fulfilments] == [
        ("order_42", made.id, 2000)
    ]
    assert Payments(env.app).status("order_42") == outcome


def test_a_changed_amount_for_the_same_order_is_a_conflict(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    payments = Payments(app)
    first = payments.start("order_7", 1500, "usd")
    assert isinstance(first, RequiresPaymentMethod) and first.client_secret
    assert payments.start("order_7", 1500, "usd") == first
    with pytest.raises(CallConflict, match="payment_intent:create:order_7"):
        payments.start("order_7", 1600, "usd")
    assert len(payment_intents(stripe_client)) == 1
    # Confirmed later, by order id or by the PaymentIntent's id.
    paid = payments.confirm(first.payment_intent_id, payment_method="pm_card_visa")
    assert isinstance(paid, Succeeded) and paid.order_id == "order_7"


def test_concurrent_starts_of_one_order_make_one_payment(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    payments = Payments(app)

    def start(_: int) -> str:
        outcome = payments.start("order_cc", 1000, "usd", payment_method="pm_card_visa")
        assert isinstance(outcome, Succeeded)
        return outcome.payment_intent_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = set(pool.map(start, range(8)))
    assert len(made) == 1
    assert [p.id for p in payment_intents(stripe_client)] == list(made)
    assert len(charges(stripe_client)) == 1


DECLINES = [
    ("pm_card_visa_chargeDeclined", "card_declined", "generic_decline"),
    ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
    ("pm_card_visa_chargeDeclinedLostCard", "card_declined", "lost_card"),
    ("pm_card_chargeDeclinedStolenCard", "card_declined", "stolen_card"),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
    ("pm_card_chargeDeclinedProcessingError", "processing_error", "processing_error"),
]


@pytest.mark.parametrize(("card", "code", "decline_code"), DECLINES)
def test_every_decline_card_is_declined_with_the_advised_message(
    app: Stripeline, stripe_client: stripe.StripeClient, card: str, code: str, decline_code: str
) -> None:
    payments = Payments(app)
    outcome = payments.start("order_d", 1500, "usd", payment_method=card)
    advice = advise(decline_code, code=code)
    assert isinstance(outcome, Declined)
    assert (outcome.decline_code, outcome.code) == (decline_code, code)
    assert outcome.user_message == advice.message
    assert (outcome.next_action, outcome.generic) == (advice.next_action, advice.generic)
    assert outcome.client_secret and outcome.order_id == "order_d"
    # Another card for the same order: the same PaymentIntent, paid.
    paid = payments.start("order_d", 1500, "usd", payment_method="pm_card_visa")
    assert isinstance(paid, Succeeded) and paid.payment_intent_id == outcome.payment_intent_id
    assert len(payment_intents(stripe_client)) == 1


def test_three_d_secure_requires_action_then_fulfils_once(env: StripelineEnv) -> None:
    payments = Payments(env.app)
    fulfilments = fulfilled_by(payments)
    outcome = payments.start(
        "order_3ds", 4200, "eur", payment_method="pm_card_authenticationRequired"
    )
    assert isinstance(outcome, RequiresAction)
    assert outcome.client_secret.startswith(outcome.payment_intent_id + "_secret_")
    env.advance_clock(1)
    assert fulfilments == []  # nothing paid yet: no fulfilment
    env.control(
        "POST",
        f"/_sandbox/payment_intents/{outcome.payment_intent_id}/authenticate",
        outcome="succeeded",
    )
    env.settle()
    assert [(f.order_id, f.amount, f.currency) for f in fulfilments] == [("order_3ds", 4200, "eur")]
    assert isinstance(payments.status("order_3ds"), Succeeded)
    # Starting it again (the browser came back) answers its state, charges nothing.
    again = payments.start(
        "order_3ds", 4200, "eur", payment_method="pm_card_authenticationRequired"
    )
    assert isinstance(again, Succeeded)
    assert len(charges(env.client)) == 1
    redeliver_everything(env)
    assert len(fulfilments) == 1


def test_three_d_secure_failed_then_retried_with_the_same_card(env: StripelineEnv) -> None:
    payments = Payments(env.app)
    fulfilments = fulfilled_by(payments)
    card = "pm_card_authenticationRequired"
    first = payments.start("order_f", 1000, "usd", payment_method=card)
    assert isinstance(first, RequiresAction)
    env.control(
        "POST",
        f"/_sandbox/payment_intents/{first.payment_intent_id}/authenticate",
        outcome="failed",
    )
    env.settle()
    failed = payments.status("order_f")
    assert isinstance(failed, RequiresPaymentMethod)
    assert failed.last_error_code == "payment_intent_authentication_failure"
    retried = payments.confirm("order_f", payment_method=card)
    assert isinstance(retried, RequiresAction)
    env.control(
        "POST",
        f"/_sandbox/payment_intents/{first.payment_intent_id}/authenticate",
        outcome="succeeded",
    )
    env.settle()
    assert [f.order_id for f in fulfilments] == ["order_f"]


def test_a_paid_checkout_session_fulfils_its_order_once(env: StripelineEnv) -> None:
    payments = Payments(env.app)
    fulfilments = fulfilled_by(payments)
    awaited: list[str] = []

    @payments.fulfil
    async def notify(fulfilment: Fulfilment) -> None:  # hooks may be coroutines
        await asyncio.sleep(0)
        awaited.append(fulfilment.order_id)

    session = {
        "object": "checkout.session",
        "client_reference_id": "order_co",
        "metadata": {},
        "amount_total": 3000,
        "currency": "usd",
        "customer": None,
        "payment_intent": None,
    }
    unpaid = make_event("checkout.session.completed", {**session, "payment_status": "unpaid"})
    paid = make_event(
        "checkout.session.async_payment_succeeded",
        {**session, "id": unpaid["data"]["object"]["id"], "payment_status": "paid"},
        created=unpaid["created"] + 1,
    )
    other = make_event("checkout.session.completed", {**session, "payment_status": "paid"})
    env.deliver([unpaid, paid, other], order="reversed", copies=3)
    env.settle()
    assert [(f.order_id, f.amount) for f in fulfilments] == [("order_co", 3000)]
    assert awaited == ["order_co"]


def test_twenty_concurrent_refunds_of_ten_against_a_hundred_refund_exactly_a_hundred(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    payments = Payments(app)
    paid = payments.start("order_r", 100, "usd", payment_method="pm_card_visa")
    assert isinstance(paid, Succeeded)

    def refund(_: int) -> int | NotRefundable:
        try:
            return payments.refund("order_r", 10).amount
        except NotRefundable as exc:
            return exc

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(refund, range(20)))
    made = [a for a in answers if isinstance(a, int)]
    refused = [a for a in answers if isinstance(a, NotRefundable)]
    assert sum(made) == 100 and len(made) == 10 and len(refused) == 10
    assert {(e.refundable, e.requested) for e in refused} == {(0, 10)}
    assert "10 asked, 0 left to refund of 100 received" in refused[0].message
    refunds = list(stripe_client.v1.refunds.list({"limit": 100}).auto_paging_iter())
    assert sum(r.amount for r in refunds) == 100 and len(refunds) == 10


def test_refunds_by_reference_and_outside_refunds_are_counted(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    payments = Payments(app)
    paid = payments.start("order_x", 1000, "usd", payment_method="pm_card_visa")
    first = payments.refund("order_x", 300, reference="return-1", reason="requested_by_customer")
    again = payments.refund(
        paid.payment_intent_id, 300, reference="return-1", reason="requested_by_customer"
    )
    assert again == first
    with pytest.raises(CallConflict, match="return-1"):
        payments.refund("order_x", 400, reference="return-1")
    # 200 refunded from the Dashboard: 500 left.
    stripe_client.v1.refunds.create({"payment_intent": paid.payment_intent_id, "amount": 200})
    with pytest.raises(NotRefundable) as refused:
        payments.refund("order_x", 600)
    assert refused.value.refundable == 500
    rest = payments.refund("order_x")
    assert (rest.amount, rest.reference, rest.status) == (500, "full", "succeeded")
    assert payments.refund("order_x") == rest  # the same full refund, not a second one
    refunds = list(stripe_client.v1.refunds.list({"limit": 100}).auto_paging_iter())
    assert sorted(r.amount for r in refunds) == [200, 300, 500]


def test_a_refund_that_failed_gives_its_amount_back_to_what_is_left(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    # pm_card_refundFail: Stripe accepts the refund, then the card network
    # returns it (refund.failed): the money was never given back.
    payments = Payments(app)
    paid = payments.start("order_rf", 1000, "usd", payment_method="pm_card_refundFail")
    first = payments.refund("order_rf", 400, reference="return-1")
    held = stripe_client.v1.refunds.retrieve(first.refund_id)
    assert held.status == "failed"
    # The same reference is still that refund, failed; nothing new is sent.
    assert payments.refund("order_rf", 400, reference="return-1") == first
    # Its 400 counts no more: the whole 1,000 is left to refund.
    second = payments.refund("order_rf", 1000, reference="return-2")
    assert second.amount == 1000
    rest = payments.refund("order_rf")  # nothing succeeded: all of it, again
    assert rest.amount == 1000
    # Three refunds sent, every one returned by the card network.
    refunds = list(
        stripe_client.v1.refunds.list({"payment_intent": paid.payment_intent_id}).auto_paging_iter()
    )
    assert sorted(r.amount for r in refunds) == [400, 1000, 1000]
    assert {r.status for r in refunds} == {"failed"}


def test_manual_capture_partial_then_refund_what_was_captured(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    payments = Payments(app)
    held = payments.start("order_m", 5000, "usd", capture="manual", payment_method="pm_card_visa")
    assert isinstance(held, RequiresCapture) and held.amount_capturable == 5000
    captured = payments.capture("order_m", 3000)
    assert isinstance(captured, Succeeded) and captured.amount_received == 3000
    assert payments.capture("order_m", 3000) == captured  # once, whatever the retries
    with pytest.raises(NotRefundable) as refused:
        payments.refund("order_m", 3500)
    assert refused.value.refundable == 3000
    assert payments.refund("order_m").amount == 3000


def test_cancel_releases_an_authorisation_and_nothing_is_refundable(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    payments = Payments(app)
    payments.start("order_c", 5000, "usd", capture="manual", payment_method="pm_card_visa")
    canceled = payments.cancel("order_c", reason="requested_by_customer")
    assert isinstance(canceled, Canceled)
    assert canceled.cancellation_reason == "requested_by_customer"
    assert isinstance(payments.status("order_c"), Canceled)
    with pytest.raises(NotRefundable, match="has not been paid"):
        payments.refund("order_c")
    with pytest.raises(StripeInvalidRequestError):
        payments.capture("order_c")
    with pytest.raises(PaymentNotFound, match="order_nope"):
        payments.cancel("order_nope")


def test_a_bank_debit_is_processing_and_fulfils_when_it_settles(env: StripelineEnv) -> None:
    payments = Payments(env.app)
    fulfilments = fulfilled_by(payments)
    outcome = payments.start(
        "order_b",
        7000,
        "usd",
        payment_method="pm_usBankAccount_success",
        payment_method_types=["us_bank_account"],
    )
    assert isinstance(outcome, Processing)
    env.settle()
    assert fulfilments == [] and isinstance(payments.status("order_b"), Processing)
    env.control("POST", f"/_sandbox/payment_intents/{outcome.payment_intent_id}/settle")
    env.settle()
    assert [(f.order_id, f.amount) for f in fulfilments] == [("order_b", 7000)]
    assert isinstance(payments.status("order_b"), Succeeded)


def test_a_paid_order_started_again_with_another_card_charges_nothing(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    payments = Payments(app)
    paid = payments.start("order_p", 900, "usd", payment_method="pm_card_visa")
    again = payments.start("order_p", 900, "usd", payment_method="pm_card_mastercard")
    assert isinstance(again, Succeeded) and again.payment_intent_id == paid.payment_intent_id
    assert len(charges(stripe_client)) == 1


def test_the_async_twins(app: Stripeline, stripe_client: stripe.StripeClient) -> None:
    payments = Payments(app)

    async def flow() -> tuple[object, ...]:
        held = await payments.start_async(
            "order_a", 2500, "usd", capture="manual", payment_method="pm_card_visa"
        )
        captured = await payments.capture_async("order_a", 2000)
        refunded = await payments.refund_async("order_a", 500, reference="r1")
        status = await payments.status_async("order_a")
        other = await payments.start_async("order_a2", 1000, "usd")
        confirmed = await payments.confirm_async("order_a2", payment_method="pm_card_visa")
        await payments.start_async("order_a3", 1000, "usd")
        canceled = await payments.cancel_async("order_a3")
        return held, captured, refunded, status, other, confirmed, canceled

    held, captured, refunded, status, other, confirmed, canceled = asyncio.run(flow())
    assert isinstance(held, RequiresCapture) and isinstance(captured, Succeeded)
    assert isinstance(refunded, Refunded) and refunded.amount == 500
    assert isinstance(status, Succeeded) and status.amount_received == 2000
    assert isinstance(other, RequiresPaymentMethod) and isinstance(confirmed, Succeeded)
    assert isinstance(canceled, Canceled)


def test_a_live_app_given_a_test_payment_is_refused_before_any_call(
    app: Stripeline, stripe_sandbox: Sandbox, stripe_key: str, database_url: str
) -> None:
    paid = Payments(app).start("order_l", 1000, "usd", payment_method="pm_card_visa")
    live = Stripeline(
        Settings(
            stripe_secret_key=SecretStr("sk_live_0123456789abcdef"),
            stripe_webhook_secret=SecretStr("whsec_live_0001"),
            database_url=database_url,
        )
    )
    before = stripe_sandbox.request_counts(stripe_key)
    try:
        with pytest.raises(ModeMismatch, match=f"{paid.payment_intent_id} is a test-mode object"):
            Payments(live).refund(paid.payment_intent_id)
        with pytest.raises(ModeMismatch):
            Payments(live).status(paid.payment_intent_id)
    finally:
        live.dispose()
    assert stripe_sandbox.request_counts(stripe_key) == before


REFUNDER = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pydantic import SecretStr
from stripeline.app import Stripeline
from stripeline.errors import NotRefundable
from stripeline.flows.payments import Payments
from stripeline.settings import Settings

key, base, url, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
app = Stripeline(Settings(stripe_secret_key=SecretStr(key), stripe_api_base=base,
                          database_url=url, max_network_retries=0))
payments = Payments(app)

def refund(_):
    try:
        return payments.refund("order_2p", 10).amount
    except NotRefundable as exc:
        return -exc.refundable - 1

time.sleep(max(0.0, start_at - time.time()))
with ThreadPoolExecutor(max_workers=10) as pool:
    print(json.dumps(list(pool.map(refund, range(10)))))
app.dispose()
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_refunds_from_two_processes_never_exceed_what_was_received(
    stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient, postgres_url: str
) -> None:
    app = Stripeline(settings_for(stripe_sandbox, stripe_key, postgres_url))
    try:
        Payments(app).start("order_2p", 100, "usd", payment_method="pm_card_visa")
    finally:
        app.dispose()
    start_at = str(time.time() + 3)
    args = [sys.executable, "-c", REFUNDER, stripe_key, stripe_sandbox.url, postgres_url, start_at]
    processes = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    answers: list[int] = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        answers.extend(json.loads(out))
    made = [a for a in answers if a > 0]
    assert sum(made) == 100 and len(made) == 10
    assert sorted(a for a in answers if a < 0) == [-1] * 10  # refused: 0 refundable
    refunds = list(stripe_client.v1.refunds.list({"limit": 100}).auto_paging_iter())
    assert sum(r.amount for r in refunds) == 100


DOC = Path(__file__).resolve().parent.parent / "docs" / "payments.md"


def doc_block(name: str) -> str:
    """The python block of docs/payments.md whose first line is ``# <name>``."""
    match = re.search(rf"```python\n(# {re.escape(name)}\n.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"docs/payments.md has no block {name}"
    return match.group(1)


@pytest.mark.slow
@pytest.mark.skipif(
    not hasattr(Stripeline, "payments"), reason="app.payments is not wired into Stripeline yet"
)
def test_the_documented_shop_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(shop=doc_block("shop.py"), test_shop=doc_block("test_shop.py"))
    pytester.makeini(
        """
        [pytest]
        stripeline_app = shop:app
        filterwarnings = error
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=240)
    result.assert_outcomes(passed=1)
