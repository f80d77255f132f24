"""The customers flow (``stripeline.flows.customers``) against the sandbox
through the official SDK, on SQLite and PostgreSQL: one customer per user
whatever the concurrency, adoption, updates and payment methods."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from pydantic import SecretStr

from stripeline.app import Stripeline
from stripeline.errors import (
    CustomerNotFound,
    ModeMismatch,
    NotYourPaymentMethod,
    StripeConnectionError,
)
from stripeline.flows.customers import USER_KEY, Customers
from stripeline.settings import Settings
from stripeline.testing import StripelineEnv
from stripeline_sandbox import Sandbox


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    settings = Settings(
        stripe_secret_key=SecretStr(stripe_key),
        stripe_api_base=stripe_sandbox.url,
        database_url=database_url,
        max_network_retries=0,
    )
    app = Stripeline(settings)
    yield app
    app.dispose()


@pytest.fixture
def customers(app: Stripeline) -> Customers:
    return Customers(app)


def live_customers(client: stripe.StripeClient) -> list[stripe.Customer]:
    return list(client.v1.customers.list({"limit": 100}).auto_paging_iter())


def at_stripe(client: stripe.StripeClient, customer_id: str) -> dict[str, Any]:
    """The customer as Stripe holds it, as plain JSON."""
    return client.v1.customers.retrieve(customer_id).to_dict()


def writes(sandbox: Sandbox, key: str) -> int:
    """POST and DELETE requests the account received (reads left out)."""
    return sum(
        count
        for route, count in sandbox.request_counts(key).items()
        if route.startswith(("POST", "DELETE"))
    )


def test_ensure_makes_one_customer_stamped_and_linked_then_answers_from_the_mirror(
    app: Stripeline,
    customers: Customers,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
) -> None:
    made = customers.ensure("u1", email="u1@example.com", name="Ada", metadata={"plan": "gold"})
    assert (made.email, made.name) == ("u1@example.com", "Ada")
    held = at_stripe(stripe_client, made.id)
    assert held["metadata"] == {USER_KEY: "u1", "plan": "gold"}
    assert held["email"] == "u1@example.com"
    assert [c.id for c in live_customers(stripe_client)] == [made.id]
    link = app.mirror.customer_link("u1")
    assert link is not None and link.customer_id == made.id

    before = stripe_sandbox.request_counts(stripe_key)
    again = customers.ensure("u1", email="other@example.com")
    assert again.id == made.id and again.email == "u1@example.com"
    assert stripe_sandbox.request_counts(stripe_key) == before  # the link: not a call


ENSURE_MANY = """
import json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from pydantic import SecretStr
from stripeline.app import Stripeline
from stripeline.flows.customers import Customers
from stripeline.settings import Settings

base, key, url, user, directory, name = sys.argv[1:7]
app = Stripeline(Settings(
    stripe_secret_key=SecretStr(key), stripe_api_base=base, database_url=url,
    max_network_retries=2,
))
customers = Customers(app)
app.engine.connect().close()
barrier = threading.Barrier(25)
Path(directory, name + ".ready").touch()
while not Path(directory, "go").exists():
    time.sleep(0.005)

def one(n):
    barrier.wait()
    return customers.ensure(user, email=user + "@example.com").id

with ThreadPoolExecutor(25) as pool:
    ids = list(pool.map(one, range(25)))
print(json.dumps(ids))
"""


@pytest.mark.slow
def test_fifty_concurrent_ensures_from_two_processes_make_one_customer(
    app: Stripeline,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    tmp_path: Path,
) -> None:
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                ENSURE_MANY,
                stripe_sandbox.url,
                stripe_key,
                database_url,
                "many",
                str(tmp_path),
                f"p{n}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"p{n}.ready").exists() for n in range(2)):
            assert time.monotonic() < deadline, "the processes did not start"
            assert all(p.poll() is None for p in processes), processes[0].stderr
            time.sleep(0.01)
        (tmp_path / "go").touch()
        answers = []
        for process in processes:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            answers.extend(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    made = live_customers(stripe_client)
    assert len(made) == 1
    assert answers == [made[0].id] * 50
    held = at_stripe(stripe_client, made[0].id)
    assert held["metadata"] == {USER_KEY: "many"} and held["email"] == "many@example.com"
    link = app.mirror.customer_link("many")
    assert link is not None and link.customer_id == made[0].id


def test_a_customer_carrying_the_user_id_is_adopted_not_duplicated(
    app: Stripeline, customers: Customers, stripe_client: stripe.StripeClient
) -> None:
    older = stripe_client.v1.customers.create(
        {"email": "old@example.com", "metadata": {USER_KEY: "u2"}}
    )
    stripe_client.v1.customers.create({"email": "else@example.com", "metadata": {USER_KEY: "u9"}})
    adopted = customers.ensure("u2", email="new@example.com")
    assert adopted.id == older.id
    assert adopted.email == "old@example.com"  # adopted as it is
    assert len(live_customers(stripe_client)) == 2
    link = app.mirror.customer_link("u2")
    assert link is not None and link.customer_id == older.id
    assert app.calls.record("customer:create", "u2") is None


def test_of_several_customers_carrying_the_user_id_one_is_adopted_and_the_others_named(
    customers: Customers, stripe_client: stripe.StripeClient
) -> None:
    from structlog.testing import capture_logs

    made = [
        stripe_client.v1.customers.create({"metadata": {USER_KEY: "twice"}}).id for _ in range(2)
    ]
    with capture_logs() as logs:
        adopted = customers.ensure("twice")
    assert adopted.id in made
    (warning,) = [line for line in logs if line.get("action") == "customer_duplicates"]
    assert warning["adopted"] == adopted.id and warning["others"] == [
        other for other in made if other != adopted.id
    ]
    assert customers.ensure("twice").id == adopted.id


def test_a_second_ensure_with_other_details_after_a_crash_before_linking_is_the_same_customer(
    app: Stripeline, customers: Customers, stripe_client: stripe.StripeClient
) -> None:
    first = customers.ensure("u3", email="first@example.com")
    app.mirror.unlink_customer("u3")  # as if the process died before it linked
    again = customers.ensure("u3", email="second@example.com", name="Other")
    assert again.id == first.id
    assert again.email == "first@example.com"  # the details recorded first stay
    assert [c.id for c in live_customers(stripe_client)] == [first.id]


def test_a_create_answer_lost_then_a_retry_with_other_details_is_one_customer(
    app: Stripeline,
    customers: Customers,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
) -> None:
    # Stripe made the customer, the answer never came back.
    stripe_sandbox.inject_fault("disconnect", path="^/v1/customers$", method="POST", key=stripe_key)
    with pytest.raises(StripeConnectionError):
        customers.ensure("u4", email="lost@example.com")
    assert len(live_customers(stripe_client)) == 1
    # A new process: the retry sends the same key, gets the same customer, sets its details.
    restarted = Stripeline(app.settings)
    try:
        made = Customers(restarted).ensure("u4", email="retry@example.com")
    finally:
        restarted.dispose()
    assert [c.id for c in live_customers(stripe_client)] == [made.id]
    assert made.email == "retry@example.com"


def test_update_ends_in_stripe_and_in_the_mirror(
    app: Stripeline, customers: Customers, stripe_client: stripe.StripeClient
) -> None:
    made = customers.ensure("u5", email="u5@example.com", name="Old Name")
    changed = customers.update(
        "u5",
        email="new5@example.com",
        name=None,
        phone="+15555550100",
        address={"line1": "1 Main St", "city": "Springfield", "country": "US"},
        metadata={"tier": "2"},
    )
    held = at_stripe(stripe_client, made.id)
    assert (held["email"], held["name"], held["phone"]) == (
        "new5@example.com",
        None,
        "+15555550100",
    )
    assert held["address"]["city"] == "Springfield"
    assert held["metadata"] == {USER_KEY: "u5", "tier": "2"}
    assert (changed.email, changed.name) == ("new5@example.com", None)
    assert changed.data["phone"] == "+15555550100"
    mirrored = app.mirror.customer(made.id)
    assert mirrored is not None and mirrored.email == "new5@example.com"
    # Back to the first email: a change of its own, not the old call replayed.
    customers.update("u5", email="u5@example.com")
    assert at_stripe(stripe_client, made.id)["email"] == "u5@example.com"
    with pytest.raises(ValueError, match="stripeline's"):
        customers.update("u5", metadata={USER_KEY: "someone-else"})


def test_methods_for_a_user_without_a_customer_fail_before_any_call(
    customers: Customers, stripe_sandbox: Sandbox, stripe_key: str
) -> None:
    before = stripe_sandbox.request_counts(stripe_key)
    with pytest.raises(CustomerNotFound, match=r"customers\.ensure"):
        customers.update("nobody", email="x@example.com")
    with pytest.raises(CustomerNotFound):
        customers.setup_card("nobody", payment_method="pm_card_visa")
    assert stripe_sandbox.request_counts(stripe_key) == before
    with pytest.raises(ValueError, match="quotes"):
        customers.ensure("o'brien")


def test_cards_saved_set_default_and_detached_end_in_stripe_and_the_mirror(
    app: Stripeline,
    customers: Customers,
    stripe_client: stripe.StripeClient,
) -> None:
    made = customers.ensure("u6", email="u6@example.com")
    waiting = customers.setup_card("u6")
    assert waiting.status == "requires_payment_method" and waiting.decline is None
    assert waiting.client_secret and waiting.client_secret.startswith(f"{waiting.setup_intent}_")

    visa = customers.setup_card("u6", payment_method="pm_card_visa")
    master = customers.setup_card("u6", payment_method="pm_card_mastercard")
    assert visa.succeeded and master.succeeded
    assert visa.payment_method and master.payment_method
    held = customers.payment_methods("u6")  # the mirror, at once
    assert sorted(pm.id for pm in held) == sorted([visa.payment_method, master.payment_method])
    assert {pm.card_last4 for pm in held} == {"4242", "4444"}

    customer = customers.set_default_payment_method("u6", master.payment_method)
    assert customer.default_payment_method == master.payment_method
    held_at_stripe = at_stripe(stripe_client, made.id)
    assert held_at_stripe["invoice_settings"]["default_payment_method"] == master.payment_method

    detached = customers.detach_payment_method("u6", master.payment_method)
    assert detached.customer is None
    assert stripe_client.v1.payment_methods.retrieve(master.payment_method).customer is None
    held_at_stripe = at_stripe(stripe_client, made.id)
    assert held_at_stripe["invoice_settings"]["default_payment_method"] is None
    mirrored = app.mirror.customer(made.id)
    assert mirrored is not None and mirrored.default_payment_method is None
    assert [pm.id for pm in customers.payment_methods("u6")] == [visa.payment_method]
    assert [pm.id for pm in customers.payment_methods("u6", refresh=True)] == [visa.payment_method]
    # A retry of the detach is the recorded call, not a refusal.
    assert customers.detach_payment_method("u6", master.payment_method).customer is None


def test_a_declined_card_is_a_safe_outcome(customers: Customers) -> None:
    customers.ensure("u7")
    refused = customers.setup_card("u7", payment_method="pm_card_chargeDeclinedStolenCard")
    assert refused.status == "requires_payment_method" and not refused.succeeded
    assert refused.decline is not None and refused.decline.decline_code == "stolen_card"
    assert "stolen" not in refused.decline.message.lower()
    assert customers.payment_methods("u7", refresh=True) == []


def test_three_d_secure_on_setup_requires_action_then_the_card_is_saved(
    customers: Customers, stripe_sandbox: Sandbox, stripe_key: str
) -> None:
    customers.ensure("u8")
    setup = customers.setup_card(
        "u8",
        payment_method="pm_card_authenticationRequiredOnSetup",
        return_url="https://shop.example/done",
    )
    assert setup.requires_action and setup.client_secret and setup.setup_intent
    assert customers.payment_methods("u8", refresh=True) == []
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the local sandbox
        f"{stripe_sandbox.url}/_sandbox/setup_intents/{setup.setup_intent}/authenticate",
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {stripe_key}"},
    )
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - the local sandbox
    saved = customers.payment_methods("u8", refresh=True)
    assert [pm.id for pm in saved] == [setup.payment_method]


def test_another_users_payment_method_is_refused_before_any_call(
    customers: Customers, stripe_sandbox: Sandbox, stripe_key: str
) -> None:
    customers.ensure("alice")
    customers.ensure("bob")
    bobs = customers.setup_card("bob", payment_method="pm_card_visa").payment_method
    assert bobs is not None
    before = stripe_sandbox.request_counts(stripe_key)
    with pytest.raises(NotYourPaymentMethod, match=f"{bobs} is not attached") as info:
        customers.set_default_payment_method("alice", bobs)
    assert info.value.payment_method == bobs
    with pytest.raises(NotYourPaymentMethod):
        customers.detach_payment_method("alice", bobs)
    assert stripe_sandbox.request_counts(stripe_key) == before
    # Detached by its owner, then asked for by another user: still not theirs.
    customers.detach_payment_method("bob", bobs)
    writes_before = writes(stripe_sandbox, stripe_key)
    with pytest.raises(NotYourPaymentMethod):
        customers.detach_payment_method("alice", bobs)
    assert writes(stripe_sandbox, stripe_key) == writes_before
    # Unknown to the mirror: Stripe is asked (a read), nothing is written.
    writes_before = writes(stripe_sandbox, stripe_key)
    with pytest.raises(NotYourPaymentMethod):
        customers.detach_payment_method("alice", "pm_card_visa")
    assert writes(stripe_sandbox, stripe_key) == writes_before


def test_a_payment_method_of_the_other_mode_is_refused_before_any_call(
    app: Stripeline, customers: Customers, database_url: str
) -> None:
    customers.ensure("u10")
    bob_pm = customers.setup_card("u10", payment_method="pm_card_visa").payment_method
    assert bob_pm is not None
    live = Stripeline(
        Settings(
            stripe_secret_key=SecretStr("sk_live_0123456789abcdef"),
            stripe_webhook_secret=SecretStr("whsec_live_0001"),
            database_url=database_url,
        )
    )
    try:
        with pytest.raises(ModeMismatch):
            Customers(live).detach_payment_method("u10", bob_pm)
    finally:
        live.dispose()


def test_the_async_twins(customers: Customers, stripe_client: stripe.StripeClient) -> None:
    async def flow() -> tuple[str, str, str | None]:
        made = await customers.ensure_async("u11", email="u11@example.com")
        same = await customers.ensure_async("u11")
        changed = await customers.update_async("u11", name="Async")
        setup = await customers.setup_card_async("u11", payment_method="pm_card_visa")
        assert setup.succeeded and setup.payment_method
        with_default = await customers.set_default_payment_method_async("u11", setup.payment_method)
        assert with_default.default_payment_method == setup.payment_method
        assert [pm.id for pm in await customers.payment_methods_async("u11")] == [
            setup.payment_method
        ]
        detached = await customers.detach_payment_method_async("u11", setup.payment_method)
        assert detached.customer is None
        return made.id, same.id, changed.name

    made, same, name = asyncio.run(flow())
    assert made == same and name == "Async"
    assert [c.id for c in live_customers(stripe_client)] == [made]


def test_a_customer_deleted_at_stripe_is_replaced_by_one_new_customer(
    stripeline_env: StripelineEnv,
) -> None:
    app = stripeline_env.app
    customers = Customers(app)
    client = stripeline_env.client
    first = customers.ensure("u12", email="u12@example.com")
    client.v1.customers.delete(first.id)
    stripeline_env.settle()
    with pytest.raises(CustomerNotFound, match="was deleted") as info:
        customers.update("u12", name="Gone")
    assert info.value.customer_id == first.id

    replaced = customers.ensure("u12", email="u12@example.com")
    assert replaced.id != first.id and not replaced.deleted
    assert [c.id for c in live_customers(client)] == [replaced.id]
    link = app.mirror.customer_link("u12")
    assert link is not None and link.customer_id == replaced.id
    assert customers.ensure("u12").id == replaced.id
    assert app.calls.record("customer:create", f"u12:after:{first.id}") is not None


def test_three_d_secure_completed_in_the_browser_arrives_by_webhook(
    stripeline_env: StripelineEnv,
) -> None:
    customers = Customers(stripeline_env.app)
    customers.ensure("u13")
    setup = customers.setup_card("u13", payment_method="pm_card_authenticationRequiredOnSetup")
    assert setup.requires_action
    stripeline_env.control("POST", f"/_sandbox/setup_intents/{setup.setup_intent}/authenticate")
    stripeline_env.settle()
    assert [pm.id for pm in customers.payment_methods("u13")] == [setup.payment_method]


def test_the_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).parent.parent / "docs" / "customers.md").read_text(encoding="utf-8")
    example = text.split("## A runnable example", 1)[1].split("```python\n", 1)[1]
    example = example.split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/customers.md", "exec"), {})  # noqa: S102 - our own docs
    assert (tmp_path / "customers-example.db").exists()


def test_a_customer_deleted_before_the_mirror_heard_of_it(
    app: Stripeline, customers: Customers, stripe_client: stripe.StripeClient
) -> None:
    """No webhook: Stripe's 404 on a write tells, the mirror learns it, and
    ``ensure`` makes the user's new customer."""
    first = customers.ensure("u14", email="u14@example.com")
    stripe_client.v1.customers.delete(first.id)
    with pytest.raises(CustomerNotFound, match="was deleted") as info:
        customers.update("u14", name="Gone")
    assert info.value.customer_id == first.id
    held = app.mirror.customer(first.id)
    assert held is not None and held.deleted
    replaced = customers.ensure("u14")
    assert replaced.id != first.id
    assert [c.id for c in live_customers(stripe_client)] == [replaced.id]
