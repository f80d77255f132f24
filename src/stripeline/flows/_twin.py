"""The ``_async`` twins of the flows' blocking methods.

Every flow method that talks to Stripe or the database blocks; its twin runs
the same call in a worker thread (``asyncio.to_thread``: the event loop keeps
serving, context variables follow). ``in_thread`` builds the twin from the
method, so the two cannot drift apart: same parameters (type checkers see
them through ``ParamSpec``), same result, same exceptions.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def in_thread(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """The ``_async`` twin of ``method`` (a class attribute: ``x_async = in_thread(x)``)."""

    @functools.wraps(method)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, self, *args, **kwargs)

    twin.__name__ = f"{method.__name__}_async"
    twin.__qualname__ = f"{method.__qualname__}_async"
    twin.__doc__ = (
        f"``{method.__name__}`` in a worker thread: the same arguments, result and exceptions."
    )
    return twin
