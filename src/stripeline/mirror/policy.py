"""The mirror policy: what the worker does with the objects events carry.

An object read for a thin event (``READ_KEY`` in the body) is applied as a
read, whatever the policy. Under the ``payload`` policy an event's object is applied as the state it
describes (``_store.apply_states`` keeps the newest); under ``refetch`` the
object is queued to be read from the API instead (``refetch``). States that
cannot be ordered from what events carry (ties) are queued too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection

from stripeline.mirror import erasure, refetch
from stripeline.mirror._store import (
    ENTITLEMENT_SUMMARY,
    State,
    apply_states,
    mirrorable,
    state_from_event,
    state_from_fetch,
)

#: The key under which a thin event's body carries the read of its object
#: (``sync.thin`` sets it: ``fetched_at``, ``over``, ``gone``).
READ_KEY = "stripeline_read"


class EventObject(NamedTuple):
    """What the policy needs of one event: its id, type, ``created``, account and body."""

    id: str
    type: str
    created: int
    account: str | None
    body: dict[str, Any]


def apply_events(
    conn: Connection,
    events: Sequence[EventObject],
    *,
    policy_for: Callable[[str], str],
    now: datetime,
    window: float = refetch.DEFAULT_WINDOW_SECONDS,
) -> None:
    """Apply events' objects to the mirror by each type's policy; queue
    re-fetches for the ``refetch`` policy and for states that tie. Events
    about an erased customer's objects are scrubbed first (``erasure``)."""
    erasure.guard_events(conn, events)
    states: list[State] = []
    wanted: list[refetch.Wanted] = []
    for event in events:
        obj = event.body.get("data", {}).get("object")
        if not mirrorable(obj):
            continue
        livemode = bool(event.body.get("livemode"))
        read = event.body.get(READ_KEY)
        if isinstance(read, dict):
            # A thin event's object, read from the API: applied as a read.
            over = read.get("over")
            states.append(
                state_from_fetch(
                    None if read.get("gone") else obj,
                    object_type=obj["object"],
                    object_id=obj["id"],
                    account=event.account,
                    livemode=livemode,
                    fetched_at=int(read["fetched_at"]),
                    over=(int(over[0]), int(over[1])) if over else None,
                )
            )
            continue
        # An entitlement summary has no API read: it is always applied.
        if obj["object"] != ENTITLEMENT_SUMMARY and policy_for(obj["object"]) == "refetch":
            wanted.append(refetch.Wanted(event.account or "", obj["id"], obj["object"], livemode))
            continue
        states.append(
            state_from_event(
                obj,
                account=event.account,
                livemode=livemode,
                created=event.created,
                event_type=event.type,
                event_id=event.id,
            )
        )
    result = apply_states(conn, states, now=now)
    # Two different summaries of one customer in one second cannot be ordered
    # nor read again: the one held stays (see docs/entitlements.md).
    wanted.extend(
        refetch.Wanted(t.account, t.id, t.object_type, t.livemode)
        for t in result.ties
        if t.object_type != ENTITLEMENT_SUMMARY
    )
    if wanted:
        refetch.request(conn, wanted, now=now, window=window)
