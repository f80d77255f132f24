"""A re-fetch follows the clock the events come from.

Events of an advanced clock (the sandbox's, or a Stripe test clock's) carry
``created`` times ahead of ours. A read stamped with our clock alone would
lose for good against them; a read is stamped past the state the mirror held
when it started, and wins over it (``core.ordering``). The convergence
property of ``test_mirror_convergence`` must hold with such clocks too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from stripeline.core.ordering import (
    Decision,
    Seen,
    clock_read_marker,
    decide,
    fetch_marker,
    needs_data,
)
from tests.test_mirror_convergence import BASE, run, scenario

#: Forty days ahead of now: a clock advanced past a monthly renewal.
AHEAD = int(time.time()) + 40 * 86400


def shifted(histories: list[Any], by: int) -> list[Any]:
    return [[(t, created + by, obj) for t, created, obj in history] for history in histories]


def test_a_read_is_stamped_past_the_state_it_started_after() -> None:
    assert fetch_marker(1_000, None) == 1_000
    assert fetch_marker(1_000, (900, 11)) == 1_000  # our clock is ahead: ours
    assert fetch_marker(1_000, (5_000, 11)) == 5_001  # the events' clock is ahead: past it


def test_a_read_on_a_test_clock_is_stamped_with_the_clocks_time() -> None:
    """Our clock says nothing of a test clock's (tests/test_mirror_test_clock.py)."""
    assert clock_read_marker((BASE, 11), BASE - 5) == BASE  # the state it started after
    assert clock_read_marker(None, BASE) == BASE  # nothing held: the object's creation
    for created in (None, "1700000000", True, -1, 1.5):
        assert clock_read_marker(None, created) == 0  # no time to go by: any event wins
    # Stamped so, the read still wins over the state it started after…
    held = Seen(BASE, 11, fetched=False, data={"status": "active"})
    read = Seen(clock_read_marker((BASE, 11), BASE), 11, True, {"status": "past_due"}, (BASE, 11))
    assert decide(held, read) is Decision.APPLY
    # …and a later event of the clock's (a day on) wins over the read.
    later = Seen(BASE + 86_400, 11, fetched=False, data={"status": "active"})
    assert decide(Seen(read.marker, read.rank, True, read.data), later) is Decision.APPLY


def test_a_read_wins_over_the_state_it_started_after() -> None:
    held = Seen(AHEAD, 11, fetched=False, data={"status": "active"})
    read = Seen(
        fetch_marker(int(time.time()), (AHEAD, 11)),
        11,
        fetched=True,
        data={"status": "past_due"},
        over=(AHEAD, 11),
    )
    assert not needs_data(held, read)
    assert decide(held, read) is Decision.APPLY
    # Without knowing what it started after, a read stamped with our clock loses.
    late = Seen(int(time.time()), 11, fetched=True, data={"status": "past_due"})
    assert decide(held, late) is Decision.KEEP


def test_a_newer_state_written_during_the_read_is_not_overwritten() -> None:
    """The held state changed while the read ran: the usual rules decide."""
    newer = Seen(AHEAD + 60, 11, fetched=False, data={"status": "active"})
    read = Seen(AHEAD + 1, 11, fetched=True, data={"status": "past_due"}, over=(AHEAD, 11))
    assert decide(newer, read) is Decision.KEEP
    # An event of the read's second that came in after it started: Stripe decides.
    same_second = Seen(AHEAD, 11, fetched=False, data={"status": "active"})
    assert decide(Seen(AHEAD + 1, 11, True, {"status": "past_due"}), same_second) is Decision.TIE


def test_a_tie_on_an_advanced_clock_is_settled_by_one_read(engine: Engine) -> None:
    history = [
        [
            ("customer.updated", AHEAD, {"id": "cus_t", "object": "customer", "v": 1}),
            ("customer.updated", AHEAD, {"id": "cus_t", "object": "customer", "v": 2}),
        ]
    ]
    for order in ([0, 1], [1, 0]):
        mirror, reads = run(engine, "payload", history, order, [])
        assert mirror == {"cus_t": {"id": "cus_t", "object": "customer", "v": 2}}
        assert reads == 1


@pytest.mark.parametrize("policy", ["payload", "refetch"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenario())
def test_convergence_holds_on_an_advanced_clock(engine: Engine, policy: str, case: Any) -> None:
    histories, delivery, cuts = case
    histories = shifted(histories, AHEAD - BASE)
    in_order = list(range(sum(len(h) for h in histories)))
    expected, _ = run(engine, policy, histories, in_order, [])
    actual, _ = run(engine, policy, histories, delivery, cuts)
    assert actual == expected
    for history in histories:
        event_type, _, final = history[-1]
        want = "deleted" if event_type.endswith(".deleted") else final
        assert actual[final["id"]] == want
