"""``stripeline mirror get/list`` against real SQLite and PostgreSQL mirrors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from stripeline.app import Stripeline
from stripeline.cli import main
from stripeline.db import make_engine
from stripeline.settings import Settings
from tests.test_mirror_query import BASE, customer, deliver, subscription


@pytest.fixture
def app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stripeline]:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", database_url)
    engine: Engine = make_engine(database_url)
    application = Stripeline(Settings(database_url=database_url), engine=engine)
    deliver(
        application,
        ("customer.created", BASE, customer("cus_1", "one@example.com")),
        ("customer.subscription.created", BASE, subscription("sub_a", "cus_1", "active")),
        ("customer.subscription.created", BASE + 1, subscription("sub_b", "cus_1", "canceled")),
        ("customer.subscription.created", BASE + 2, subscription("sub_c", "cus_2", "active")),
        ("coupon.created", BASE, {"id": "co_1", "object": "coupon", "created": BASE}),
    )
    yield application
    engine.dispose()


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_get_prints_stripes_json(app: Stripeline) -> None:
    result = run("mirror", "get", "sub_a", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["id"], data["object"], data["customer"]) == ("sub_a", "subscription", "cus_1")
    assert json.loads(run("mirror", "get", "co_1", "--json").output)["object"] == "coupon"
    human = run("mirror", "get", "cus_1")
    assert human.exit_code == 0 and "one@example.com" in human.output


def test_get_exits_1_when_absent(app: Stripeline) -> None:
    result = run("mirror", "get", "sub_nope", "--json")
    assert result.exit_code == 1
    assert "no object sub_nope in the mirror" in result.output
    assert run("mirror", "get", "sub_a", "--account", "acct_other").exit_code == 1


def test_list_filters(app: Stripeline) -> None:
    result = run("mirror", "list", "subscriptions", "--customer", "cus_1", "--json")
    assert result.exit_code == 0, result.output
    assert [s["id"] for s in json.loads(result.output)] == ["sub_b", "sub_a"]
    result = run("mirror", "list", "subscription", "--status", "active", "--json")
    assert {s["id"] for s in json.loads(result.output)} == {"sub_a", "sub_c"}
    result = run("mirror", "list", "subscription", "--limit", "1", "--json")
    assert len(json.loads(result.output)) == 1
    assert [c["id"] for c in json.loads(run("mirror", "list", "coupon", "--json").output)] == [
        "co_1"
    ]


def test_list_table(app: Stripeline) -> None:
    result = run("mirror", "list", "subscriptions", "--customer", "cus_1")
    assert result.exit_code == 0, result.output
    assert "sub_a" in result.output and "sub_b" in result.output
    assert "current_period_end" in result.output
    end = datetime.fromtimestamp(BASE + 86_400, UTC).strftime("%Y-%m-%d")
    assert end in result.output
    assert "no invoice objects match" in run("mirror", "list", "invoices").output


def test_list_rejects_filters_a_type_does_not_have(app: Stripeline) -> None:
    assert run("mirror", "list", "coupon", "--customer", "cus_1").exit_code == 2
    assert run("mirror", "list", "customers", "--status", "active").exit_code == 2
