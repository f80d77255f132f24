"""stripeline's settings and application, from Django's settings.

``settings.STRIPELINE`` is a dict whose keys are stripeline ``Settings``
field names (``stripe_webhook_secret``, ``stripe_secret_key``, ``mode``,
``body_limit`` …) plus ``app`` (``"myproject.billing:app"``: your
``Stripeline`` object with its handlers) and ``database`` (the Django
database alias, ``"default"`` unless said). What the dict does not set is read
from the environment as everywhere else (``STRIPE_WEBHOOK_SECRET`` …). The
database is always Django's own: ``DATABASES[alias]`` (SQLite or PostgreSQL).
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.errors import ConfigError
from stripeline.log import configure_logging_if_unset
from stripeline.settings import Settings, load_settings

__all__ = ["database_alias", "database_url", "get_app", "reset", "stripeline_settings"]

#: Keys of ``settings.STRIPELINE`` that are not stripeline ``Settings`` fields.
OWN_KEYS = ("app", "database")

_lock = threading.Lock()
_app: list[Stripeline] = []


def _config() -> dict[str, Any]:
    value = getattr(django_settings, "STRIPELINE", None) or {}
    if not isinstance(value, dict):
        raise ImproperlyConfigured("settings.STRIPELINE must be a dict")
    return dict(value)


def database_alias() -> str:
    """The Django database stripeline's tables live in (``STRIPELINE["database"]``)."""
    return str(_config().get("database", "default"))


def database_url(alias: str | None = None) -> str:
    """The SQLAlchemy URL of Django's ``DATABASES[alias]`` (SQLite or PostgreSQL).

    Read from the connection's settings of the moment: under Django's test
    runner that is the test database.
    """
    from django.db import connections

    alias = alias or database_alias()
    params = connections[alias].settings_dict
    engine = str(params.get("ENGINE", ""))
    if engine == "django.db.backends.sqlite3":
        name = str(params.get("NAME") or "")
        if not name or name == ":memory:" or name.startswith("file:"):
            # An in-memory database (Django's default test database on SQLite)
            # lives in Django's connection only: see engine.django_engine.
            return "sqlite://"
        return URL.create("sqlite", database=name).render_as_string(hide_password=False)
    if engine == "django.db.backends.postgresql":
        options = dict(params.get("OPTIONS") or {})
        query = {
            key: str(options[key])
            for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name")
            if key in options
        }
        return URL.create(
            "postgresql+psycopg",
            username=params.get("USER") or None,
            password=params.get("PASSWORD") or None,
            host=params.get("HOST") or None,
            port=int(params["PORT"]) if params.get("PORT") else None,
            database=params.get("NAME") or None,
            query=query,
        ).render_as_string(hide_password=False)
    raise ImproperlyConfigured(
        f"stripeline supports SQLite and PostgreSQL databases; DATABASES[{alias!r}] uses {engine}"
    )


def stripeline_settings() -> Settings:
    """stripeline's ``Settings``: ``settings.STRIPELINE``, then the environment,
    with Django's database. Raises ``ConfigError`` (one line per problem)."""
    overrides = {k: v for k, v in _config().items() if k not in OWN_KEYS}
    overrides["database_url"] = database_url()
    return load_settings(**overrides)


def _load_user_app() -> Stripeline:
    spec = _config().get("app")
    if not spec:
        return Stripeline()
    path = str(spec).replace(":", ".")
    try:
        target = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"STRIPELINE['app'] = {spec!r} cannot be imported: {exc}"
        ) from exc
    if not isinstance(target, Stripeline) and callable(target):
        target = target()
    if not isinstance(target, Stripeline):
        raise ImproperlyConfigured(f"STRIPELINE['app'] = {spec!r} is not a stripeline.Stripeline")
    return target


def get_app() -> Stripeline:
    """The project's ``Stripeline`` (``STRIPELINE["app"]``, or one without
    handlers), configured from Django's settings, on Django's database.

    The same object every time. Its engine borrows Django's connection of the
    calling thread for the worker's transactions (see ``engine``), so that a
    handler's ORM writes commit with the event's ``processed`` mark.
    """
    if _app:
        return _app[0]
    with _lock:
        if _app:
            return _app[0]
        from stripeline.contrib.django.engine import bound_connection, django_engine

        app = _load_user_app()
        try:
            app.use_settings(stripeline_settings())
        except ConfigError as exc:
            raise ImproperlyConfigured(f"stripeline: {exc.message}") from None
        alias = database_alias()
        engine: Engine = django_engine(app.settings.database_url, alias)
        # The application object is the user's; its engine is chosen here,
        # before anything used it (the constructor's ``engine=`` otherwise).
        app._engine = engine

        def scope(event: ReceivedEvent) -> AbstractContextManager[object]:
            # The handler thread's Django connection is the event's.
            return bound_connection(event.connection.connection.dbapi_connection, alias)

        app.handler_scope = scope
        configure_logging_if_unset(app.settings.log_format, app.settings.log_level)
        _app.append(app)
        return app


def reset() -> None:
    """Forget the application (tests that change settings; closes its engine)."""
    with _lock:
        if _app:
            app = _app.pop()
            app.dispose()
            app.__dict__.pop("metrics", None)  # made on the engine just disposed
