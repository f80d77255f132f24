"""The mirror: the latest known state of every Stripe object, in SQL.

States come from events (``state_from_event``) and from the API
(``state_from_fetch``); ``apply_states`` keeps, for each object, the newest
one by the rules of ``stripeline.core.ordering``, and reports the states it
cannot order so that they are settled by asking Stripe.
"""

from __future__ import annotations

from stripeline.mirror._store import (
    ApplyResult,
    State,
    apply_states,
    get_object,
    mirrorable,
    state_from_event,
    state_from_fetch,
)
from stripeline.mirror.tables import GENERIC, MirrorTable, register, table_for

__all__ = [
    "GENERIC",
    "ApplyResult",
    "MirrorTable",
    "State",
    "apply_states",
    "get_object",
    "mirrorable",
    "register",
    "state_from_event",
    "state_from_fetch",
    "table_for",
]
