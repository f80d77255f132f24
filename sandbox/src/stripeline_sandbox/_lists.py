"""List objects and cursor pagination (``limit``, ``starting_after``, ``ending_before``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._routes import Request, as_int
from stripeline_sandbox._state import Obj

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def created_filter(params: dict[str, Any]) -> Callable[[Obj], bool]:
    """``created=…`` or ``created[gt|gte|lt|lte]=…`` as a predicate."""
    given = params.get("created")
    if given is None:
        return lambda obj: True
    if not isinstance(given, dict):
        exact = as_int(given, "created")
        return lambda obj: bool(obj.get("created") == exact)
    bounds = {op: as_int(v, f"created[{op}]") for op, v in given.items()}

    def check(obj: Obj) -> bool:
        created = int(obj.get("created", 0))
        return (
            created > bounds.get("gt", created - 1)
            and created >= bounds.get("gte", created)
            and created < bounds.get("lt", created + 1)
            and created <= bounds.get("lte", created)
        )

    return check


def list_object(
    request: Request,
    items: Iterable[Obj],
    url: str,
    keep: Callable[[Obj], bool] | None = None,
) -> Obj:
    """A page of ``items`` (newest first) as Stripe's ``list`` object.

    Raises:
        StripeError: 400 for a bad ``limit`` or an unknown cursor.
    """
    params = request.params
    limit = as_int(params.get("limit", DEFAULT_LIMIT), "limit", minimum=1)
    if limit > MAX_LIMIT:
        raise invalid(f"This value must be less than or equal to {MAX_LIMIT}.", param="limit")
    created = created_filter(params)
    rows = [obj for obj in items if created(obj) and (keep is None or keep(obj))]
    ids = [obj["id"] for obj in rows]
    after, before = params.get("starting_after"), params.get("ending_before")
    if after:
        # Sub-lists (an invoice's lines) hold objects the account does not keep apart.
        if after not in request.account.objects and after not in ids:
            raise invalid(f"No such object: '{after}'", param="starting_after")
        start = ids.index(after) + 1 if after in ids else len(ids)
        page, has_more = rows[start : start + limit], len(rows) > start + limit
    elif before:
        if before not in request.account.objects and before not in ids:
            raise invalid(f"No such object: '{before}'", param="ending_before")
        end = ids.index(before) if before in ids else 0
        begin = max(0, end - limit)
        page, has_more = rows[begin:end], begin > 0
    else:
        page, has_more = rows[:limit], len(rows) > limit
    return {"object": "list", "data": page, "has_more": has_more, "url": url}
