"""Test clocks: ``/v1/test_helpers/test_clocks`` and customers attached to them.

A test clock is a time of its own (``frozen_time``) that moves only when
advanced; it is independent of the sandbox clock. Customers created with
``test_clock`` (``POST /v1/customers``, in ``_customers``) and their
subscriptions, invoices and invoice items live at the clock's time.
``/advance`` performs every piece of due billing work of those objects in
time order (renewals, trial ends, retries, finalisation…), each at
its own moment, between ``test_helpers.test_clock.advancing`` and
``test_helpers.test_clock.ready``; it is done when the call returns, so the
clock it answers with is already ``ready``. Events and PaymentIntents carry
sandbox-clock ``created`` times (event retention reads the sandbox clock).
"""

from __future__ import annotations

from stripeline_sandbox._billing import add_interval, run_until, settle
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._routes import Call, Endpoint, Request, as_int, optional_str
from stripeline_sandbox._state import Obj

NOUN = "test_helpers.test_clock"
#: Stripe deletes a test clock 30 days after it was created.
LIFETIME = 30 * 86400
#: Stripe lets a clock advance at most two intervals of its shortest subscription.
MAX_INTERVALS = 2


def _clock(call: Call, clock_id: str) -> Obj:
    return call.get(NOUN, clock_id, "test_clock")


def create_test_clock(request: Request) -> Obj:
    frozen_time = as_int(request.param("frozen_time"), "frozen_time", minimum=0)
    now = request.now()
    clock: Obj = {
        "id": new_id("clock"),
        "object": NOUN,
        "created": now,
        "deletes_after": now + LIFETIME,
        "frozen_time": frozen_time,
        "livemode": False,
        "name": optional_str(request.params.get("name")),
        "status": "ready",
        "status_details": {},
    }
    request.account.add(clock)
    request.emit("test_helpers.test_clock.created", clock)
    return clock


def retrieve_test_clock(request: Request) -> Obj:
    return _clock(request, request.path_params["id"])


def list_test_clocks(request: Request) -> Obj:
    return list_object(request, request.account.all(NOUN), "/v1/test_helpers/test_clocks")


def delete_test_clock(request: Request) -> Obj:
    """Delete the clock and, as Stripe does, every object attached to it."""
    clock = _clock(request, request.path_params["id"])
    for kind in ("customer", "subscription", "invoice", "invoiceitem"):
        for obj in request.account.all(kind):
            if obj.get("test_clock") == clock["id"]:
                if kind == "subscription" and obj["status"] not in ("canceled",):
                    obj["status"] = "canceled"
                obj["deleted"] = True
    request.emit("test_helpers.test_clock.deleted", clock)
    request.account.remove(clock["id"])
    return {"id": clock["id"], "object": NOUN, "deleted": True}


def _limit(call: Call, clock: Obj) -> int | None:
    """The furthest time one advance may reach (None: no subscription limits it)."""
    ends: list[int] = []
    for subscription in call.account.all("subscription"):
        if subscription["test_clock"] == clock["id"] and subscription["status"] not in (
            "canceled",
            "incomplete_expired",
        ):
            recurring = subscription["items"]["data"][0]["price"]["recurring"]
            ends.append(
                add_interval(
                    int(clock["frozen_time"]),
                    recurring["interval"],
                    int(recurring["interval_count"]) * MAX_INTERVALS,
                )
            )
    return min(ends) if ends else None


def advance_test_clock(request: Request) -> Obj:
    clock = _clock(request, request.path_params["id"])
    target = as_int(request.param("frozen_time"), "frozen_time")
    if target <= int(clock["frozen_time"]):
        raise invalid(
            "The frozen_time must be after the test clock's current frozen_time.",
            param="frozen_time",
        )
    limit = _limit(request, clock)
    if limit is not None and target > limit:
        raise invalid(
            "Cannot advance the test clock more than two intervals of the shortest "
            f"subscription interval; advance to {limit} or earlier.",
            param="frozen_time",
        )
    settle(request)
    clock["status"] = "advancing"
    clock["status_details"] = {"advancing": {"target_frozen_time": target}}
    request.emit("test_helpers.test_clock.advancing", clock)

    def step(moment: int) -> None:
        clock["frozen_time"] = max(int(clock["frozen_time"]), moment)

    run_until(request, clock["id"], target, step)
    clock["frozen_time"] = target
    clock["status"] = "ready"
    clock["status_details"] = {}
    request.emit("test_helpers.test_clock.ready", clock)
    return clock


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/test_helpers/test_clocks", create_test_clock),
    Endpoint("GET", "/v1/test_helpers/test_clocks/{id}", retrieve_test_clock),
    Endpoint("GET", "/v1/test_helpers/test_clocks", list_test_clocks),
    Endpoint("DELETE", "/v1/test_helpers/test_clocks/{id}", delete_test_clock),
    Endpoint("POST", "/v1/test_helpers/test_clocks/{id}/advance", advance_test_clock),
)
