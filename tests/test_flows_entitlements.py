"""Entitlements from the mirror: the grace policy's table of subscription
states, the app-user path, the mapping and Stripe's entitlement summaries,
real subscriptions driven through the sandbox, and convergence: any order and
any duplicates of the same events give the same answers.

Every state reaches the mirror as signed events through the app's webhook
route and the worker (``deliver`` + ``drain``), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from stripeline.app import Stripeline
from stripeline.flows.entitlements import OPEN_ENDED, Entitlements, GracePolicy, grant_end
from stripeline.mirror import Mirror
from stripeline.mirror._store import summary_id
from stripeline.settings import Settings
from stripeline.testing import StripelineEnv, deliver, drain, make_event

SECRET = "whsec_entitlements_test_0001"
DAY = 86400
T0 = 1_900_000_000  # a fixed "now" for the table: every time below is relative to it


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    settings = Settings(
        database_url=database_url,
        stripe_webhook_secret=SecretStr(SECRET),
        mirror_coalesce_seconds=0,
    )
    application = Stripeline(settings)
    yield application
    application.dispose()


def send(app: Stripeline, events: list[dict[str, Any]], **options: Any) -> None:
    """Signed, through the webhook route, then processed by the worker."""
    answers = deliver(app, events, **options)
    assert all(200 <= a.status < 300 for a in answers), answers
    drain(app)


# -- Stripe-shaped objects ----------------------------------------------------------------


def subscription(
    sub_id: str,
    customer: str,
    status: str,
    *,
    price: str = "price_pro",
    product: str = "prod_pro",
    start: int = T0 - 10 * DAY,
    end: int = T0 + 20 * DAY,
    latest_invoice: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "created": start,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_start": None,
        "trial_end": None,
        "pause_collection": None,
        "latest_invoice": latest_invoice,
        "items": {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "id": f"si_{sub_id}",
                    "object": "subscription_item",
                    "subscription": sub_id,
                    "current_period_start": start,
                    "current_period_end": end,
                    "quantity": 1,
                    "price": {"id": price, "object": "price", "product": product},
                }
            ],
        },
    }
    obj.update(fields)
    return obj


def invoice(
    invoice_id: str,
    customer: str,
    sub_id: str,
    status: str,
    *,
    created: int,
    next_payment_attempt: int | None = None,
) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "subscription": sub_id,
        "status": status,
        "created": created,
        "next_payment_attempt": next_payment_attempt,
        "lines": {"object": "list", "data": [], "has_more": False},
    }


def summary(customer: str, *lookup_keys: str) -> dict[str, Any]:
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer,
        "livemode": False,
        "entitlements": {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "id": f"ent_{key}",
                    "object": "entitlements.active_entitlement",
                    "feature": f"feat_{key}",
                    "livemode": False,
                    "lookup_key": key,
                }
                for key in lookup_keys
            ],
        },
    }


def sub_event(obj: dict[str, Any], created: int, kind: str = "updated") -> dict[str, Any]:
    return make_event(f"customer.subscription.{kind}", obj, created=created)


def summary_event(customer: str, created: int, *lookup_keys: str) -> dict[str, Any]:
    return make_event(
        "entitlements.active_entitlement_summary.updated",
        summary(customer, *lookup_keys),
        created=created,
    )


def fresh(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:14]}"


# -- the grace policy, as a table -----------------------------------------------------


@dataclass
class Case:
    name: str
    status: str
    #: Seconds after T0 → expected has_access.
    expect: dict[int, bool]
    #: Expected access_until at T0 (seconds after T0), None: no access.
    until: int | None
    fields: dict[str, Any] = field(default_factory=dict)
    #: (status, seconds after T0 it was created, next_payment_attempt after T0 or None)
    latest: tuple[str, int, int | None] | None = None


CASES = [
    Case("trialing", "trialing", {0: True, 8 * DAY: False}, 7 * DAY + DAY,
         {"trial_end": T0 + 7 * DAY, "trial_start": T0 - DAY}),
    Case("trial ending: still trialing just past trial_end", "trialing",
         {7 * DAY + 3600: True, 7 * DAY + DAY: False}, 8 * DAY,
         {"trial_end": T0 + 7 * DAY}),
    Case("active", "active", {0: True, 20 * DAY + 3600: True, 22 * DAY: False}, 21 * DAY),
    Case("past_due within grace", "past_due", {0: True, 10 * DAY: True, 11 * DAY: False},
         11 * DAY, latest=("open", -3 * DAY, 2 * DAY)),
    Case("past_due past grace", "past_due", {0: False}, None,
         latest=("open", -15 * DAY, 2 * DAY)),
    Case("past_due, retries exhausted", "past_due", {0: False}, None,
         latest=("open", -3 * DAY, None)),
    Case("unpaid", "unpaid", {0: False}, None, latest=("open", -3 * DAY, None)),
    Case("canceled", "canceled", {0: False}, None, {"ended_at": T0 - DAY, "canceled_at": T0 - DAY}),
    Case("incomplete", "incomplete", {0: False}, None, latest=("open", -3600, None)),
    Case("incomplete_expired", "incomplete_expired", {0: False}, None),
    Case("paused", "paused", {0: False}, None),
    Case("collection paused", "active", {0: False}, None,
         {"pause_collection": {"behavior": "void", "resumes_at": None}}),
    Case("cancel_at_period_end", "active", {0: True, 20 * DAY - 1: True, 20 * DAY: False},
         20 * DAY, {"cancel_at_period_end": True, "cancel_at": T0 + 20 * DAY}),
    Case("cancel_at_period_end (older API: no cancel_at)", "active", {20 * DAY: False}, 20 * DAY,
         {"cancel_at_period_end": True}),
]  # fmt: skip


def deliver_case(app: Stripeline, case: Case, customer: str) -> str:
    sub_id = fresh("sub")
    events = []
    latest = None
    if case.latest is not None:
        latest = fresh("in")
        status, created, next_attempt = case.latest
        nxt = None if next_attempt is None else T0 + next_attempt
        obj = invoice(
            latest, customer, sub_id, status, created=T0 + created, next_payment_attempt=nxt
        )
        events.append(make_event("invoice.updated", obj, created=T0 + created))
    obj = subscription(sub_id, customer, case.status, latest_invoice=latest, **case.fields)
    events.append(sub_event(obj, T0 - 60))
    send(app, events)
    return sub_id


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_grace_policy_table(app: Stripeline, case: Case) -> None:
    customer = fresh("cus")
    deliver_case(app, case, customer)
    entitlements = Entitlements(app, {"prod_pro": {"pro"}})
    for offset, expected in case.expect.items():
        assert entitlements.has_access(customer, "pro", at=at(offset)) is expected, offset
        assert ("pro" in entitlements.features(customer, at=at(offset))) is expected
    want = None if case.until is None else at(case.until)
    assert entitlements.access_until(customer, "pro", at=at(0)) == want
    # A feature nothing grants, and a customer with nothing, never have access.
    assert not entitlements.has_access(customer, "other", at=at(0))
    assert not entitlements.has_access(fresh("cus"), "pro", at=at(0))


def test_a_stricter_policy(app: Stripeline) -> None:
    customer = fresh("cus")
    deliver_case(app, CASES[3], customer)  # past_due within the default grace
    strict = Entitlements(app, {"prod_pro": {"pro"}}, grace=GracePolicy(past_due=False))
    short = Entitlements(
        app, {"prod_pro": {"pro"}}, grace=GracePolicy(past_due_max=timedelta(days=2))
    )
    lenient = Entitlements(app, {"prod_pro": {"pro"}})
    assert lenient.has_access(customer, "pro", at=at(0))
    assert not strict.has_access(customer, "pro", at=at(0))
    assert not short.has_access(customer, "pro", at=at(0))  # created 3 days ago
    no_renewal = Entitlements(app, {"prod_pro": {"pro"}}, grace=GracePolicy(renewal=timedelta(0)))
    active = fresh("cus")
    deliver_case(app, CASES[2], active)
    assert no_renewal.access_until(active, "pro", at=at(0)) == at(20 * DAY)
    with pytest.raises(ValueError, match="negative"):
        GracePolicy(renewal=timedelta(seconds=-1))


def test_several_subscriptions_one_grants(app: Stripeline) -> None:
    customer = fresh("cus")
    canceled = subscription(fresh("sub"), customer, "canceled", price="price_pro_old")
    basic = subscription(
        fresh("sub"), customer, "active", price="price_basic", product="prod_basic"
    )
    pro = subscription(fresh("sub"), customer, "active", end=T0 + 5 * DAY)
    pro_yearly = subscription(
        fresh("sub"), customer, "active", price="price_pro_year", end=T0 + 300 * DAY,
        cancel_at_period_end=True, cancel_at=T0 + 300 * DAY,
    )  # fmt: skip
    send(app, [sub_event(s, T0 - 60) for s in (canceled, basic, pro, pro_yearly)])
    entitlements = Entitlements(app, {"prod_pro": {"pro"}, "price_basic": {"basic"}})
    entitlements.register("price_pro_year", "api")
    assert entitlements.features(customer, at=at(0)) == {"pro", "basic", "api"}
    # The latest end over the subscriptions that grant it.
    assert entitlements.access_until(customer, "pro", at=at(0)) == at(300 * DAY)
    assert entitlements.access_until(customer, "basic", at=at(0)) == at(21 * DAY)
    assert entitlements.features(customer, at=at(30 * DAY)) == {"pro", "api"}
    assert entitlements.mapping["price_pro_year"] == frozenset({"api"})


def test_an_app_user_through_the_customer_link(app: Stripeline) -> None:
    customer = fresh("cus")
    deliver_case(app, CASES[2], customer)  # active
    entitlements = Entitlements(app, {"prod_pro": {"pro"}})
    user = f"user-{uuid.uuid4().hex[:8]}"
    assert not entitlements.has_access(user, "pro", at=at(0))  # not linked yet
    Mirror(app.engine).link_customer(user, customer)
    assert entitlements.has_access(user, "pro", at=at(0))
    assert entitlements.access_until(user, "pro", at=at(0)) == at(21 * DAY)
    assert entitlements.features(user, at=at(0)) == {"pro"}
    assert not entitlements.has_access("someone-else", "pro", at=at(0))
    # Another account's link and subscriptions are not read.
    assert not entitlements.has_access(user, "pro", at=at(0), account="acct_other")


def test_the_async_twins(app: Stripeline) -> None:
    customer = fresh("cus")
    deliver_case(app, CASES[2], customer)
    entitlements = Entitlements(app, {"prod_pro": {"pro"}})

    async def ask() -> tuple[bool, datetime | None, set[str]]:
        return (
            await entitlements.has_access_async(customer, "pro", at=at(0)),
            await entitlements.access_until_async(customer, "pro", at=at(0)),
            await entitlements.features_async(customer, at=at(0)),
        )

    assert asyncio.run(ask()) == (True, at(21 * DAY), {"pro"})


def test_bad_arguments_are_refused(app: Stripeline) -> None:
    entitlements = Entitlements(app)
    with pytest.raises(ValueError, match="naive"):
        entitlements.has_access("cus_x", "pro", at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="non-empty"):
        entitlements.has_access("", "pro")
    with pytest.raises(ValueError, match="non-empty"):
        entitlements.has_access("cus_x", "")
    with pytest.raises(ValueError, match="non-empty"):
        entitlements.register("prod_x")
    with pytest.raises(ValueError, match="source"):
        Entitlements(app, source="everything")  # type: ignore[arg-type]


def test_grant_end_is_pure_and_matches_the_table() -> None:
    policy = GracePolicy()
    state = {"status": "active", "current_period_end": at(10), "pause": None}
    assert grant_end(state, policy) == at(10) + policy.renewal
    assert grant_end({**state, "current_period_end": None}, policy) == OPEN_ENDED
    assert grant_end({**state, "pause": {"behavior": "void"}}, policy) is None
    assert grant_end({"status": "past_due"}, policy) is None  # no anchor: no grant


# -- Stripe's entitlement summaries ------------------------------------------------------


def test_summaries_are_mirrored_and_read(app: Stripeline) -> None:
    customer = fresh("cus")
    stripe = Entitlements(app, source="stripe")
    assert not stripe.has_access(customer, "pro")
    send(app, [summary_event(customer, T0, "pro", "api")])
    stored = Mirror(app.engine).get(summary_id(customer))
    assert stored is not None and stored["customer"] == customer
    assert stripe.has_access(customer, "pro")
    assert stripe.access_until(customer, "api") == OPEN_ENDED
    assert stripe.features(customer) == {"pro", "api", "feat_pro", "feat_api"}
    # A newer summary replaces it; an older one delivered late does not.
    send(app, [summary_event(customer, T0 + 10, "api"), summary_event(customer, T0 + 5, "pro")])
    assert not stripe.has_access(customer, "pro")
    assert stripe.has_access(customer, "api")
    # The app-user path reads the same summary.
    Mirror(app.engine).link_customer("user-summary", customer)
    assert stripe.features("user-summary") == {"api", "feat_api"}
    # auto: the mapping answers for the features it names, Stripe for the rest.
    auto = Entitlements(app, {"prod_pro": {"pro"}})
    assert auto.has_access(customer, "api")
    assert not auto.has_access(customer, "pro")  # the mapping's: no subscription
    mapping_only = Entitlements(app, {"prod_pro": {"pro"}}, source="mapping")
    assert not mapping_only.has_access(customer, "api")
    assert auto.features(customer) == {"api", "feat_api"}


#: What Stripe's summary lists for a customer whose one subscription is in that
#: state: its product's features while it is live, none once it is not.
SUMMARY_OF = {"trialing", "active", "past_due"}


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.name in {"trialing", "active", "past_due within grace", "unpaid",
                                    "canceled", "incomplete", "incomplete_expired"}],
    ids=lambda c: c.name,
)  # fmt: skip
def test_the_mapping_and_the_summary_give_the_same_answers(app: Stripeline, case: Case) -> None:
    customer = fresh("cus")
    deliver_case(app, case, customer)
    keys = ("pro",) if case.status in SUMMARY_OF else ()
    send(app, [summary_event(customer, T0 - 30, *keys)])
    mapping = Entitlements(app, {"prod_pro": {"pro"}}, source="mapping")
    stripe = Entitlements(app, source="stripe")
    assert mapping.has_access(customer, "pro", at=at(0)) == case.expect[0]
    assert stripe.has_access(customer, "pro", at=at(0)) == case.expect[0]
    assert (
        mapping.features(customer, at=at(0))
        == ({"pro"} if case.expect[0] else set())
        == stripe.features(customer, at=at(0)) - {"feat_pro"}
    )


# -- convergence: any order, any duplicates -----------------------------------------------


def history(tag: str, ending: str) -> tuple[str, list[dict[str, Any]]]:
    """A realistic event sequence of one customer, in Stripe's order: checkout,
    first invoice paid, a renewal whose payment fails, then ``ending``."""
    customer, sub_id, first, renewal = f"cus_{tag}", f"sub_{tag}", f"in_{tag}a", f"in_{tag}b"
    t0, t1 = T0 - 40 * DAY, T0 - 9 * DAY
    period1 = {"start": t0, "end": t1}
    period2 = {"start": t1, "end": t1 + 30 * DAY}
    session = {
        "id": f"cs_{tag}",
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "customer": customer,
        "subscription": sub_id,
        "client_reference_id": f"user-{tag}",
    }

    def sub(status: str, period: dict[str, int], latest: str, **fields: Any) -> dict[str, Any]:
        return subscription(
            sub_id,
            customer,
            status,
            latest_invoice=latest,
            start=period["start"],
            end=period["end"],
            **fields,
        )

    def inv(invoice_id: str, status: str, created: int, nxt: int | None = None) -> dict[str, Any]:
        return invoice(
            invoice_id, customer, sub_id, status, created=created, next_payment_attempt=nxt
        )

    events = [
        make_event("customer.subscription.created", sub("incomplete", period1, first), created=t0),
        make_event("invoice.created", inv(first, "draft", t0), created=t0),
        make_event("invoice.finalized", inv(first, "open", t0), created=t0),
        make_event("invoice.paid", inv(first, "paid", t0), created=t0 + 1),
        make_event("customer.subscription.updated", sub("active", period1, first), created=t0 + 1),
        make_event("checkout.session.completed", session, created=t0 + 2),
        summary_event(customer, t0 + 2, "pro"),
        make_event("invoice.created", inv(renewal, "draft", t1), created=t1),
        make_event("customer.subscription.updated", sub("active", period2, renewal), created=t1),
        make_event(
            "invoice.payment_failed", inv(renewal, "open", t1, t1 + 3 * DAY), created=t1 + 3600
        ),
        make_event(
            "customer.subscription.updated", sub("past_due", period2, renewal), created=t1 + 3600
        ),
    ]
    t2 = t1 + 5 * DAY
    if ending == "recovered":
        events += [
            make_event("invoice.paid", inv(renewal, "paid", t1), created=t2),
            make_event(
                "customer.subscription.updated", sub("active", period2, renewal), created=t2
            ),
        ]
    elif ending == "exhausted":
        events += [
            make_event("invoice.payment_failed", inv(renewal, "open", t1), created=t2),
            make_event(
                "customer.subscription.deleted",
                sub("canceled", period2, renewal, ended_at=t2, canceled_at=t2),
                created=t2,
            ),
            summary_event(customer, t2 + 1),
        ]
    elif ending == "cancel_at_period_end":
        events += [
            make_event("invoice.paid", inv(renewal, "paid", t1), created=t2),
            make_event(
                "customer.subscription.updated",
                sub("active", period2, renewal, cancel_at_period_end=True),
                created=t2 + 60,
            ),
        ]
    return customer, events


ENDINGS = ["recovered", "exhausted", "cancel_at_period_end", "none"]
#: When the answers are compared: along the whole history and after it.
INSTANTS = [-39 * DAY, -9 * DAY, -8 * DAY, -4 * DAY, 0, 6 * DAY, 21 * DAY, 30 * DAY]


def answers(app: Stripeline, customer: str) -> list[tuple[bool, datetime | None, bool]]:
    """(mapping's has_access, its access_until, the summary's has_access) at each instant."""
    mapping = Entitlements(app, {"prod_pro": {"pro"}})
    stripe = Entitlements(app, source="stripe")
    return [
        (
            mapping.has_access(customer, "pro", at=at(t)),
            mapping.access_until(customer, "pro", at=at(t)),
            stripe.has_access(customer, "pro", at=at(t)),
        )
        for t in INSTANTS
    ]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, int, list[int], list[int]]:
    ending = draw(st.sampled_from(ENDINGS))
    total = len(history("x", ending)[1])
    length = draw(st.integers(1, total))
    order = list(draw(st.permutations(list(range(length)))))
    for index in draw(st.lists(st.integers(0, length - 1), max_size=length)):
        order.insert(draw(st.integers(0, len(order))), index)  # duplicates, anywhere
    cuts = sorted(set(draw(st.lists(st.integers(1, len(order)), max_size=3))))
    return ending, length, order, cuts


def run_history(
    app: Stripeline, ending: str, length: int, order: list[int], cuts: list[int]
) -> Any:
    customer, events = history(uuid.uuid4().hex[:10], ending)
    events = events[:length]
    start = 0
    for cut in [*cuts, len(order)]:
        batch = [events[i] for i in order[start:cut]]
        if batch:
            send(app, batch)
        start = cut
    return answers(app, customer)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=deliveries())
def test_any_order_and_duplicates_give_the_same_answers(app: Stripeline, case: Any) -> None:
    ending, length, order, cuts = case
    expected = run_history(app, ending, length, list(range(length)), [])
    assert run_history(app, ending, length, order, cuts) == expected


def test_the_full_histories_answer_as_stripe_would(app: Stripeline) -> None:
    """The in-order answers themselves, so that convergence is to the right thing."""
    days = dict(zip(INSTANTS, range(len(INSTANTS)), strict=True))
    for ending, expected in {
        # The final state decides at every instant: active until its period
        # ends (+1 day), canceled never, past_due until 14 days after the
        # renewal invoice, cancel_at_period_end until the period's end.
        "recovered": [True, True, True, True, True, True, True, False],
        "exhausted": [False] * 8,
        "cancel_at_period_end": [True, True, True, True, True, True, False, False],
        "none": [True, True, True, True, True, False, False, False],
    }.items():
        customer, events = history(uuid.uuid4().hex[:10], ending)
        send(app, events)
        got = answers(app, customer)
        assert [a[0] for a in got] == expected, ending
        if ending == "cancel_at_period_end":
            assert got[days[0]][1] == at(21 * DAY)  # the period's end, exactly


# -- real subscriptions through the sandbox ------------------------------------------------


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


def advance(env: StripelineEnv, seconds: int) -> None:
    """Move the sandbox's clock; its due billing work runs on the next billing call."""
    env.advance_clock(seconds)
    env.client.v1.subscriptions.list({"limit": 1})
    env.settle()


def sandbox_now(env: StripelineEnv) -> datetime:
    return datetime.fromtimestamp(env.sandbox.clock.now(), UTC)


def catalog(env: StripelineEnv) -> tuple[str, str]:
    product = env.client.v1.products.create({"name": "Pro"})
    price = env.client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1500,
            "recurring": {"interval": "month"},
        }
    )
    return product.id, price.id


def paying_customer(env: StripelineEnv) -> str:
    customer = env.client.v1.customers.create(
        {
            "email": "entitled@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    return str(customer.id)


def test_a_trial_renewals_failures_and_exhausted_retries(env: StripelineEnv) -> None:
    """trialing → active → past_due while Stripe retries → unpaid: the answer
    after every step, from the mirror fed by the sandbox's webhooks."""
    env.sandbox.set_billing(retry_days=[2, 3], after_retries="unpaid", key=env.key)
    product, price = catalog(env)
    customer = paying_customer(env)
    entitlements = Entitlements(env.app, {product: {"pro"}})
    user = f"user-{uuid.uuid4().hex[:8]}"
    Mirror(env.app.engine).link_customer(user, customer)
    client = env.client

    def step(expected_status: str, expected: bool) -> None:
        env.settle()
        subs = Mirror(env.app.engine).subscriptions(customer)
        assert [s.status for s in subs] == [expected_status]
        now = sandbox_now(env)
        assert entitlements.has_access(customer, "pro", at=now) is expected, expected_status
        assert entitlements.has_access(user, "pro", at=now) is expected

    sub = client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price}], "trial_period_days": 7}
    )
    step("trialing", True)
    trial_until = entitlements.access_until(customer, "pro", at=sandbox_now(env))
    assert trial_until == datetime.fromtimestamp(int(sub.trial_end or 0), UTC) + timedelta(days=1)
    advance(env, 8 * DAY)
    step("active", True)
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer})
    client.v1.customers.update(
        customer, {"invoice_settings": {"default_payment_method": failing.id}}
    )
    # To just past the renewal, whatever the month's length (the sandbox's
    # clock is shared by the tests of a session: the date varies).
    renewal = Mirror(env.app.engine).subscription(sub.id)
    assert renewal is not None and renewal.current_period_end is not None
    advance(env, int((renewal.current_period_end - sandbox_now(env)).total_seconds()) + 3600)
    step("past_due", True)  # the renewal's payment failed
    advance(env, 2 * DAY + 3600)  # the first retry fails too: one more planned
    step("past_due", True)
    advance(env, 3 * DAY + 3600)  # the last retry fails: unpaid
    step("unpaid", False)
    assert entitlements.features(user, at=sandbox_now(env)) == set()


def test_cancel_at_period_end_pause_and_incomplete(env: StripelineEnv) -> None:
    _product, price = catalog(env)
    entitlements = Entitlements(env.app, {price: {"pro"}})
    client = env.client

    ending = paying_customer(env)
    sub = client.v1.subscriptions.create({"customer": ending, "items": [{"price": price}]})
    client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    paused = paying_customer(env)
    sub_paused = client.v1.subscriptions.create({"customer": paused, "items": [{"price": price}]})
    client.v1.subscriptions.update(sub_paused.id, {"pause_collection": {"behavior": "void"}})
    waiting = env.client.v1.customers.create({"email": "incomplete@example.com"}).id
    incomplete = client.v1.subscriptions.create(
        {
            "customer": waiting,
            "items": [{"price": price}],
            "payment_behavior": "default_incomplete",
        }
    )
    assert incomplete.status == "incomplete"
    env.settle()
    now = sandbox_now(env)
    period_end = Mirror(env.app.engine).subscription(sub.id)
    assert period_end is not None and period_end.current_period_end is not None
    assert entitlements.has_access(ending, "pro", at=now)
    assert entitlements.access_until(ending, "pro", at=now) == period_end.current_period_end
    assert not entitlements.has_access(paused, "pro", at=now)
    assert not entitlements.has_access(waiting, "pro", at=now)

    client.v1.subscriptions.update(sub_paused.id, {"pause_collection": ""})
    advance(env, DAY)  # the incomplete subscription expires after 23 hours
    now = sandbox_now(env)
    assert entitlements.has_access(paused, "pro", at=now)
    assert Mirror(env.app.engine).subscriptions(waiting)[0].status == "incomplete_expired"
    assert not entitlements.has_access(waiting, "pro", at=now)

    advance(env, 31 * DAY)  # past the period's end: canceled
    ended = Mirror(env.app.engine).subscription(sub.id)  # deleted: its last state
    assert ended is not None and ended.status == "canceled"
    assert not entitlements.has_access(ending, "pro", at=sandbox_now(env))


def test_the_docs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "entitlements.md").read_text()
    example = page.split("## A runnable example", 1)[1].split("```python\n", 1)[1].split("```")[0]
    exec(compile(example, "docs/entitlements.md", "exec"), {"__name__": "docs_example"})  # noqa: S102
    out = capsys.readouterr().out
    assert "user-42 has pro until" in out and "user-42 has api: False" in out


def test_a_dead_pooled_connection_is_read_again(postgres_url: str) -> None:
    """The server ended the pooled connection (a restart, a failover): the
    next answer is read on a new connection, as every mirror read is."""
    from sqlalchemy import text

    from stripeline.db import make_engine

    application = Stripeline(
        Settings(database_url=postgres_url, stripe_webhook_secret=SecretStr(SECRET))
    )
    try:
        customer = fresh("cus")
        deliver_case(application, CASES[2], customer)  # active
        entitlements = Entitlements(application, {"prod_pro": {"pro"}})
        assert entitlements.has_access(customer, "pro", at=at(0))
        with application.engine.connect() as conn:  # the pool's one connection
            pooled = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        other = make_engine(postgres_url)
        try:
            with other.connect() as conn:
                ended = conn.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": pooled}
                ).scalar_one()
        finally:
            other.dispose()
        assert ended is True
        assert entitlements.has_access(customer, "pro", at=at(0))
    finally:
        application.dispose()


def test_a_summary_is_applied_under_the_refetch_policy_and_a_tie_keeps_the_held_one(
    database_url: str,
) -> None:
    """No API read exists for a summary: it is applied whatever the policy,
    and two different ones in one second keep the first written (no re-fetch
    is queued for something that cannot be read)."""
    from sqlalchemy import func, select

    from stripeline.db.engine import connect
    from stripeline.mirror.refetch import refetches

    settings = Settings(
        database_url=database_url,
        stripe_webhook_secret=SecretStr(SECRET),
        mirror_policy="refetch",
        mirror_coalesce_seconds=0,
    )
    application = Stripeline(settings)
    try:
        customer = fresh("cus")
        send(application, [summary_event(customer, T0, "pro")])
        stripe = Entitlements(application, source="stripe")
        assert stripe.features(customer) == {"pro", "feat_pro"}
        send(application, [summary_event(customer, T0, "api")])  # same second, other data
        assert stripe.features(customer) == {"pro", "feat_pro"}
        with connect(application.engine, readonly=True) as conn:
            queued = conn.execute(select(func.count()).select_from(refetches)).scalar_one()
        assert queued == 0
    finally:
        application.dispose()
