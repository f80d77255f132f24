"""Which of two states of a Stripe object is the newer: pure rules.

Stripe's events carry a ``created`` time in whole seconds and arrive in any
order, so a mirror must order states itself. A state's *marker* is the second
it describes (the event's ``created``, or the time a re-fetch was answered)
and its *rank* orders states inside one second, where Stripe's own rules make
the order known:

* the kind of event: an object's ``*.created`` state comes before any other,
  and its ``*.deleted`` state after every other;
* the object's status, where its state machine only moves one way
  (an invoice goes draft → open → paid or void, never back; a dispute
  needs_response → under_review → won or lost). Statuses that can go back
  and forth (a subscription between active and past_due, a PaymentIntent
  between requires_action and requires_payment_method) share one rank.

``rank = kind * 10 + status rank``. Two different states with the same marker
and rank cannot be ordered from what they carry: the mirror then asks Stripe
(re-fetch) instead of guessing, so the newer state is never dropped.

A re-fetch knows one more thing: the state the mirror held when the read
started (its ``over``). Stripe had emitted that state's event before it was
received, so the read, which started later, shows it or something newer: a
read wins over the state it started after, whatever their markers, and is
stamped past it (``fetch_marker``). Its marker follows the clock the events
come from, not only ours: after a clock was advanced (the sandbox's, or a
Stripe test clock, whose events carry the clock's time) a read stamped with
the wall clock alone would lose for good against the events it settles.

An object on a Stripe test clock is the exception: its events carry the
test clock's time, which may be frozen or far behind ours (a clock started
in the past), so a read stamped with our clock would outrank every later
event of the object for good. Such a read is stamped with the second of the
state it started after (``clock_read_marker``): it still wins over that
state (by ``over``), loses to later seconds, and is compared by rank and
data with the events of its own second (a difference is a tie, read again).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

KIND_CREATED = 0
KIND_CHANGED = 1
KIND_DELETED = 2

#: Status ranks of objects whose state machine only moves forward (or to a
#: terminal status). Statuses not listed rank 0.
STATUS_RANKS: dict[str, dict[str, int]] = {
    "invoice": {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3},
    "dispute": {
        "warning_needs_response": 0,
        "needs_response": 0,
        "warning_under_review": 1,
        "under_review": 1,
        "warning_closed": 2,
        "won": 2,
        "lost": 2,
        "prevented": 2,
    },
    "refund": {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 1, "canceled": 1},
    "charge": {"pending": 0, "succeeded": 1, "failed": 1},
    "checkout.session": {"open": 0, "complete": 1, "expired": 1},
    # Only the ends are ordered: every other status can be left and re-entered.
    "payment_intent": {"succeeded": 1, "canceled": 1},
    "setup_intent": {"succeeded": 1, "canceled": 1},
    "subscription": {"incomplete": 0, "incomplete_expired": 2, "canceled": 2},
}
#: Subscription statuses reachable from ``incomplete`` (rank 1): any of them
#: comes after it; they may follow one another in any order.
_SUBSCRIPTION_MIDDLE = ("trialing", "active", "past_due", "unpaid", "paused")


#: ``*.deleted`` events that end an object without deleting it:
#: ``customer.subscription.deleted`` carries a ``canceled`` subscription, which
#: Stripe still returns and lists. Its state is a change (``canceled`` ranks
#: after every other status of the second), not a deletion.
ENDED_NOT_DELETED = frozenset({"customer.subscription.deleted"})


def kind_of(event_type: str | None) -> int:
    """The kind rank of an event type (None: a re-fetched state)."""
    if event_type is None or event_type in ENDED_NOT_DELETED:
        return KIND_CHANGED
    if event_type.endswith(".deleted"):
        return KIND_DELETED
    if event_type.endswith(".created"):
        return KIND_CREATED
    return KIND_CHANGED


def status_rank(obj: dict[str, Any]) -> int:
    ranks = STATUS_RANKS.get(str(obj.get("object")))
    status = obj.get("status")
    if ranks is None or not isinstance(status, str):
        return 0
    if obj.get("object") == "subscription" and status in _SUBSCRIPTION_MIDDLE:
        return 1
    return ranks.get(status, 0)


def rank(event_type: str | None, obj: dict[str, Any]) -> int:
    """The rank of ``obj``'s state inside its second (see the module doc)."""
    kind = KIND_DELETED if obj.get("deleted") is True else kind_of(event_type)
    return kind * 10 + status_rank(obj)


#: How far apart, in seconds, an event's state and a fetched state must be
#: to be ordered by their markers. Events are stamped by Stripe's clock and
#: reads by ours: within this slack, a difference in data is a tie.
FETCH_SLACK_SECONDS = 1


class Decision(Enum):
    APPLY = "apply"  # the incoming state is newer: write it
    KEEP = "keep"  # the held state is newer: drop the incoming one
    SAME = "same"  # the same state again: nothing to do
    TIE = "tie"  # cannot be ordered: ask Stripe


@dataclass(frozen=True, slots=True)
class Seen:
    """What ordering needs of a state: its marker, rank, origin and data.

    ``over``: for a re-fetched state, the (marker, rank) the mirror held for
    the object when the read started (None: nothing was held, or not a read).
    """

    marker: int
    rank: int
    fetched: bool
    data: dict[str, Any] | None = None
    over: tuple[int, int] | None = None


def fetch_marker(fetched_at: int, over: tuple[int, int] | None) -> int:
    """The marker of a state read at ``fetched_at`` (our clock) while the
    mirror held ``over``: past the held state's second, so the read wins
    against it (and against anything older) even when the events' clock runs
    ahead of ours, and never behind our clock."""
    if over is None:
        return fetched_at
    return max(fetched_at, over[0] + 1)


def clock_read_marker(over: tuple[int, int] | None, created: object) -> int:
    """The marker of a read of an object on a Stripe test clock (see the
    module doc): the held state's second, or with nothing held the object's
    ``created`` (the clock's time when it was made; 0 when it has none).
    Events of the object older than the read may then win over it for a
    while; the newest of them carries what the read showed, so the mirror
    still ends at Stripe's state."""
    if over is not None:
        return over[0]
    if isinstance(created, int) and not isinstance(created, bool) and created >= 0:
        return created
    return 0


def _read_after(held: Seen, incoming: Seen) -> bool:
    """``incoming`` was read after ``held`` was written: it shows it or newer."""
    return incoming.over is not None and (held.marker, held.rank) == incoming.over


def needs_data(held: Seen, incoming: Seen) -> bool:
    """Whether ``decide`` must compare the two states' data."""
    if _read_after(held, incoming):
        return False
    if (
        held.fetched != incoming.fetched
        and abs(held.marker - incoming.marker) <= FETCH_SLACK_SECONDS
    ):
        return True
    return (held.marker, held.rank) == (incoming.marker, incoming.rank)


def decide(held: Seen | None, incoming: Seen) -> Decision:
    """Order the incoming state against the held one (see the module doc).

    A read wins over the state held when it started, and a deletion over
    any state that is not one. Otherwise markers and
    ranks decide; where they cannot (equal, or an event and a read too close
    in time to trust two clocks), equal data is ``SAME`` and different data a
    ``TIE``.
    """
    if held is None or _read_after(held, incoming):
        return Decision.APPLY
    if incoming.rank // 10 == KIND_DELETED and held.rank // 10 != KIND_DELETED:
        # Deleted is for good (ids are never reused): a deletion comes after
        # any state that is not one, even a read stamped past it whose data
        # equals the deleted object's last state (``customer.deleted`` carries it).
        return Decision.APPLY
    if needs_data(held, incoming):
        return Decision.SAME if held.data == incoming.data else Decision.TIE
    if (incoming.marker, incoming.rank) > (held.marker, held.rank):
        return Decision.APPLY
    return Decision.KEEP
