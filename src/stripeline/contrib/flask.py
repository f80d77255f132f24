"""Flask: stripeline's routes as a blueprint, its worker beside them, the mirror in views.

::

    from flask import Flask
    import stripeline
    from stripeline.contrib.flask import StripelineFlask, get_mirror

    billing = stripeline.Stripeline()          # your handlers: @billing.on(...)
    app = Flask(__name__)
    StripelineFlask(app, billing, url_prefix="/stripe", run_worker=True)

    @app.get("/access/<user_id>")
    def access(user_id: str) -> dict[str, bool]:
        customer = get_mirror().customer_for_user(user_id)
        return {"access": bool(customer and get_mirror().active_subscriptions(customer.id))}

The blueprint answers ``POST {url_prefix}/webhooks/stripe`` (and
``/webhooks/stripe/connect``), ``GET {url_prefix}/healthz``, ``/readyz`` and
``/metrics`` through ``stripeline.web.wsgi.StripelineWSGI``: the same
verification, bounded body, storage, answers, metrics and log lines as
``stripeline serve``. With ``run_worker=True`` a worker thread processes the
inbox in each process that serves, started on its first request (safe under
gunicorn ``--preload``); otherwise run ``stripeline worker`` beside the app
(recommended in production). See docs/integrations/flask.md.

``current_app.extensions["stripeline"]`` is the app's ``StripelineState``;
``get_stripeline()`` and ``get_mirror()`` read it in a view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from flask import Blueprint, Flask, Response, current_app, request
    from werkzeug.wrappers import Response as WerkzeugResponse
except ImportError as missing:  # pragma: no cover - the dev extra installs Flask
    raise ImportError(
        "stripeline.contrib.flask needs Flask: pip install 'stripeline[flask]'"
    ) from missing

from stripeline.app import Stripeline
from stripeline.mirror.reader import Mirror
from stripeline.web.intake import WebhookAnswer
from stripeline.web.wsgi import DEFAULT_STOP_TIMEOUT, StripelineWSGI, WorkerThread

__all__ = [
    "EXTENSION_KEY",
    "StripelineFlask",
    "StripelineState",
    "get_mirror",
    "get_state",
    "get_stripeline",
]

#: The key of ``Flask.extensions`` the extension's state is under.
EXTENSION_KEY = "stripeline"


class StripelineState:
    """What the extension keeps for one Flask app: the ``Stripeline`` app, its
    WSGI routes (``wsgi``) and worker thread; the mirror to read in views."""

    def __init__(self, app: Stripeline, wsgi: StripelineWSGI, blueprint: Blueprint) -> None:
        self.app = app
        self.wsgi = wsgi
        self.blueprint = blueprint
        self._mirror: Mirror | None = None

    @property
    def mirror(self) -> Mirror:
        """The platform account's mirror (built on first use, not at import:
        nothing touches the database before gunicorn forks)."""
        if self._mirror is None:
            self._mirror = Mirror(self.app.engine)
        return self._mirror

    @property
    def worker(self) -> WorkerThread | None:
        """The worker thread (``run_worker=True``), else None."""
        return self.wsgi.worker


class StripelineFlask:
    """The Flask extension: ``StripelineFlask(flask_app, billing)``, or
    ``ext = StripelineFlask(app=billing)`` then ``ext.init_app(flask_app)``.

    Arguments: ``url_prefix`` of the blueprint (default ``/stripe``: the
    webhook URL is ``/stripe/webhooks/stripe``); ``run_worker`` starts a
    worker thread in each serving process; ``stop_timeout`` is how long it is
    given at exit; ``worker_options`` are ``stripeline.worker.Worker``'s
    keyword arguments; ``blueprint_name`` names the blueprint (``url_for``).
    """

    def __init__(
        self,
        flask_app: Flask | None = None,
        app: Stripeline | None = None,
        *,
        url_prefix: str = "/stripe",
        run_worker: bool = False,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        worker_options: Mapping[str, Any] | None = None,
        blueprint_name: str = "stripeline",
    ) -> None:
        self.app = app
        self.url_prefix = url_prefix
        self.run_worker = run_worker
        self.stop_timeout = stop_timeout
        self.worker_options = dict(worker_options or {})
        self.blueprint_name = blueprint_name
        if flask_app is not None:
            self.init_app(flask_app)

    def init_app(self, flask_app: Flask, app: Stripeline | None = None) -> StripelineState:
        """Register the routes (and the worker's start) on ``flask_app``."""
        billing = app if app is not None else self.app
        if billing is None:
            raise TypeError("StripelineFlask needs the Stripeline app: init_app(flask_app, app)")
        if EXTENSION_KEY in flask_app.extensions:
            raise RuntimeError("stripeline is already set up on this Flask app")
        wsgi = StripelineWSGI(
            billing,
            run_worker=self.run_worker,
            stop_timeout=self.stop_timeout,
            worker_options=self.worker_options,
        )
        blueprint = _blueprint(self.blueprint_name, wsgi)
        state = StripelineState(billing, wsgi, blueprint)
        flask_app.extensions[EXTENSION_KEY] = state
        flask_app.register_blueprint(blueprint, url_prefix=self.url_prefix)
        # Every request, any view: the first one in a process starts its worker.
        flask_app.before_request(wsgi.start)
        return state


def _answer(answer: WebhookAnswer) -> Response:
    return Response(
        answer.content(),
        status=answer.status,
        headers=dict(answer.headers),
        mimetype="application/json",
    )


def _blueprint(name: str, wsgi: StripelineWSGI) -> Blueprint:
    blueprint = Blueprint(name, __name__)

    @blueprint.post("/webhooks/stripe")
    def webhook() -> Response:
        return _answer(wsgi.webhook(request.environ, "account"))

    @blueprint.post("/webhooks/stripe/connect")
    def webhook_connect() -> Response:
        return _answer(wsgi.webhook(request.environ, "connect"))

    @blueprint.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    @blueprint.get("/readyz")
    def readyz() -> tuple[dict[str, Any], int]:
        status, body = wsgi.readiness()
        return body, status

    @blueprint.get("/metrics")
    def metrics() -> WerkzeugResponse:
        return Response.from_app(wsgi.metrics, request.environ)

    return blueprint


def get_state() -> StripelineState:
    """The current Flask app's ``StripelineState`` (in a request or app context)."""
    state = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, StripelineState):
        raise RuntimeError("stripeline is not set up on this Flask app: StripelineFlask(app, …)")
    return state


def get_stripeline() -> Stripeline:
    """The current Flask app's ``Stripeline`` app."""
    return get_state().app


def get_mirror(account: str | None = None) -> Mirror:
    """The mirror to read in a view (``account``: a connected account's)."""
    mirror = get_state().mirror
    return mirror if account is None else mirror.for_account(account)
