"""The application's own tables in the test database (``stripeline_schema``),
and the user's app object pointed at that database for the test: a handler
writing through either lands there, never in ``./stripeline.db``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect
from stripeline.testing import StripelineEnv, make_event
from stripeline.testing.plugin import _create_schema


class Base(DeclarativeBase):
    pass


class Grant(Base):
    __tablename__ = "grants"
    customer: Mapped[str] = mapped_column(String(64), primary_key=True)


#: The user's app: handlers registered on a module-level object with default
#: settings (its database would be ./stripeline.db).
billing = Stripeline()


@billing.on("customer.created")
def grant_access(event: ReceivedEvent) -> None:
    event.session.add(Grant(customer=event.object["id"]))


def has_access(customer_id: str) -> bool:
    """Application code reading through the module-level app's database."""
    with connect(billing.engine, readonly=True) as conn:
        return conn.scalar(select(Grant.customer).where(Grant.customer == customer_id)) is not None


@pytest.fixture
def stripeline_base_app() -> Stripeline:
    return billing


@pytest.fixture
def stripeline_schema() -> Any:
    return Base


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


def test_handlers_write_the_applications_tables_in_the_test_database(
    in_tmp_cwd: Path, stripeline_env: StripelineEnv
) -> None:
    customer = stripeline_env.client.v1.customers.create({"email": "g@example.com"})
    stripeline_env.settle()
    with connect(stripeline_env.app.engine, readonly=True) as conn:
        assert conn.scalars(select(Grant.customer)).all() == [customer.id]
    # The application's own code, through its module-level app, sees the test database.
    assert has_access(customer.id)
    assert billing.once("welcome-mail") and not billing.once("welcome-mail")
    with connect(stripeline_env.app.engine, readonly=True) as conn:
        keys = conn.scalars(text("SELECT key FROM stripeline_once")).all()
    assert "welcome-mail" in keys
    # The flows' writes, from the module-level app, reach the test's sandbox
    # account and are recorded in the test database.
    params = {"email": "flow@example.com"}
    made = billing.calls.run(
        "customer:create",
        "flow",
        params,
        lambda client, key: client.v1.customers.create(params, {"idempotency_key": key}),  # type: ignore[arg-type]
    )
    assert stripeline_env.client.v1.customers.retrieve(made["id"]).email == "flow@example.com"
    assert stripeline_env.app.calls.record("customer:create", "flow") is not None
    assert not (in_tmp_cwd / "stripeline.db").exists()


def test_the_users_app_is_given_back_after_the_test(
    in_tmp_cwd: Path, stripeline_app: Stripeline
) -> None:
    assert billing.engine is stripeline_app.engine
    assert billing.settings is stripeline_app.settings


def test_the_users_app_is_untouched_outside_tests() -> None:
    assert billing.__dict__["_engine"] is None and billing.__dict__["_settings"] is None


def test_schema_forms(tmp_path: Path) -> None:
    from stripeline.db import make_engine

    engine: Engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    metadata = MetaData()
    _create_schema(engine, None)
    _create_schema(engine, Base.metadata)
    made: list[Engine] = []
    _create_schema(engine, made.append)
    assert made == [engine]
    with pytest.raises(TypeError, match="MetaData"):
        _create_schema(engine, 42)
    _create_schema(engine, metadata)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM grants")).scalar_one() == 0
    engine.dispose()
    assert make_event("customer.created")["type"] == "customer.created"
