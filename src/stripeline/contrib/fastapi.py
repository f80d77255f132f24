"""FastAPI: stripeline mounted in your app, and its objects as dependencies.

::

    from typing import Annotated

    from fastapi import Depends, FastAPI

    import stripeline
    from stripeline.contrib.fastapi import mirror_dependency

    billing = stripeline.Stripeline()
    app = FastAPI(lifespan=billing.lifespan)      # starts stripeline's writer and worker
    app.mount("/stripe", billing.asgi())          # POST /stripe/webhooks/stripe, …

    MirrorDep = Annotated[stripeline.Mirror, Depends(mirror_dependency(billing))]


    @app.get("/access/{user}")
    def access(user: str, mirror: MirrorDep) -> dict[str, bool]:
        customer = mirror.customer_for_user(user)
        return {"access": bool(customer and mirror.active_subscriptions(customer.id))}

A dependency is a plain callable made once per application (``dependency``):
FastAPI calls it for each request and gets the same object, built on first
use from the ``Stripeline`` app. ``mirror_dependency`` is the first; each of
the application's services is offered the same way, ``dependency(billing,
lambda app: app.<service>)``. This module does not import FastAPI: it only
makes the callables that ``Depends`` takes. See docs/integrations/fastapi.md.
"""

from __future__ import annotations

import threading
import typing
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from stripeline.app import Stripeline
    from stripeline.mirror import Mirror

__all__ = ["dependency", "mirror_dependency"]

_T = typing.TypeVar("_T")


def dependency(app: Stripeline, build: Callable[[Stripeline], _T]) -> Callable[[], _T]:
    """A FastAPI dependency (``Depends(dependency(app, build))``) that gives
    every request ``build(app)``, built once, on the first request that
    needs it (so the settings are read after the app is configured, not at
    import)."""
    lock = threading.Lock()
    built: list[_T] = []

    def provide() -> _T:
        if not built:
            with lock:
                if not built:
                    built.append(build(app))
        return built[0]

    return provide


def mirror_dependency(app: Stripeline, *, account: str | None = None) -> Callable[[], Mirror]:
    """A FastAPI dependency giving routes ``app``'s ``Mirror`` (of ``account``,
    a connected account, when given): ``Depends(mirror_dependency(app))``.

    The mirror reads through the app's engine: one pool for the worker and
    the routes. Its methods are synchronous (use them in ``def`` routes,
    which FastAPI runs in a thread) with ``…_async`` twins for ``async def``
    routes.
    """

    def mirror(app: Stripeline) -> Mirror:
        from stripeline.mirror import Mirror

        return Mirror(app.engine, account=account)

    return dependency(app, mirror)
