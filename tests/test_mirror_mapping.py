"""Payload → typed columns, across API versions: pure, total, exact.

Current shapes come from ``tests/data/fixtures3.json`` (Stripe's examples for
the pinned API version); older shapes are built from the changes listed per
version (basil 2025-03-31 moved periods to items and invoice links to
``parent``/``payments``).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stripeline.db.models import MirrorColumns
from stripeline.mirror import currency_exponent, mapping, to_major
from stripeline.mirror._lines import invoice_lines
from stripeline.mirror.records import RECORDS
from stripeline.mirror.tables import TYPED, table_for

FIXTURES = json.loads((Path(__file__).parent / "data" / "fixtures3.json").read_text())["resources"]
COMMON = {name for name in vars(MirrorColumns) if not name.startswith("_")} | {"account", "id"}


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def fixture(object_type: str) -> dict[str, Any]:
    return copy.deepcopy(FIXTURES[object_type])


def typed_columns(object_type: str) -> set[str]:
    return {c.name for c in table_for(object_type).table.columns} - COMMON


def test_every_typed_type_is_registered_with_a_record() -> None:
    assert set(TYPED) == set(mapping.TYPED_TABLES) == set(RECORDS)


@pytest.mark.parametrize("object_type", sorted(mapping.TYPED_TABLES))
def test_columns_fn_returns_exactly_the_typed_columns(object_type: str) -> None:
    columns = TYPED[object_type].columns
    want = typed_columns(object_type)
    assert set(columns(fixture(object_type))) == want
    assert set(columns({"id": "x", "object": object_type})) == want
    assert set(columns({"id": "x", "object": object_type, "deleted": True})) == want
    record_fields = set(RECORDS[object_type].__dataclass_fields__)
    assert want <= record_fields


def test_invoice_line_columns_match_the_lines_table() -> None:
    structural = {"account", "invoice", "id", "position", "livemode", "data", "updated_at"}
    want = {c.name for c in invoice_lines.columns} - structural
    assert set(mapping.invoice_line_columns(fixture("line_item"))) == want


# -- current shapes (the pinned API version) ---------------------------------------


def test_customer_current() -> None:
    obj = fixture("customer")
    obj.update(email="a@example.com", name="Ada")
    obj["invoice_settings"]["default_payment_method"] = "pm_1"
    cols = mapping.customer_columns(obj)
    assert cols == {
        "email": "a@example.com",
        "name": "Ada",
        "currency": "usd",
        "balance": 0,
        "delinquent": False,
        "default_payment_method": "pm_1",
        "created": at(1234567890),
    }


def test_subscription_current_periods_come_from_items() -> None:
    obj = fixture("subscription")
    assert "current_period_end" not in obj
    item = obj["items"]["data"][0]
    item.update(current_period_start=1_700_000_000, current_period_end=1_702_592_000)
    second = {**item, "id": "si_2", "current_period_start": 1_699_000_000}
    second["current_period_end"] = 1_705_000_000
    obj["items"]["data"].append(second)
    cols = mapping.subscription_columns(obj)
    assert cols["customer"] == "cus_QXg1o8vcGmoR32"
    assert cols["status"] == "active"
    assert cols["current_period_start"] == at(1_699_000_000)  # earliest item start
    assert cols["current_period_end"] == at(1_705_000_000)  # latest item end
    assert cols["cancel_at_period_end"] is True
    assert cols["cancel_at"] == at(1234567890)
    assert cols["canceled_at"] == at(1234567890)
    assert cols["currency"] == "usd"


def test_subscription_item_current() -> None:
    cols = mapping.subscription_item_columns(fixture("subscription_item"))
    assert cols["subscription"] == "sub_1Pgc6xB7WZ01zgkWJMvZp5ja"
    assert cols["price"] == FIXTURES["subscription_item"]["price"]["id"]
    assert cols["product"] == FIXTURES["subscription_item"]["price"]["product"]
    assert cols["quantity"] == 1
    assert cols["current_period_end"] == at(976287773)


def test_invoice_current_reads_parent_and_payments() -> None:
    obj = fixture("invoice")
    obj["parent"] = {
        "type": "subscription_details",
        "subscription_details": {"subscription": "sub_new", "metadata": {}},
        "quote_details": None,
    }
    obj["status"] = "paid"
    obj["payments"] = {
        "object": "list",
        "data": [
            {
                "object": "invoice_payment",
                "is_default": False,
                "status": "canceled",
                "payment": {"type": "payment_intent", "payment_intent": "pi_old"},
            },
            {
                "object": "invoice_payment",
                "is_default": True,
                "status": "paid",
                "payment": {"type": "payment_intent", "payment_intent": {"id": "pi_new"}},
            },
        ],
        "has_more": False,
    }
    cols = mapping.invoice_columns(obj)
    assert cols["subscription"] == "sub_new"
    assert cols["payment_intent"] == "pi_new"
    assert cols["charge"] is None
    assert cols["paid"] is True
    assert cols["amount_due"] == 1000
    assert cols["due_date"] == at(1234567890)
    assert cols["lines_complete"] is (obj["lines"]["has_more"] is False)
    assert cols["customer"] == "cus_QXg1o8vcGmoR32"


def test_invoice_payment_by_charge_only() -> None:
    obj = fixture("invoice")
    obj["payments"] = {
        "data": [{"status": "paid", "payment": {"type": "charge", "charge": "ch_1"}}]
    }
    cols = mapping.invoice_columns(obj)
    assert (cols["payment_intent"], cols["charge"]) == (None, "ch_1")


def test_invoice_line_current() -> None:
    line = fixture("line_item")
    line["pricing"] = {
        "type": "price_details",
        "price_details": {"price": "price_1", "product": "prod_1"},
    }
    line["parent"] = {
        "type": "subscription_item_details",
        "subscription_item_details": {
            "subscription": "sub_1",
            "subscription_item": "si_1",
            "proration": False,
            "invoice_item": None,
        },
        "invoice_item_details": None,
    }
    cols = mapping.invoice_line_columns(line)
    assert cols["price"] == "price_1"
    assert cols["product"] == "prod_1"
    assert cols["subscription"] == "sub_1"
    assert cols["subscription_item"] == "si_1"
    assert cols["proration"] is False
    assert cols["period_start"] == at(1721954054)
    assert cols["amount"] == 1000


def test_dispute_current_and_no_deadline() -> None:
    cols = mapping.dispute_columns(fixture("dispute"))
    assert cols["due_by"] == at(1723679999)
    assert cols["status"] == "warning_needs_response"
    assert cols["charge"] == "ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert cols["has_evidence"] is False
    obj = fixture("dispute")
    obj["evidence_details"]["due_by"] = 0  # no response allowed
    assert mapping.dispute_columns(obj)["due_by"] is None


def test_checkout_session_current() -> None:
    obj = fixture("checkout.session")
    obj["customer_details"]["email"] = "buyer@example.com"
    cols = mapping.checkout_session_columns(obj)
    assert cols["customer_email"] == "buyer@example.com"
    assert cols["payment_intent"] == "pi_1PgafyB7WZ01zgkWSjxsAJo3"
    assert (cols["status"], cols["payment_status"], cols["mode"]) == ("open", "unpaid", "payment")
    assert cols["expires_at"] == at(1234567890)


@pytest.mark.parametrize(
    ("object_type", "column", "value"),
    [
        ("payment_intent", "status", "requires_payment_method"),
        ("payment_intent", "amount", 1099),
        ("charge", "status", FIXTURES["charge"].get("status")),
        ("refund", "status", FIXTURES["refund"].get("status")),
        ("refund", "amount", FIXTURES["refund"].get("amount")),
        ("price", "unit_amount", FIXTURES["price"].get("unit_amount")),
        ("price", "product", FIXTURES["price"].get("product")),
        ("product", "name", FIXTURES["product"].get("name")),
        ("payment_method", "card_last4", FIXTURES["payment_method"]["card"]["last4"]),
    ],
)
def test_current_fixture_values(object_type: str, column: str, value: Any) -> None:
    assert TYPED[object_type].columns(fixture(object_type))[column] == value


# -- older shapes (before basil, 2025-03-31, and older still) -------------------------


def test_subscription_before_basil_has_periods_on_itself() -> None:
    obj = {
        "id": "sub_old",
        "object": "subscription",
        "customer": {"id": "cus_1", "object": "customer"},  # expanded
        "status": "past_due",
        "current_period_start": 1_600_000_000,
        "current_period_end": 1_602_592_000,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "items": {
            "data": [{"id": "si_1", "object": "subscription_item", "price": {"id": "price_1"}}]
        },
        "plan": {"id": "price_1"},
    }
    cols = mapping.subscription_columns(obj)
    assert cols["customer"] == "cus_1"
    assert cols["status"] == "past_due"
    assert cols["current_period_start"] == at(1_600_000_000)
    assert cols["current_period_end"] == at(1_602_592_000)
    assert cols["cancel_at_period_end"] is False
    assert cols["cancel_at"] is None


def test_subscription_item_with_a_plan_only() -> None:
    item = {
        "id": "si_plan",
        "object": "subscription_item",
        "subscription": "sub_1",
        "plan": {"id": "plan_gold", "object": "plan", "product": "prod_gold"},
        "quantity": 3,
    }
    cols = mapping.subscription_item_columns(item)
    assert (cols["price"], cols["product"], cols["quantity"]) == ("plan_gold", "prod_gold", 3)
    assert cols["current_period_end"] is None


def test_invoice_before_basil_has_top_level_links() -> None:
    obj = {
        "id": "in_old",
        "object": "invoice",
        "customer": "cus_1",
        "subscription": {"id": "sub_1", "object": "subscription"},
        "payment_intent": "pi_1",
        "charge": "ch_1",
        "paid": True,
        "status": "paid",
        "currency": "JPY",
        "amount_due": 500,
        "lines": {"object": "list", "data": [], "has_more": True, "total_count": 42},
    }
    cols = mapping.invoice_columns(obj)
    assert cols["subscription"] == "sub_1"
    assert (cols["payment_intent"], cols["charge"], cols["paid"]) == ("pi_1", "ch_1", True)
    assert cols["currency"] == "jpy"
    assert (cols["lines_complete"], cols["lines_total_count"]) == (False, 42)


def test_invoice_line_before_basil() -> None:
    line = {
        "id": "il_old",
        "object": "line_item",
        "type": "subscription",
        "amount": 2000,
        "currency": "usd",
        "price": {"id": "price_1", "product": "prod_1"},
        "subscription": "sub_1",
        "subscription_item": "si_1",
        "proration": True,
        "period": {"start": 1_600_000_000, "end": 1_602_592_000},
        "quantity": 2,
    }
    cols = mapping.invoice_line_columns(line)
    assert (cols["price"], cols["product"]) == ("price_1", "prod_1")
    assert (cols["subscription"], cols["subscription_item"], cols["proration"]) == (
        "sub_1",
        "si_1",
        True,
    )
    assert cols["quantity"] == 2


def test_payment_intent_and_charge_before_basil_name_their_invoice() -> None:
    pi = {
        "id": "pi_1",
        "object": "payment_intent",
        "invoice": "in_1",
        "charges": {"object": "list", "data": [{"id": "ch_1", "object": "charge"}]},
    }
    assert mapping.payment_intent_columns(pi)["invoice"] == "in_1"
    assert mapping.payment_intent_columns(pi)["latest_charge"] == "ch_1"  # before 2022-11-15
    charge = {"id": "ch_1", "object": "charge", "invoice": {"id": "in_1"}, "paid": True}
    assert mapping.charge_columns(charge)["invoice"] == "in_1"


def test_customer_with_a_default_source() -> None:
    cols = mapping.customer_columns(
        {"id": "cus_1", "object": "customer", "default_source": "card_1"}
    )
    assert cols["default_payment_method"] == "card_1"


def test_odd_values_are_none_not_errors() -> None:
    obj = {
        "id": "in_odd",
        "object": "invoice",
        "customer": 42,
        "amount_due": True,  # a bool is not an amount
        "total": 2**70,  # out of range for a BIGINT
        "due_date": 10**20,  # not a representable time
        "created": "yesterday",
        "lines": "many",
        "status": "x" * 1000,
    }
    cols = mapping.invoice_columns(obj)
    assert cols["customer"] is None
    assert cols["amount_due"] is None
    assert cols["total"] is None
    assert cols["due_date"] is None
    assert cols["created"] is None
    assert cols["lines_complete"] is None
    assert cols["status"] == "x" * 64


# -- money ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "major", "exponent"),
    [
        (1099, "usd", Decimal("10.99"), 2),
        (1099, "EUR", Decimal("10.99"), 2),
        (500, "jpy", Decimal("500"), 0),
        (1_000_000, "krw", Decimal("1000000"), 0),
        (5120, "kwd", Decimal("5.120"), 3),
        (1500, "bhd", Decimal("1.500"), 3),
        (500, "isk", Decimal("5.00"), 2),  # two decimals in the API
        (-250, "usd", Decimal("-2.50"), 2),
        (0, "tnd", Decimal("0.000"), 3),
    ],
)
def test_to_major(amount: int, currency: str, major: Decimal, exponent: int) -> None:
    assert currency_exponent(currency) == exponent
    assert to_major(amount, currency) == major
    assert str(to_major(amount, currency)) == str(major)


@given(st.integers(-(10**15), 10**15), st.sampled_from(["usd", "jpy", "kwd", "eur", "clp"]))
def test_to_major_is_exact(amount: int, currency: str) -> None:
    major = to_major(amount, currency)
    assert major * (10 ** currency_exponent(currency)) == amount


# -- never raises -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["usd", "jpy", "active", "paid", "cus_1", "price_1"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "data",
                    "price",
                    "product",
                    "plan",
                    "subscription",
                    "subscription_details",
                    "payment",
                    "payments",
                    "has_more",
                    "total_count",
                    "current_period_end",
                    "current_period_start",
                    "due_by",
                    "card",
                    "recurring",
                    "pricing",
                    "price_details",
                    "parent",
                    "is_default",
                    "status",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)
FIELDS = sorted(
    {name for object_type in mapping.TYPED_TABLES for name in typed_columns(object_type)}
    | {"items", "lines", "evidence_details", "invoice_settings", "customer_details", "charges"}
)


@settings(max_examples=300, deadline=None)
@given(
    object_type=st.sampled_from(sorted(mapping.TYPED_TABLES)),
    obj=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=12),
)
def test_columns_never_raise_on_arbitrary_json(object_type: str, obj: dict[str, Any]) -> None:
    cols = TYPED[object_type].columns(obj)
    assert set(cols) == typed_columns(object_type)
    for name, value in cols.items():
        column = table_for(object_type).table.c[name]
        length = getattr(column.type, "length", None)
        if isinstance(value, str) and length:
            assert len(value) <= length and "\x00" not in value
        if isinstance(value, datetime):
            assert value.tzinfo is not None
        if isinstance(value, int) and not isinstance(value, bool):
            assert -(2**63) <= value < 2**63
    mapping.invoice_line_columns(obj)
