"""Every writer of the mirror holds its objects' advisory locks (PostgreSQL):
``apply_states`` (the re-fetch loop, backfill, ``verify --repair``) takes
them itself, so a worker's group cannot take them meanwhile, nor the other
way round; a subscription's items are locked with it. SQLite takes none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from stripeline.db.engine import connect, make_engine
from stripeline.inbox import utcnow
from stripeline.mirror._store import (
    apply_states,
    lock_objects,
    object_key,
    object_keys,
    state_from_fetch,
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def subscription() -> dict[str, object]:
    return {
        "id": "sub_1",
        "object": "subscription",
        "customer": "cus_1",
        "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item"}]},
    }


def test_the_keys_of_an_object_include_a_subscriptions_items() -> None:
    assert object_keys("acct_1", subscription()) == {
        object_key("acct_1", "sub_1"),
        object_key("acct_1", "si_1"),
    }
    assert object_keys(None, {"id": "cus_1", "object": "customer"}) == {object_key("", "cus_1")}
    assert object_keys(None, {"no": "object"}) == set()
    # The account is part of the key.
    assert object_key("acct_1", "cus_1") != object_key("acct_2", "cus_1")


def test_apply_states_holds_its_objects_until_the_transaction_ends(engine: Engine) -> None:
    state = state_from_fetch(
        subscription(),
        object_type="subscription",
        object_id="sub_1",
        account=None,
        livemode=False,
        fetched_at=1_800_000_000,
    )
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as writer, engine.connect() as other:
        writer.begin()
        assert apply_states(writer, [state], now=utcnow()).applied == 1
        if postgres:
            other.begin()
            # Held by the writer's transaction: not free at once.
            assert not lock_objects(other, [object_key("", "sub_1")], wait=False)
            assert not lock_objects(other, [object_key("", "si_1")], wait=False)
            assert lock_objects(other, [object_key("", "cus_unrelated")], wait=False)
            other.rollback()
        writer.commit()
        other.begin()
        assert lock_objects(other, object_keys(None, subscription()), wait=False)
        if postgres:
            held = other.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid()"
                )
            ).scalar_one()
            assert held == 2
        other.rollback()
    with connect(engine) as conn:
        # A new transaction holds nothing of the last one's.
        assert lock_objects(conn, object_keys(None, subscription()), wait=False)
