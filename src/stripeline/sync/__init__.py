"""Sync: bring the inbox and the mirror up to date with Stripe, and check them.

* ``catch_up``: list ``/v1/events`` from a saved cursor and store what the
  inbox lacks (``run_catch_up_forever`` repeats it for ``stripeline serve``).
* ``backfill``: list every object of the chosen types into the mirror.
* ``check_drift``: compare the mirror with Stripe, and repair it
  (``stripeline verify``).
* ``repair_drift``: read a stored report's drifted objects again, and repair them.
* ``cursors``: the ``stripeline_cursors`` table where each job stands.
* ``history``: what the jobs did, kept for people (the console's Sync page).

Every read goes through a ``stripeline.gateway.Reader`` (one rate limit);
importing this package does not load the ``stripe`` SDK.
"""

from __future__ import annotations

from stripeline.sync.backfill import BackfillResult, Progress, TypeResult, backfill
from stripeline.sync.catch_up import (
    CatchUpResult,
    catch_up,
    run_catch_up_forever,
    run_catch_up_forever_async,
)
from stripeline.sync.cursors import catch_up_gap
from stripeline.sync.drift import Drift, DriftReport, TypeDrift, check_drift, repair_drift

__all__ = [
    "BackfillResult",
    "CatchUpResult",
    "Drift",
    "DriftReport",
    "Progress",
    "TypeDrift",
    "TypeResult",
    "backfill",
    "catch_up",
    "catch_up_gap",
    "check_drift",
    "repair_drift",
    "run_catch_up_forever",
    "run_catch_up_forever_async",
]
