"""Issue 11's acceptance scenarios on a Stripe test clock, end to end through
the sandbox, on SQLite and PostgreSQL:

* trial → first invoice → two renewals → a failed renewal → the grace window
  → recovery by a new card;
* a failed renewal → exhausted retries → canceled.

After every step: Stripe's status, the mirror's, ``app.entitlements.has_access``
(a table in each test) and how many times each dunning hook ran (exactly once
per occasion, with its fields). Then every event of the scenario, duplicated
and shuffled, is delivered to a second app on a fresh database: it answers
``has_access`` the same at every step's instant and runs each hook as often.
"""

from __future__ import annotations

import random
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from stripeline.app import Stripeline
from stripeline.db.engine import normalize_url
from stripeline.declines import advise
from stripeline.flows.subscriptions import (
    PaymentFailed,
    SubscriptionEnded,
    Subscriptions,
    TrialWillEnd,
    UpcomingRenewal,
)
from stripeline.mirror import Mirror
from stripeline.settings import Settings
from stripeline.testing import StripelineEnv
from stripeline_sandbox import Sandbox

DAY = 86400
HOUR = 3600
#: 2026-01-01 00:00:00 UTC.
START = 1_767_225_600
HOOKS = ("trial", "failed", "action", "upcoming", "ended")


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
def replica_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second fresh, migrated database on the same backend as ``database_url``."""
    if database_url.startswith("sqlite"):
        path = tmp_path / "replica.db"
        shutil.copyfile(make_url(database_url).database or "", path)
        yield f"sqlite:///{path}"
        return
    # A copy of this test's own (still empty of events: nothing ran yet) database.
    url = make_url(normalize_url(database_url))
    name = f"stripeline_r_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def scene(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    replica_url: str,
) -> Iterator[Scene]:
    found = Scene(stripe_sandbox, stripe_key, stripe_client, database_url, replica_url)
    yield found
    found.close()


def hooks_of(subscriptions: Subscriptions) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {name: [] for name in HOOKS}
    subscriptions.on_trial_will_end(seen["trial"].append)
    subscriptions.on_payment_failed(seen["failed"].append)
    subscriptions.on_payment_action_required(seen["action"].append)
    subscriptions.on_upcoming_renewal(seen["upcoming"].append)
    subscriptions.on_subscription_ended(seen["ended"].append)
    return seen


def counts(seen: dict[str, list[Any]]) -> dict[str, int]:
    return {name: len(found) for name, found in seen.items()}


class Scene:
    """A test clock started now, a paying customer on it, an app receiving the
    account's webhooks with a product mapped to the feature ``pro``, and the
    table of what was seen after each step."""

    def __init__(
        self,
        sandbox: Sandbox,
        key: str,
        client: stripe.StripeClient,
        database_url: str,
        replica_url: str,
    ) -> None:
        self.sandbox, self.key, self.client = sandbox, key, client
        self.replica_url = replica_url
        self.app = Stripeline(settings_for(sandbox, key, database_url))
        self.env = StripelineEnv(sandbox, key, client, self.app)
        self.subscriptions = self.app.subscriptions
        self.seen = hooks_of(self.subscriptions)
        # Renewals are read from Stripe (the months' lengths vary).
        self.clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START}).id
        self.customer = client.v1.customers.create(
            {
                "email": "grace@example.com",
                "name": "Grace",
                "test_clock": self.clock,
                "metadata": {"stripeline_user_id": "user_grace"},
                "payment_method": "pm_card_visa",
                "invoice_settings": {"default_payment_method": "pm_card_visa"},
            }
        ).id
        price = client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 2000,
                "recurring": {"interval": "month"},
                "product_data": {"name": "Pro"},
            }
        )
        self.product, self.price = str(price.product), price.id
        self.app.entitlements.register(self.product, "pro")
        Mirror(self.app.engine).link_customer("user_grace", self.customer)
        #: (step, Stripe's status, the mirror's, has_access, the hooks' counts)
        self.rows: list[tuple[str, str, str, bool, dict[str, int]]] = []
        #: The clock's time after each step.
        self.instants: list[datetime] = []
        self.sub_id = ""

    def close(self) -> None:
        self.env.close()
        self.app.dispose()

    def now(self) -> int:
        clock = self.client.v1.test_helpers.test_clocks.retrieve(self.clock)
        return int(clock.frozen_time)

    def to(self, moment: int) -> None:
        self.env.advance_clock(to=moment, test_clock=self.clock)

    def period_end(self) -> int:
        sub = self.client.v1.subscriptions.retrieve(self.sub_id)
        return int(sub["items"].data[0].current_period_end)

    def use_card(self, card: str) -> None:
        method = self.client.v1.payment_methods.attach(card, {"customer": self.customer})
        self.client.v1.customers.update(
            self.customer, {"invoice_settings": {"default_payment_method": method.id}}
        )

    def step(self, name: str) -> None:
        self.env.settle()
        stripes = str(self.client.v1.subscriptions.retrieve(self.sub_id).status)
        held = self.env.mirror(self.sub_id)
        assert held is not None
        moment = datetime.fromtimestamp(self.now(), UTC)
        access = self.app.entitlements.has_access(self.customer, "pro", at=moment)
        # The app user (linked to the customer) gets the same answer.
        assert self.app.entitlements.has_access("user_grace", "pro", at=moment) is access
        self.rows.append((name, stripes, str(held["status"]), access, counts(self.seen)))
        self.instants.append(moment)

    def replay_shuffled_and_duplicated(self, seed: int) -> None:
        """Every event of the scenario twice, shuffled, into a second app on a
        fresh database: the same access at every step's instant, each hook as
        many times as in the first app."""
        events = [e.data for e in self.env.events()]
        assert len(events) > 20
        arranged = events * 2
        random.Random(seed).shuffle(arranged)
        replica = Stripeline(settings_for(self.sandbox, self.key, self.replica_url))
        replica.entitlements.register(self.product, "pro")
        seen = hooks_of(replica.subscriptions)
        env = StripelineEnv(self.sandbox, self.key, self.client, replica)
        try:
            answers = env.deliver(arranged)
            assert all(200 <= a.status < 300 for a in answers)
            env.settle()
            assert len(env.events()) == len(events)  # each stored once
            for moment in self.instants:
                assert replica.entitlements.has_access(
                    self.customer, "pro", at=moment
                ) is self.app.entitlements.has_access(self.customer, "pro", at=moment), moment
            assert replica.entitlements.access_until(
                self.customer, "pro", at=self.instants[-1]
            ) == self.app.entitlements.access_until(self.customer, "pro", at=self.instants[-1])
            assert counts(seen) == counts(self.seen)
            held = env.mirror(self.sub_id)
            assert held is not None and held["status"] == self.rows[-1][2]
        finally:
            env.close()
            replica.dispose()


def test_trial_two_renewals_a_failure_the_grace_window_and_recovery(scene: Scene) -> None:
    started = scene.subscriptions.start(scene.customer, scene.price, trial_days=7)
    scene.sub_id = sub = started.subscription.id
    trial_end = int(scene.client.v1.subscriptions.retrieve(sub).trial_end or 0)
    scene.step("started: trialing")
    scene.to(trial_end - 3 * DAY + HOUR)
    scene.step("trial_will_end notice")
    scene.to(trial_end + 2 * HOUR)
    scene.step("trial over: first invoice paid")
    renewals = []
    for n in (1, 2):
        renewals.append(scene.period_end())
        scene.to(renewals[-1] + 2 * HOUR)
        scene.step(f"renewal {n} paid")
    scene.use_card("pm_card_chargeCustomerFail")
    renewals.append(scene.period_end())
    scene.to(renewals[-1] + 2 * HOUR)
    scene.step("renewal 3 fails: the grace window")
    failing = scene.client.v1.invoices.retrieve(
        str(scene.client.v1.subscriptions.retrieve(sub).latest_invoice)
    )
    grace_until = scene.app.entitlements.access_until(scene.customer, "pro", at=scene.instants[-1])
    # past_due: access while Stripe retries, at most 14 days after the invoice.
    assert grace_until == datetime.fromtimestamp(failing.created, UTC) + timedelta(days=14)
    scene.to(scene.now() + 12 * HOUR)
    scene.step("half a day later: still retrying")
    scene.use_card("pm_card_visa")
    scene.to(int(failing.next_payment_attempt or 0) + HOUR)
    scene.step("a new card: the retry pays")

    one = {"trial": 1, "failed": 0, "action": 0, "upcoming": 0, "ended": 0}
    assert scene.rows == [
        ("started: trialing", "trialing", "trialing", True, {**one, "trial": 0}),
        ("trial_will_end notice", "trialing", "trialing", True, one),
        ("trial over: first invoice paid", "active", "active", True, one),
        ("renewal 1 paid", "active", "active", True, {**one, "upcoming": 1}),
        ("renewal 2 paid", "active", "active", True, {**one, "upcoming": 2}),
        ("renewal 3 fails: the grace window", "past_due", "past_due", True,
         {**one, "upcoming": 3, "failed": 1}),
        ("half a day later: still retrying", "past_due", "past_due", True,
         {**one, "upcoming": 3, "failed": 1}),
        ("a new card: the retry pays", "active", "active", True,
         {**one, "upcoming": 3, "failed": 1}),
    ]  # fmt: skip
    trial: TrialWillEnd = scene.seen["trial"][0]
    assert (trial.subscription_id, trial.trial_end) == (sub, datetime.fromtimestamp(trial_end, UTC))
    assert (trial.email, trial.name, trial.user_id) == ("grace@example.com", "Grace", "user_grace")
    assert trial.has_payment_method is True
    upcoming: list[UpcomingRenewal] = scene.seen["upcoming"]
    assert [u.renews_at for u in upcoming] == [datetime.fromtimestamp(r, UTC) for r in renewals]
    assert {(u.subscription_id, u.amount_due, u.currency) for u in upcoming} == {(sub, 2000, "usd")}
    failed: PaymentFailed = scene.seen["failed"][0]
    assert (failed.subscription_id, failed.invoice_id) == (sub, failing.id)
    assert (failed.attempt_count, failed.final) == (1, False)
    assert failed.next_attempt_at == datetime.fromtimestamp(
        int(failing.next_payment_attempt or 0), UTC
    )
    assert failed.hosted_invoice_url == failing.hosted_invoice_url
    assert (failed.amount_due, failed.currency, failed.billing_reason) == (
        2000,
        "usd",
        "subscription_cycle",
    )
    assert failed.decline == advise("generic_decline", code="card_declined")
    assert (failed.email, failed.user_id) == ("grace@example.com", "user_grace")
    paid = scene.client.v1.invoices.retrieve(failing.id)
    assert paid.status == "paid" and paid.attempt_count == 2
    scene.replay_shuffled_and_duplicated(seed=11)


def test_a_failure_exhausted_retries_and_canceled(scene: Scene) -> None:
    scene.sandbox.set_billing(retry_days=[1, 2], after_retries="cancel", key=scene.key)
    started = scene.subscriptions.start(
        scene.customer, scene.price, payment_behavior="allow_incomplete"
    )
    scene.sub_id = sub = started.subscription.id
    scene.step("started: active")
    scene.use_card("pm_card_chargeCustomerFail")
    renews = scene.period_end()
    scene.to(renews + 2 * HOUR)
    scene.step("the renewal fails: grace")
    scene.to(scene.now() + DAY)
    scene.step("the first retry fails")
    scene.to(scene.now() + 2 * DAY)
    scene.step("the last retry fails: canceled")

    none = dict.fromkeys(HOOKS, 0)
    assert scene.rows == [
        ("started: active", "active", "active", True, none),
        ("the renewal fails: grace", "past_due", "past_due", True,
         {**none, "upcoming": 1, "failed": 1}),
        ("the first retry fails", "past_due", "past_due", True,
         {**none, "upcoming": 1, "failed": 2}),
        ("the last retry fails: canceled", "canceled", "canceled", False,
         {**none, "upcoming": 1, "failed": 3, "ended": 1}),
    ]  # fmt: skip
    failed: list[PaymentFailed] = scene.seen["failed"]
    assert [(f.attempt_count, f.final) for f in failed] == [(1, False), (2, False), (3, True)]
    assert [f.next_attempt_at is None for f in failed] == [False, False, True]
    assert len({f.invoice_id for f in failed}) == 1
    ended: SubscriptionEnded = scene.seen["ended"][0]
    assert (ended.subscription_id, ended.reason, ended.user_id) == (
        sub,
        "payment_failed",
        "user_grace",
    )
    # The last retry: the draft finalized an hour after the renewal, then 1 and 2 days.
    assert ended.ended_at == datetime.fromtimestamp(renews + HOUR + 3 * DAY, UTC)
    assert scene.app.entitlements.access_until(scene.customer, "pro", at=scene.instants[-1]) is None
    scene.replay_shuffled_and_duplicated(seed=29)
