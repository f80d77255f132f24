"""core.ordering and core.ratelimit: the pure rules, case by case."""

from __future__ import annotations

import pytest

from stripeline.core.ordering import Decision, Seen, decide, kind_of, rank, status_rank
from stripeline.core.ratelimit import TokenBucket


def test_kinds() -> None:
    assert kind_of("customer.created") < kind_of("customer.updated") < kind_of("customer.deleted")
    assert kind_of(None) == kind_of("invoice.paid")


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"object": "invoice", "status": "draft"}, {"object": "invoice", "status": "open"}),
        ({"object": "invoice", "status": "open"}, {"object": "invoice", "status": "paid"}),
        ({"object": "invoice", "status": "uncollectible"}, {"object": "invoice", "status": "void"}),
        (
            {"object": "dispute", "status": "needs_response"},
            {"object": "dispute", "status": "under_review"},
        ),
        ({"object": "dispute", "status": "under_review"}, {"object": "dispute", "status": "lost"}),
        (
            {"object": "subscription", "status": "incomplete"},
            {"object": "subscription", "status": "active"},
        ),
        (
            {"object": "subscription", "status": "past_due"},
            {"object": "subscription", "status": "canceled"},
        ),
        (
            {"object": "payment_intent", "status": "requires_capture"},
            {"object": "payment_intent", "status": "succeeded"},
        ),
        ({"object": "refund", "status": "pending"}, {"object": "refund", "status": "succeeded"}),
    ],
)
def test_one_way_statuses_are_ordered(earlier: dict[str, str], later: dict[str, str]) -> None:
    assert status_rank(earlier) < status_rank(later)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            {"object": "subscription", "status": "active"},
            {"object": "subscription", "status": "past_due"},
        ),
        (
            {"object": "payment_intent", "status": "requires_action"},
            {"object": "payment_intent", "status": "requires_payment_method"},
        ),
        ({"object": "customer"}, {"object": "customer", "status": "whatever"}),
    ],
)
def test_statuses_that_go_back_and_forth_are_not_ordered(
    a: dict[str, str], b: dict[str, str]
) -> None:
    assert status_rank(a) == status_rank(b)


def test_deleted_outranks_everything() -> None:
    assert rank(None, {"object": "customer", "deleted": True}) > rank(
        "customer.updated", {"object": "customer"}
    )


def seen(marker: int, r: int = 10, fetched: bool = False, v: int = 0) -> Seen:
    return Seen(marker, r, fetched, {"v": v})


def test_decide() -> None:
    assert decide(None, seen(1)) is Decision.APPLY
    assert decide(seen(1), seen(2, v=1)) is Decision.APPLY
    assert decide(seen(2), seen(1, v=1)) is Decision.KEEP
    assert decide(seen(1, 10), seen(1, 11, v=1)) is Decision.APPLY
    assert decide(seen(1), seen(1)) is Decision.SAME
    assert decide(seen(1), seen(1, v=1)) is Decision.TIE
    # A deletion comes after any other state, even one stamped later with equal data.
    assert decide(seen(2, 10, fetched=True), seen(1, 20)) is Decision.APPLY
    assert decide(seen(2, 20), seen(1, 20)) is Decision.KEEP


def test_an_event_and_a_read_close_in_time_are_a_tie_unless_equal() -> None:
    # Two clocks: within a second of each other, the markers cannot be trusted.
    assert decide(seen(100, fetched=True), seen(101, v=1)) is Decision.TIE
    assert decide(seen(101), seen(100, fetched=True, v=1)) is Decision.TIE
    assert decide(seen(100, fetched=True), seen(101)) is Decision.SAME
    assert decide(seen(100, fetched=True), seen(102, v=1)) is Decision.APPLY
    assert decide(seen(100, fetched=True), seen(98, v=1)) is Decision.KEEP
    # Two reads share one clock.
    assert decide(seen(100, fetched=True), seen(101, fetched=True, v=1)) is Decision.APPLY


def test_token_bucket_allows_rate_per_second() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(10, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(12):
        bucket.acquire()
    # 2 from the burst, then 10 more at 10/s: one second of waiting in all.
    assert now[0] == pytest.approx(1.0)
    assert all(s == pytest.approx(0.1) for s in slept)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_a_canceled_subscription_is_a_change_not_a_deletion() -> None:
    """``customer.subscription.deleted`` ends the subscription (Stripe still
    lists it, canceled): it ranks as a change to the final status, after any
    other state of its second, and is not a deletion."""
    canceled = {"object": "subscription", "status": "canceled"}
    assert kind_of("customer.subscription.deleted") == 1
    assert rank("customer.subscription.deleted", canceled) == 12
    assert rank("customer.subscription.updated", {**canceled, "status": "active"}) == 11
    assert kind_of("customer.deleted") == 2
