"""Sandbox-only controls under ``/_sandbox/…`` (authenticated by the account's key).

They act on the calling key's account (the clock is the sandbox's own) and
are never subject to faults, rate limits or idempotency. ``Sandbox`` offers
the same as Python methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stripeline_sandbox._customers import create_customer_op
from stripeline_sandbox._delivery import DeliveryMode
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._faults import KINDS, Fault
from stripeline_sandbox._payment_intents import settle_due
from stripeline_sandbox._products import create_product_op
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, as_int
from stripeline_sandbox._state import Account, Obj, World


def fault_from_params(request: Request) -> Fault:
    params = request.params
    kind = str(request.param("kind"))
    if kind not in KINDS:
        raise invalid(f"kind must be one of {', '.join(KINDS)}", param="kind")
    after = params.get("after_commit")
    should_retry = params.get("should_retry")
    try:
        return Fault(
            kind=kind,
            count=as_int(params.get("count", 1), "count", minimum=1),
            path=params.get("path") or None,
            method=params.get("method") or None,
            after_commit=(
                as_bool(after, "after_commit")
                if after is not None
                else kind in ("timeout", "disconnect")
            ),
            status=as_int(params["status"], "status") if params.get("status") else None,
            should_retry=None if should_retry is None else as_bool(should_retry, "should_retry"),
            delay=float(params.get("delay", 30.0)),
        )
    except ValueError as exc:
        raise invalid(str(exc)) from None


def _faults(account: Account) -> Obj:
    return {
        "object": "list",
        "data": [
            {"kind": f.kind, "count": f.count, "path": f.path, "method": f.method}
            for f in account.faults
        ],
    }


def add_fault(request: Request) -> Obj:
    request.account.faults.append(fault_from_params(request))
    return _faults(request.account)


def clear_faults(request: Request) -> Obj:
    request.account.faults.clear()
    return _faults(request.account)


def set_rate_limit(request: Request) -> Obj:
    per_second = as_int(request.params.get("per_second", 0), "per_second", minimum=0)
    request.account.rate_limit = float(per_second)
    return {"per_second": per_second}


def set_delivery(request: Request) -> Obj:
    params = request.params
    mode = DeliveryMode(
        duplicate=as_int(params.get("duplicate", 1), "duplicate", minimum=1),
        delay=float(params.get("delay", 0.0)),
        hold=as_bool(params.get("hold", "false"), "hold"),
    )
    request.account.delivery = mode
    return {"duplicate": mode.duplicate, "delay": mode.delay, "hold": mode.hold}


def flush_delivery(request: Request) -> Obj:
    order = str(request.params.get("order", "fifo"))
    if order not in ("fifo", "reverse", "shuffle"):
        raise invalid("order must be fifo, reverse or shuffle", param="order")
    seed = request.params.get("seed")
    released = request.world.deliverer.flush(
        request.account, order, None if seed is None else as_int(seed, "seed")
    )
    return {"released": released}


def list_attempts(request: Request) -> Obj:
    return {
        "object": "list",
        "data": [
            {
                "event": a.event_id,
                "type": a.event_type,
                "webhook_endpoint": a.endpoint_id,
                "attempt": a.attempt,
                "status": a.status,
                "error": a.error,
            }
            for a in request.account.attempts
        ],
    }


def get_clock(request: Request) -> Obj:
    return {"now": request.now()}


def advance_clock(request: Request) -> Obj:
    seconds = as_int(request.param("seconds"), "seconds", minimum=0)
    now = request.world.clock.advance(seconds)
    settle_due(request)  # bank debits due by the new time settle now
    return {"now": now}


#: Collections ``/_sandbox/bulk`` can fill (each object needs no other one), and
#: the operation behind ``POST /v1/<resource>`` that creates one from its parameters.
BULK_RESOURCES: dict[str, Callable[[Call, dict[str, Any]], Obj]] = {
    "customers": create_customer_op,
    "products": create_product_op,
}
BULK_MAX = 100_000


def bulk_create(
    world: World, account: Account, resource: str, count: int, params: dict[str, Any]
) -> list[str]:
    """Create ``count`` objects as ``POST /v1/<resource>`` would, in-process; return the ids.

    Each is its own ``Call`` (a fresh request id); their events are stored, not delivered.

    Raises:
        ValueError: an unknown resource or a count out of range.
    """
    if resource not in BULK_RESOURCES:
        raise ValueError(f"bulk creation knows {', '.join(BULK_RESOURCES)}, not {resource!r}")
    if not 1 <= count <= BULK_MAX:
        raise ValueError(f"count must be between 1 and {BULK_MAX}")
    create = BULK_RESOURCES[resource]
    ids: list[str] = []
    with account.lock:
        for i in range(count):
            values = {
                k: v.replace("{i}", str(i)) if isinstance(v, str) else v for k, v in params.items()
            }
            ids.append(str(create(Call(world, account), values)["id"]))
    return ids


def bulk(request: Request) -> Obj:
    """``resource``, ``count`` and the objects' own parameters (``{i}``: their number)."""
    params = dict(request.params)
    resource = str(params.pop("resource", ""))
    count = as_int(params.pop("count", 1), "count", minimum=1)
    try:
        ids = bulk_create(request.world, request.account, resource, count, params)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    return {"object": "list", "data": ids, "count": len(ids)}


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/_sandbox/faults", add_fault, control=True),
    Endpoint("DELETE", "/_sandbox/faults", clear_faults, control=True),
    Endpoint("POST", "/_sandbox/rate_limit", set_rate_limit, control=True),
    Endpoint("POST", "/_sandbox/delivery", set_delivery, control=True),
    Endpoint("POST", "/_sandbox/delivery/flush", flush_delivery, control=True),
    Endpoint("GET", "/_sandbox/delivery/attempts", list_attempts, control=True),
    Endpoint("GET", "/_sandbox/clock", get_clock, control=True),
    Endpoint("POST", "/_sandbox/clock/advance", advance_clock, control=True),
    Endpoint("POST", "/_sandbox/bulk", bulk, control=True),
)
