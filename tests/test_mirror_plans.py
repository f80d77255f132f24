"""The mirror's held-marker read stays a primary-key lookup as its tables grow.

Before it writes a group of states, the mirror reads the markers it holds for
their ids (``_store._held``: ``account = ? AND id IN (…)``). Two things made
that read scan a whole table on PostgreSQL, each measured in a new database's
first backfill: a table never analysed (the planner takes ``account = ''``
to be rare and reads every row of the account through whichever index leads
with it), and a generic plan that psycopg's prepared statement kept from
when the table was small (a sequential scan, kept however large the table
grew). These tests build tables of 20,000 customers of the platform account
and check what is planned and what is prepared; SQLite keeps no statistics
unless asked and plans the primary key either way."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from stripeline.db import connect, make_engine
from stripeline.inbox import utcnow
from stripeline.mirror._store import State, apply_states, state_from_event
from tests.plans import explained, sent

ROWS = 20_000


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    made = make_engine(postgres_url)
    yield made
    made.dispose()


def _fill_customers(engine: Engine, count: int) -> None:
    """``count`` customers of the platform account (``cus_000001`` …), each
    held at marker 100, written in one statement and never analysed."""
    postgres = engine.dialect.name == "postgresql"
    numbers = (
        "generate_series(1, :count) AS g(n)"
        if postgres
        else "(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :count)"
        " SELECT n FROM g) AS g"
    )
    name = "'cus_' || lpad(g.n::text, 6, '0')" if postgres else "printf('cus_%06d', g.n)"
    data = "CAST('{}' AS jsonb)" if postgres else "'{}'"
    with connect(engine) as conn:
        conn.execute(
            text(
                "INSERT INTO stripeline_customers (account, id, livemode, data, marker,"  # noqa: S608
                " marker_rank, deleted, updated_at, email)"
                f" SELECT '', {name}, false, {data}, 100, 0, false, :now,"
                f" {name} || '@example.com' FROM {numbers}"
            ),
            {"count": count, "now": utcnow()},
        )


def _states(numbers: range) -> list[State]:
    """A state of each customer: newer than the one held (marker 200) for
    odd numbers, older (50) for even ones."""
    return [
        state_from_event(
            {"id": f"cus_{n:06d}", "object": "customer", "email": f"new{n}@example.com"},
            account=None,
            livemode=False,
            created=200 if n % 2 else 50,
            event_type="customer.updated",
            event_id=f"evt_{n}",
        )
        for n in numbers
    ]


def _apply(engine: Engine, states: list[State], *, commit: bool) -> None:
    with connect(engine) as conn:
        result = apply_states(conn, states, now=utcnow())
        if not commit:
            conn.rollback()
    # Every id was found held: the newer states written, the older ones kept.
    newer = sum(1 for state in states if state.marker == 200)
    assert (result.applied, result.kept) == (newer, len(states) - newer)


def _account_statistics(engine: Engine) -> int:
    with connect(engine, readonly=True) as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stats WHERE tablename = 'stripeline_customers'"
                    " AND attname = 'account'"
                )
            ).scalar_one()
        )


@pytest.mark.parametrize("analysed", [False, True], ids=["no statistics", "analysed"])
def test_held_markers_are_read_by_primary_key(engine: Engine, analysed: bool) -> None:
    _fill_customers(engine, ROWS)
    if analysed:
        with connect(engine) as conn:
            conn.execute(text("ANALYZE stripeline_customers"))
    states = _states(range(ROWS - 200, ROWS - 75))
    if engine.dialect.name == "postgresql":
        # The first write to a never-analysed table analyses it (below); the
        # lookups after it are planned with the statistics.
        _apply(engine, _states(range(1, 3)), commit=True)
    with sent(engine, "SELECT") as ran:
        _apply(engine, states, commit=False)
    held = [(sql, values) for sql, values in ran if "marker_rank" in sql]
    assert held, "the held markers were not read"
    for plan in explained(engine, held):
        if engine.dialect.name == "postgresql":
            # One index scan of the primary key, on both columns.
            assert "Index Scan using pk_stripeline_customers" in plan, plan
            assert "Index Cond: (((account)::text = ''::text) AND ((id)::text = ANY" in plan, plan
        else:
            assert "sqlite_autoindex_stripeline_customers_1 (account=? AND id=?)" in plan, plan
        assert "ix_stripeline_customers_email" not in plan, plan


@pytest.mark.postgres
def test_a_never_analysed_table_is_analysed_by_its_first_write(postgres_engine: Engine) -> None:
    _fill_customers(postgres_engine, ROWS)
    assert _account_statistics(postgres_engine) == 0
    _apply(postgres_engine, _states(range(1, 5)), commit=True)
    assert _account_statistics(postgres_engine) == 1
    with connect(postgres_engine, readonly=True) as conn:
        reltuples = conn.execute(
            text("SELECT reltuples FROM pg_class WHERE relname = 'stripeline_customers'")
        ).scalar_one()
    assert reltuples == ROWS


@pytest.mark.postgres
def test_the_held_read_is_never_a_prepared_generic_plan(postgres_engine: Engine) -> None:
    """psycopg prepares a statement after its fifth execution; the held read is
    planned for its own ids on every one, on the same connection."""
    _fill_customers(postgres_engine, 2_000)
    with connect(postgres_engine) as conn:
        for start in range(1, 1_000, 100):
            apply_states(conn, _states(range(start, start + 100)), now=utcnow())
        prepared = conn.execute(text("SELECT statement FROM pg_prepared_statements")).all()
        conn.rollback()
    statements = [row.statement for row in prepared]
    assert statements, "nothing was prepared: the check below would prove nothing"
    assert not [sql for sql in statements if "marker_rank, event_id IS NULL" in sql], statements


@pytest.mark.postgres
def test_a_table_being_analysed_elsewhere_is_left_to_it(postgres_engine: Engine) -> None:
    """Another session holds the table's SHARE UPDATE EXCLUSIVE lock (as an
    ANALYZE or VACUUM does): the write goes on after at most 50 ms without
    analysing, and the transaction's own ``lock_timeout`` is as it was."""
    _fill_customers(postgres_engine, 500)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with connect(postgres_engine) as other:
            other.execute(text("LOCK TABLE stripeline_customers IN SHARE UPDATE EXCLUSIVE MODE"))
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(30)
        with connect(postgres_engine) as conn:
            conn.execute(text("SELECT set_config('lock_timeout', '7s', true)"))
            started = time.monotonic()
            result = apply_states(conn, _states(range(1, 11)), now=utcnow())
            waited = time.monotonic() - started
            setting = conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
        assert (result.applied, result.kept) == (5, 5)
        assert setting == "7s"
        assert waited < 5, waited  # not the 7 s this transaction would wait for a lock
    finally:
        release.set()
        holder.join()
    assert _account_statistics(postgres_engine) == 0
