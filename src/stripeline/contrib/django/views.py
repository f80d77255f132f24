"""The webhook endpoints, ``healthz`` and ``readyz`` as Django views.

Every decision is ``stripeline.web.intake``'s: these views only read the
request and write the answer. Plain synchronous views: under WSGI they run
in the request's thread, under ASGI Django runs them in a thread of its own.

The body is bounded by ``body_limit`` (``STRIPELINE["body_limit"]``, 2 MiB by
default) before it is read: a ``Content-Length`` over it is answered 413
unread, and at most ``body_limit + 1`` bytes are ever read. (Django's own
``DATA_UPLOAD_MAX_MEMORY_SIZE`` guards ``request.body``; these views read the
stream directly, so only ``body_limit`` applies. Under ASGI, Django has read
the whole body before any view runs: bound it at the server as well.)
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from stripeline.app import Stripeline
from stripeline.contrib.django.conf import get_app
from stripeline.settings import Settings
from stripeline.web.intake import WebhookAnswer, WebhookIntake, readiness

__all__ = ["healthz", "readyz", "webhook"]

_lock = threading.Lock()
_intake_of: list[tuple[Stripeline, Settings, WebhookIntake]] = []


def _intake(app: Stripeline) -> WebhookIntake:
    """One ``WebhookIntake`` for the application and its settings of the
    moment (``conf.reset()`` gives the application new settings)."""
    known = _intake_of[0] if _intake_of else None
    if known is not None and known[0] is app and known[1] is app.settings:
        return known[2]
    with _lock:
        intake = WebhookIntake(app)
        _intake_of[:] = [(app, app.settings, intake)]
        return intake


def _response(answer: WebhookAnswer) -> HttpResponse:
    return HttpResponse(
        answer.content(),
        status=answer.status,
        content_type="application/json",
        headers=dict(answer.headers),
    )


def _json(body: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )


@csrf_exempt
@require_POST
@transaction.non_atomic_requests  # stored in its own transaction, whatever ATOMIC_REQUESTS says
def webhook(request: HttpRequest, endpoint: str = "account") -> HttpResponse:
    """``POST webhooks/stripe`` (and ``…/connect``): verify, store, answer."""
    started = time.perf_counter()
    app = get_app()
    intake = _intake(app)
    client = request.META.get("REMOTE_ADDR")
    refused = intake.not_configured(endpoint)
    if refused is not None:
        return _response(refused)
    limit = app.settings.body_limit
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _response(intake.too_large(endpoint, client=client))
    try:
        body = request.read(limit + 1)
    except OSError:  # the client went away mid-body
        return _response(intake.disconnected(endpoint, client=client))
    answer = intake.receive(
        endpoint,
        body,
        request.headers.get("Stripe-Signature"),
        client=client,
        started=started,
    )
    return _response(answer)


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers."""
    return _json({"status": "ok"})


@require_GET
@transaction.non_atomic_requests
def readyz(request: HttpRequest) -> HttpResponse:
    """The database answers, its stripeline schema is current, it takes writes."""
    ready, checks = readiness(get_app())
    return _json(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )
