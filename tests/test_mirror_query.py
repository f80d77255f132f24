"""The query API over a mirror filled by the real inbox and worker
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from stripeline.app import Stripeline
from stripeline.db.engine import connect
from stripeline.mirror import (
    Customer,
    CustomerLinkConflict,
    Mirror,
    Subscription,
    mapping,
)
from stripeline.mirror._store import apply_states, state_from_event
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import encode, store_events

FIXTURES = json.loads((Path(__file__).parent / "data" / "fixtures3.json").read_text())["resources"]
BASE = 1_800_000_000
_ids = itertools.count(1)


@pytest.fixture
def app(engine: Engine) -> Iterator[Stripeline]:
    application = Stripeline(Settings(database_url=str(engine.url)), engine=engine)
    yield application


def deliver(app: Stripeline, *events: tuple[str, int, dict[str, Any]], account: str = "") -> None:
    """Store events (type, created, object) in the inbox and let a worker apply them."""
    payloads = []
    for event_type, created, obj in events:
        body: dict[str, Any] = {
            "id": f"evt_q_{next(_ids)}",
            "object": "event",
            "type": event_type,
            "created": created,
            "livemode": False,
            "api_version": "2026-10-28.endive",
            "data": {"object": obj},
        }
        if account:
            body["account"] = account
        payloads.append(encode(body))
    store_events(app.engine, payloads)
    Worker(app, listen=False).drain()


def customer(customer_id: str, email: str | None = None, **extra: Any) -> dict[str, Any]:
    obj = copy.deepcopy(FIXTURES["customer"])
    obj.update(id=customer_id, email=email, created=BASE, **extra)
    return obj


def subscription(
    subscription_id: str,
    customer_id: str,
    status: str,
    *,
    period_end: int = BASE + 86_400,
    **extra: Any,
) -> dict[str, Any]:
    obj = copy.deepcopy(FIXTURES["subscription"])
    obj.update(
        {
            "id": subscription_id,
            "customer": customer_id,
            "status": status,
            "cancel_at_period_end": False,
            "cancel_at": None,
            "canceled_at": None,
            "created": BASE,
            **extra,
        }
    )
    item = obj["items"]["data"][0]
    item.update(
        subscription=subscription_id, current_period_start=BASE, current_period_end=period_end
    )
    return obj


def line(line_id: str, amount: int) -> dict[str, Any]:
    obj = copy.deepcopy(FIXTURES["line_item"])
    obj.update(id=line_id, amount=amount)
    return obj


def invoice(
    invoice_id: str,
    customer_id: str,
    status: str,
    lines: list[dict[str, Any]],
    *,
    has_more: bool = False,
) -> dict[str, Any]:
    obj = copy.deepcopy(FIXTURES["invoice"])
    obj.update(id=invoice_id, customer=customer_id, status=status, created=BASE)
    obj["lines"] = {
        "object": "list",
        "data": lines,
        "has_more": has_more,
        "url": "/v1/invoices/x/lines",
    }
    return obj


def test_customer_lookups(app: Stripeline) -> None:
    deliver(
        app,
        ("customer.created", BASE, customer("cus_a", "a@example.com")),
        ("customer.created", BASE + 1, customer("cus_b", "b@example.com")),
        ("customer.created", BASE + 2, customer("cus_c", "a@example.com")),
    )
    mirror = Mirror(app.engine)
    found = mirror.customer("cus_a")
    assert isinstance(found, Customer)
    assert found.email == "a@example.com"
    assert found.created == datetime.fromtimestamp(BASE, UTC)
    assert found.created is not None and found.created.tzinfo is not None
    assert found.data["id"] == "cus_a"
    assert {c.id for c in mirror.customers(email="a@example.com")} == {"cus_a", "cus_c"}
    assert mirror.customer("cus_missing") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.email = "x"  # type: ignore[misc]


def test_a_stale_event_never_overwrites_typed_columns(app: Stripeline) -> None:
    deliver(app, ("customer.updated", BASE + 10, customer("cus_s", "new@example.com")))
    deliver(app, ("customer.updated", BASE + 5, customer("cus_s", "old@example.com")))
    found = Mirror(app.engine).customer("cus_s")
    assert found is not None and found.email == "new@example.com"


def test_deleted_objects_are_flagged_and_left_out_of_lists(app: Stripeline) -> None:
    deliver(app, ("customer.created", BASE, customer("cus_d", "d@example.com")))
    deliver(
        app, ("customer.deleted", BASE + 1, {"id": "cus_d", "object": "customer", "deleted": True})
    )
    mirror = Mirror(app.engine)
    found = mirror.customer("cus_d")
    assert found is not None and found.deleted and found.email is None
    assert mirror.customers(email="d@example.com") == []


def test_subscriptions_by_customer_and_status(app: Stripeline) -> None:
    deliver(
        app,
        ("customer.subscription.created", BASE, subscription("sub_1", "cus_x", "active")),
        ("customer.subscription.created", BASE, subscription("sub_2", "cus_x", "canceled")),
        ("customer.subscription.created", BASE, subscription("sub_3", "cus_x", "trialing")),
        ("customer.subscription.created", BASE, subscription("sub_4", "cus_y", "active")),
    )
    mirror = Mirror(app.engine)
    assert {s.id for s in mirror.subscriptions("cus_x")} == {"sub_1", "sub_2", "sub_3"}
    assert [s.id for s in mirror.subscriptions("cus_x", status="canceled")] == ["sub_2"]
    active = mirror.active_subscriptions("cus_x")
    assert {s.id for s in active} == {"sub_1", "sub_3"}
    assert all(isinstance(s, Subscription) for s in active)
    sub = mirror.subscription("sub_1")
    assert sub is not None
    assert sub.current_period_end == datetime.fromtimestamp(BASE + 86_400, UTC)
    assert not sub.cancels
    # The subscription is cancelled at period end: the flag is mirrored.
    deliver(
        app,
        (
            "customer.subscription.updated",
            BASE + 5,
            subscription("sub_1", "cus_x", "active", cancel_at_period_end=True),
        ),
    )
    sub = mirror.subscription("sub_1")
    assert sub is not None and sub.cancel_at_period_end and sub.cancels
    assert {s.id for s in mirror.subscriptions(status=["active"])} == {"sub_1", "sub_4"}


def test_payment_intent_and_connected_accounts(app: Stripeline) -> None:
    pi = copy.deepcopy(FIXTURES["payment_intent"])
    pi.update(
        id="pi_1",
        customer={"id": "cus_p", "object": "customer"},
        status="succeeded",
        amount=500,
        currency="jpy",
    )
    deliver(app, ("payment_intent.succeeded", BASE, pi), account="acct_1")
    assert Mirror(app.engine).payment_intent("pi_1") is None  # the platform has none
    found = Mirror(app.engine, account="acct_1").payment_intent("pi_1")
    assert found is not None
    assert (found.customer, found.status, found.amount, found.currency) == (
        "cus_p",
        "succeeded",
        500,
        "jpy",
    )
    assert [p.id for p in Mirror(app.engine).for_account("acct_1").payment_intents("cus_p")] == [
        "pi_1"
    ]


def test_invoice_lines_follow_the_newest_invoice_state(app: Stripeline) -> None:
    mirror = Mirror(app.engine)
    deliver(
        app,
        (
            "invoice.created",
            BASE,
            invoice("in_1", "cus_i", "draft", [line("il_a", 100), line("il_b", 200)]),
        ),
    )
    assert [(ln.id, ln.amount, ln.position) for ln in mirror.invoice_lines("in_1")] == [
        ("il_a", 100, 0),
        ("il_b", 200, 1),
    ]
    # A newer draft: a line removed, one changed, one added.
    deliver(
        app,
        (
            "invoice.updated",
            BASE + 5,
            invoice("in_1", "cus_i", "draft", [line("il_b", 250), line("il_c", 300)]),
        ),
    )
    assert [(ln.id, ln.amount) for ln in mirror.invoice_lines("in_1")] == [
        ("il_b", 250),
        ("il_c", 300),
    ]
    # An older state arriving late changes nothing.
    deliver(
        app, ("invoice.updated", BASE + 2, invoice("in_1", "cus_i", "draft", [line("il_z", 1)]))
    )
    assert [ln.id for ln in mirror.invoice_lines("in_1")] == ["il_b", "il_c"]
    # A newer state with a truncated list keeps the lines it cannot see.
    deliver(
        app,
        (
            "invoice.finalized",
            BASE + 9,
            invoice("in_1", "cus_i", "open", [line("il_b", 260)], has_more=True),
        ),
    )
    assert [(ln.id, ln.amount) for ln in mirror.invoice_lines("in_1")] == [
        ("il_b", 260),
        ("il_c", 300),
    ]
    found = mirror.invoice("in_1")
    assert found is not None and found.status == "open" and found.lines_complete is False
    assert [i.id for i in mirror.invoices("cus_i", status="open")] == ["in_1"]
    assert mirror.invoices("cus_i", status="draft") == []
    # A deleted invoice has no lines.
    deliver(
        app, ("invoice.deleted", BASE + 20, {"id": "in_1", "object": "invoice", "deleted": True})
    )
    assert mirror.invoice_lines("in_1") == []


def test_subscription_items_follow_their_subscription(app: Stripeline) -> None:
    first = subscription("sub_i", "cus_i", "active")
    item = first["items"]["data"][0]
    item["id"] = "si_one"
    deliver(app, ("customer.subscription.created", BASE, first))
    mirror = Mirror(app.engine)
    (held,) = mirror.subscription_items("sub_i")
    assert (held.id, held.subscription, held.price) == ("si_one", "sub_i", item["price"]["id"])
    assert held.current_period_end == datetime.fromtimestamp(BASE + 86_400, UTC)
    # The item is swapped for another: the old one is gone, the new one is there.
    swapped = copy.deepcopy(first)
    swapped["items"]["data"][0].update(id="si_two", quantity=4)
    deliver(app, ("customer.subscription.updated", BASE + 5, swapped))
    assert [(i.id, i.quantity) for i in mirror.subscription_items("sub_i")] == [("si_two", 4)]
    gone = mirror.get("si_one")
    assert gone is not None and gone["deleted"] is True
    # A stale subscription state does not bring it back.
    deliver(app, ("customer.subscription.updated", BASE + 1, first))
    assert [i.id for i in mirror.subscription_items("sub_i")] == ["si_two"]


def test_disputes_due_before(app: Stripeline) -> None:
    def dispute(dispute_id: str, due_by: int, status: str = "needs_response") -> dict[str, Any]:
        obj = copy.deepcopy(FIXTURES["dispute"])
        obj.update(id=dispute_id, status=status, created=BASE)
        obj["evidence_details"]["due_by"] = due_by
        return obj

    deliver(
        app,
        ("charge.dispute.created", BASE, dispute("dp_soon", BASE + 3_600)),
        ("charge.dispute.created", BASE, dispute("dp_later", BASE + 30 * 86_400)),
        ("charge.dispute.created", BASE, dispute("dp_none", 0)),
        ("charge.dispute.created", BASE, dispute("dp_review", BASE + 60, "under_review")),
    )
    mirror = Mirror(app.engine)
    week = datetime.fromtimestamp(BASE, UTC) + timedelta(days=7)
    assert [d.id for d in mirror.disputes(due_before=week)] == ["dp_review", "dp_soon"]
    assert [d.id for d in mirror.disputes(due_before=week, status="needs_response")] == ["dp_soon"]
    assert len(mirror.disputes()) == 4
    with pytest.raises(ValueError, match="naive"):
        mirror.disputes(due_before=datetime(2030, 1, 1))


def test_customer_links(app: Stripeline) -> None:
    deliver(app, ("customer.created", BASE, customer("cus_l", "l@example.com")))
    mirror = Mirror(app.engine)
    link = mirror.link_customer("user-1", "cus_l")
    assert (link.app_user_id, link.customer_id, link.account) == ("user-1", "cus_l", "")
    assert mirror.link_customer("user-1", "cus_l") == link  # idempotent
    with pytest.raises(CustomerLinkConflict):
        mirror.link_customer("user-1", "cus_other")
    found = mirror.customer_for_user("user-1")
    assert found is not None and found.id == "cus_l"
    assert mirror.customer_for_user("user-2") is None
    mirror.link_customer("user-2", "cus_l")
    assert mirror.users_for_customer("cus_l") == ["user-1", "user-2"]
    # Another account has its own links.
    assert mirror.for_account("acct_2").customer_link("user-1") is None
    assert mirror.unlink_customer("user-2") and not mirror.unlink_customer("user-2")


def test_every_method_has_an_async_twin() -> None:
    methods = [
        name
        for name, value in vars(Mirror).items()
        if callable(value) and not name.startswith("_") and not name.endswith("_async")
    ]
    assert len(methods) > 30
    for name in methods:
        if name == "for_account":
            continue
        twin = getattr(Mirror, f"{name}_async")
        assert inspect.iscoroutinefunction(twin), name
        assert twin.__name__ == f"{name}_async"
        assert inspect.signature(twin) == inspect.signature(getattr(Mirror, name))
        assert (getattr(Mirror, name).__doc__ or "").strip() in (twin.__doc__ or "")


def test_async_twins(app: Stripeline) -> None:
    deliver(
        app,
        ("customer.created", BASE, customer("cus_as", "as@example.com")),
        ("customer.subscription.created", BASE, subscription("sub_as", "cus_as", "active")),
    )
    mirror = Mirror(app.engine)

    async def main() -> tuple[Any, ...]:
        return await asyncio.gather(
            mirror.customer_async("cus_as"),
            mirror.active_subscriptions_async("cus_as"),
            mirror.link_customer_async("user-as", "cus_as"),
            mirror.get_async("sub_as"),
        )

    found, active, link, raw = asyncio.run(main())
    assert found == mirror.customer("cus_as")
    assert [s.id for s in active] == ["sub_as"]
    assert link.customer_id == "cus_as"
    assert raw["object"] == "subscription"


def test_get_reads_generic_objects_too(app: Stripeline) -> None:
    coupon = {"id": "co_1", "object": "coupon", "percent_off": 10, "created": BASE}
    deliver(app, ("coupon.created", BASE, coupon))
    mirror = Mirror(app.engine)
    assert mirror.get("co_1") == coupon
    assert mirror.objects("coupon") == [coupon]


# PostgreSQL's JSONB cannot hold NUL at all (the data column, whatever the mapping).
_keys = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=6)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(
        st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=300
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=3),
    max_leaves=12,
)
_fields = st.sampled_from(
    [
        "customer",
        "status",
        "amount",
        "currency",
        "email",
        "created",
        "due_date",
        "lines",
        "items",
        "evidence_details",
        "current_period_end",
        "subscription",
        "parent",
        "payments",
        "card",
        "price",
    ]
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    object_type=st.sampled_from(sorted(mapping.TYPED_TABLES)),
    fields=st.dictionaries(_fields | _keys, _json, max_size=8),
)
def test_odd_payloads_are_written_not_failed(
    engine: Engine, object_type: str, fields: dict[str, Any]
) -> None:
    """Whatever Stripe sends, the typed columns fit their table on both backends."""
    obj = {**fields, "id": f"x_{next(_ids)}", "object": object_type}
    state = state_from_event(
        obj, account="acct_odd", livemode=False, created=BASE, event_type="x.updated", event_id="e"
    )
    with connect(engine) as conn:
        assert apply_states(conn, [state], now=datetime.now(UTC)).applied == 1
    assert Mirror(engine, account="acct_odd").get(obj["id"]) is not None
