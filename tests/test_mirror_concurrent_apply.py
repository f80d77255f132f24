"""Two transactions writing the same object at once (several workers on
PostgreSQL): a state the guarded upsert refuses because the other committed
first is decided again, so that two different states of the same second are
a tie to re-fetch, never a silent loss. (Found by ``make proof``'s duplicates
suite: one customer's metadata stayed stale with two workers.)"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from stripeline.db.engine import connect, make_engine
from stripeline.mirror._store import ApplyResult, apply_states, get_object, state_from_event

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def customer_updated(event_id: str, metadata: dict[str, str]) -> Any:
    obj = {"id": "cus_race", "object": "customer", "metadata": metadata}
    return state_from_event(
        obj,
        account=None,
        livemode=False,
        created=1_800_000_000,
        event_type="customer.updated",
        event_id=event_id,
    )


@pytest.mark.parametrize("first_exists", [False, True], ids=["insert", "update"])
def test_the_later_writer_of_an_equal_marker_reports_a_tie(
    postgres_url: str, first_exists: bool
) -> None:
    engine = make_engine(postgres_url)
    try:
        _race(engine, first_exists)
    finally:
        engine.dispose()


def _race(engine: Engine, first_exists: bool) -> None:
    if first_exists:
        with connect(engine) as conn:
            older = customer_updated("evt_0", {"v": "0"})
            older = dataclasses.replace(older, marker=older.marker - 10)
            apply_states(conn, [older], now=NOW)
    a = customer_updated("evt_a", {"v": "a"})
    b = customer_updated("evt_b", {"v": "b"})
    b_result: list[ApplyResult] = []
    b_started = threading.Event()

    def write_b() -> None:
        with connect(engine) as conn:
            b_started.set()
            # Reads the held state (A has not committed), decides to apply,
            # and its upsert waits on A's row lock.
            b_result.append(apply_states(conn, [b], now=NOW))

    with connect(engine) as conn_a:
        result_a = apply_states(conn_a, [a], now=NOW)
        assert result_a.applied == 1
        thread = threading.Thread(target=write_b)
        thread.start()
        assert b_started.wait(10)
        thread.join(0.5)
        assert thread.is_alive()  # B waits on A's row
    thread.join(10)
    assert not thread.is_alive()
    [result_b] = b_result
    assert result_b.applied == 0
    assert [t.event_id for t in result_b.ties] == ["evt_b"]
    with connect(engine, readonly=True) as conn:
        held = get_object(conn, "cus_race")
    assert held is not None and held["metadata"] == {"v": "a"}
