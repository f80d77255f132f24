"""stripeline.testing: the pytest plugin, used directly and in a user's suite (pytester)."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.core.signature import verify
from stripeline.db.engine import connect
from stripeline.db.models import Event
from stripeline.testing import (
    StripelineEnv,
    deliver,
    make_event,
    object_shape,
    resource_for,
    sign_event,
)
from stripeline.web import create_app
from stripeline.worker import Worker

pytest_plugins = ["pytester"]

SECRET = "whsec_plugin_test_secret_0001"


@pytest.mark.parametrize(
    ("event_type", "resource"),
    [
        ("invoice.paid", "invoice"),
        ("customer.subscription.trial_will_end", "subscription"),
        ("charge.dispute.funds_withdrawn", "dispute"),
        ("charge.refund.updated", "refund"),
        ("checkout.session.completed", "checkout.session"),
        ("test_helpers.test_clock.ready", "test_helpers.test_clock"),
        ("payment_intent.succeeded", "payment_intent"),
        ("v1.unknown_thing.happened", None),
    ],
)
def test_event_types_map_to_current_api_shapes(event_type: str, resource: str | None) -> None:
    assert resource_for(event_type) == resource
    event = make_event(event_type)
    obj = event["data"]["object"]
    assert event["type"] == event_type and event["object"] == "event"
    assert event["livemode"] is False and event["api_version"] == "2026-10-28.endive"
    if resource is not None:
        shape = object_shape(resource)
        assert obj["object"] == shape["object"]
        assert set(obj) == set(shape)
        assert obj["id"] != shape["id"] and obj["id"].split("_")[0] == shape["id"].split("_")[0]


def test_make_event_overrides_and_previous_attributes() -> None:
    event = make_event(
        "customer.updated",
        {"id": "cus_fixed", "email": "new@example.com"},
        previous_attributes={"email": "old@example.com"},
        created=1_800_000_000,
        account="acct_123",
    )
    assert event["data"]["object"]["id"] == "cus_fixed"
    assert event["data"]["object"]["email"] == "new@example.com"
    assert event["data"]["previous_attributes"] == {"email": "old@example.com"}
    assert event["created"] == 1_800_000_000 and event["account"] == "acct_123"
    assert make_event("customer.updated")["id"] != make_event("customer.updated")["id"]
    with pytest.raises(KeyError, match="no example object"):
        object_shape("nothing")


def test_sign_event_verifies_and_any_change_fails() -> None:
    payload, headers = sign_event(make_event("charge.succeeded"), SECRET, timestamp=1_800_000_000)
    assert (
        verify(payload, headers["Stripe-Signature"], [SECRET], now=1_800_000_000) == 1_800_000_000
    )
    with pytest.raises(Exception, match="signature"):
        verify(payload + b" ", headers["Stripe-Signature"], [SECRET], now=1_800_000_000)


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Stripeline]:
    app = Stripeline(stripe_webhook_secret=SECRET, database_url=sqlite_url)
    yield app
    app.dispose()


def stored(app: Stripeline) -> dict[str, tuple[str, int]]:
    with connect(app.engine, readonly=True) as conn:
        rows = conn.execute(select(Event.id, Event.status, Event.deliveries)).all()
    return {row.id: (row.status, row.deliveries) for row in rows}


def test_deliver_in_order_to_a_stripeline_app(app: Stripeline) -> None:
    events = [make_event("customer.created"), make_event("customer.updated")]
    results = deliver(app, events)
    assert [(r.event_id, r.status) for r in results] == [(e["id"], 200) for e in events]
    assert results[0].body["duplicate"] is False
    assert stored(app) == {e["id"]: ("pending", 1) for e in events}


def test_deliver_duplicated_through_a_test_client(app: Stripeline) -> None:
    events = [make_event("invoice.paid"), make_event("invoice.paid")]
    with TestClient(create_app(app)) as client:
        results = deliver(client, events, order="duplicated", secret=SECRET, copies=3)
    assert [r.event_id for r in results] == [e["id"] for e in events] * 3
    assert [r.body["duplicate"] for r in results] == [False, False] + [True] * 4
    assert stored(app) == {e["id"]: ("pending", 3) for e in events}


def test_deliver_shuffled_is_seeded_and_mirror_converges(app: Stripeline) -> None:
    customer = {"id": "cus_shuffle", "object": "customer"}
    events = [
        make_event("customer.created", {**customer, "email": "a@example.com"}, created=100),
        make_event("customer.updated", {**customer, "email": "b@example.com"}, created=101),
        make_event("customer.updated", {**customer, "email": "c@example.com"}, created=102),
        make_event("customer.updated", {**customer, "email": "d@example.com"}, created=103),
    ]
    first = [r.event_id for r in deliver(app, events, order="shuffled", seed=7)]
    assert sorted(first) == sorted(e["id"] for e in events)  # type: ignore[type-var]
    assert first == [
        r.event_id for r in deliver(app, events, order="shuffled", seed=7, secret=SECRET)
    ]
    assert first != [e["id"] for e in events]
    assert [r.event_id for r in deliver(app, events, order="reversed")] == [
        e["id"] for e in reversed(events)
    ]
    assert Worker(app).drain() == 4
    with connect(app.engine, readonly=True) as conn:
        data = conn.execute(select(func.count()).select_from(Event)).scalar_one()
    assert data == 4


def test_deliver_refuses_bad_input(app: Stripeline) -> None:
    with pytest.raises(ValueError, match="order"):
        deliver(app, [make_event("customer.created")], order="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="secret"):
        deliver("http://127.0.0.1:9/webhooks/stripe", [make_event("customer.created")])


def test_wrong_secret_is_rejected(app: Stripeline) -> None:
    (result,) = deliver(app, [make_event("customer.created")], secret="whsec_not_the_one")
    assert result.status == 400 and stored(app) == {}


def test_env_settles_handlers_that_call_stripe(stripeline_env: StripelineEnv) -> None:
    """A handler that refunds makes more events; settle() waits for those too."""
    refunded: list[str] = []

    @stripeline_env.app.on("payment_intent.succeeded")
    def refund(event: ReceivedEvent) -> None:
        if event.once(f"refund:{event.object['id']}"):
            stripeline_env.client.v1.refunds.create({"payment_intent": event.object["id"]})
            refunded.append(event.object["id"])

    intent = stripeline_env.client.v1.payment_intents.create(
        {"amount": 900, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    processed = stripeline_env.settle()
    assert refunded == [intent.id]
    assert processed == len(stripeline_env.events()) == 5
    assert {e.type for e in stripeline_env.events()} >= {"refund.created", "charge.refunded"}


def test_env_deliver_and_url_delivery(stripeline_env: StripelineEnv) -> None:
    events = [make_event("customer.created") for _ in range(3)]
    results = stripeline_env.deliver(events, order="duplicated")
    assert [r.status for r in results] == [200] * 6
    assert stripeline_env.settle() == 3
    assert {e.id: e.deliveries for e in stripeline_env.events()} == {e["id"]: 2 for e in events}
    for event in events:
        mirrored = stripeline_env.mirror(event["data"]["object"]["id"])
        assert mirrored is not None and mirrored["object"] == "customer"


def test_advance_clock_moves_sandbox_time_and_settles(stripeline_env: StripelineEnv) -> None:
    before = stripeline_env.sandbox.clock.now()
    stripeline_env.client.v1.customers.create({"email": "t@example.com"})
    now = stripeline_env.advance_clock(3600)
    assert now >= before + 3600
    (event,) = stripeline_env.events()
    assert event.type == "customer.created" and event.status == "processed"
    later = stripeline_env.client.v1.customers.create({"email": "u@example.com"})
    assert later.created >= before + 3600
    with pytest.raises(ValueError, match="forward"):
        stripeline_env.advance_clock(to=before)


def test_settle_reports_webhooks_that_never_arrive(stripeline_env: StripelineEnv) -> None:
    stripeline_env.sandbox.set_delivery(hold=True, key=stripeline_env.key)
    stripeline_env.client.v1.customers.create({"email": "held@example.com"})
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"customer\.created"):
        stripeline_env.settle(timeout=0.3)
    assert time.monotonic() - started < 2
    stripeline_env.sandbox.flush_deliveries(key=stripeline_env.key)
    stripeline_env.sandbox.set_delivery(key=stripeline_env.key)
    assert stripeline_env.settle() == 1


def test_advance_test_clock_when_the_sandbox_has_them(stripeline_env: StripelineEnv) -> None:
    clocks = stripeline_env.client.v1.test_helpers.test_clocks
    clock = clocks.create({"frozen_time": stripeline_env.sandbox.clock.now()})
    new_time = stripeline_env.advance_clock(86400, test_clock=clock.id)
    assert new_time == clock.frozen_time + 86400
    assert clocks.retrieve(clock.id).frozen_time == new_time


USER_APP = """
    from __future__ import annotations

    import stripeline

    app = stripeline.Stripeline()
    RECEIPTS: list[str] = []


    @app.on("payment_intent.succeeded")
    def send_receipt(event: stripeline.ReceivedEvent) -> None:
        if event.once(f"receipt:{event.object['id']}"):
            RECEIPTS.append(event.object["id"])
"""

USER_TESTS = """
    from __future__ import annotations

    import sys
    import threading

    from billing import RECEIPTS


    def test_not_using_the_plugin_starts_nothing():
        assert "stripeline_sandbox" not in sys.modules
        assert not [t for t in threading.enumerate() if t.name.startswith("sandbox")]


    def test_payment_sends_one_receipt(stripeline_env):
        intent = stripeline_env.client.v1.payment_intents.create(
            {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
        )
        stripeline_env.settle()
        assert RECEIPTS == [intent.id]
        assert stripeline_env.mirror(intent.id)["status"] == "succeeded"
        # Stripe delivers at least once: the same events again change nothing.
        stripeline_env.deliver([e.data for e in stripeline_env.events()], order="shuffled")
        stripeline_env.settle()
        assert RECEIPTS == [intent.id]


    def test_each_test_has_its_own_account(stripe_client):
        assert stripe_client.v1.payment_intents.list().data == []


    def test_signed_event_factory(stripe_event, stripeline_app):
        from stripeline.testing import deliver

        event = stripe_event("invoice.paid", {"amount_paid": 500})
        (result,) = deliver(stripeline_app, [event])
        assert result.status == 200
"""


def test_plugin_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(billing=textwrap.dedent(USER_APP), test_billing=textwrap.dedent(USER_TESTS))
    pytester.makeini(
        """
        [pytest]
        stripeline_app = billing:app
        filterwarnings = error
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=240)
    result.assert_outcomes(passed=4)


def test_plugin_module_imports_cheaply(pytester: pytest.Pytester) -> None:
    """Loaded into every pytest run: it adds no import of its own beyond stripeline's."""
    code = (
        "import sys, json, stripeline; before = set(sys.modules); import stripeline.testing; "
        "print(json.dumps(sorted(m for m in set(sys.modules) - before "
        "if m.split('.')[0] in ('stripe', 'uvicorn', 'starlette', 'httpx', 'requests') "
        "or m.startswith(('stripeline_sandbox', 'stripeline.web', 'stripeline.worker')))))"
    )
    result = pytester.run(sys.executable, "-c", code)
    assert result.ret == 0
    assert json.loads(result.outlines[-1]) == []


def test_template_database_is_migrated(stripeline_app: Stripeline, tmp_path: Path) -> None:
    assert str(tmp_path) in stripeline_app.settings.database_url
    assert Worker(stripeline_app).drain() == 0


def test_the_plugin_says_how_to_install_the_sandbox(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys

        class _Absent:
            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] == "stripeline_sandbox":
                    raise ImportError(f"{fullname} is not installed here")
                return None

        sys.meta_path.insert(0, _Absent())
        """
    )
    pytester.makepyfile(
        """
        def test_needs_the_sandbox(stripe_sandbox):
            pass

        def test_make_event_still_works(stripe_event):
            assert stripe_event("customer.created")["type"] == "customer.created"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=240)
    result.assert_outcomes(passed=1, errors=1)
    output = result.stdout.str()
    assert "stripe_sandbox needs the offline Stripe sandbox" in output
    assert "pip install 'stripeline[sandbox]'" in output
    assert "During handling" not in output and "ImportError" not in output


def test_a_subclass_cached_property_is_built_afresh_against_the_test_app(tmp_path: Path) -> None:
    """``stripeline_base_app`` may be a subclass with cached properties of its
    own (built from its settings): while a test runs they are built again from
    the test app's, and the user's come back afterwards."""
    from functools import cached_property

    from pydantic import SecretStr

    from stripeline.settings import Settings
    from stripeline.testing.plugin import _pointed_at

    class Billing(Stripeline):
        @cached_property
        def database(self) -> str:
            return self.settings.database_url

    def app_at(name: str, cls: type[Stripeline]) -> Stripeline:
        return cls(
            Settings(
                stripe_webhook_secret=SecretStr(SECRET), database_url=f"sqlite:///{tmp_path}/{name}"
            )
        )

    base = app_at("user.db", Billing)
    test_app = app_at("test.db", Stripeline)
    try:
        assert base.database.endswith("user.db")  # type: ignore[attr-defined]
        with _pointed_at(base, test_app):
            assert base.database.endswith("test.db")  # type: ignore[attr-defined]
        assert base.database.endswith("user.db")  # type: ignore[attr-defined]
    finally:
        base.dispose()
        test_app.dispose()
