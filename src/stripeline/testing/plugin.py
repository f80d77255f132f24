"""stripeline's pytest plugin (entry point ``pytest11``): fixtures only.

Nothing starts until a test asks for a fixture. This is the only module of
``stripeline.testing`` that imports pytest. See ``docs/testing.md``.

Fixtures:

* ``stripe_sandbox`` (session): a running ``stripeline_sandbox.Sandbox`` (the
  ``stripeline-sandbox`` distribution: ``pip install 'stripeline[sandbox]'``).
* ``stripe_key``: a fresh ``sk_test_…`` key, i.e. an empty account, per test.
* ``stripe_client``: a ``stripe.StripeClient`` for that key, pointed at the sandbox.
* ``stripeline_app``: a ``Stripeline`` app on a fresh, migrated SQLite file,
  configured with the sandbox's key and webhook secret (re-fetches not
  coalesced), carrying the handlers of ``stripeline_base_app`` (the ini option
  ``stripeline_app = "pkg.mod:app"``, or override that fixture), which is
  pointed at the same database for the test; the application's own tables
  from ``stripeline_schema`` (ini ``stripeline_schema``) are created in it.
* ``stripeline_env``: that app served on 127.0.0.1 and registered as the
  account's webhook endpoint, with ``settle()``, ``advance_clock()``,
  ``deliver()``, ``events()`` and ``mirror()``.
* ``stripe_event``: ``make_event``, the signed-event factory's first half.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stripeline.testing.env import StripelineEnv
from stripeline.testing.events import make_event

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from stripeline.app import Stripeline
    from stripeline.gateway import StripeClient
    from stripeline_sandbox import Sandbox

#: Webhook retries in tests: fast, so a failing endpoint settles in well under a second.
TEST_RETRY_DELAYS = (0.05, 0.1, 0.2)
#: The stripe_sandbox fixture's error when the sandbox distribution is missing.
SANDBOX_MISSING = (
    "stripe_sandbox needs the offline Stripe sandbox, which is not installed: "
    "pip install 'stripeline[sandbox]' (from a checkout: pip install ./sandbox)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "stripeline_app",
        "module:attribute of the Stripeline app whose handlers stripeline_app carries",
        default="",
    )
    parser.addini(
        "stripeline_schema",
        "module:attribute of the application's tables for the test database: a "
        "SQLAlchemy MetaData, a declarative base (its .metadata) or a callable(engine)",
        default="",
    )


def _resolve(option: str, reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise pytest.UsageError(f"{option} must be 'module:attribute', not {reference!r}")
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def _load_app(reference: str) -> Stripeline:
    from stripeline.app import Stripeline

    found = _resolve("stripeline_app", reference)
    if not isinstance(found, Stripeline):
        raise pytest.UsageError(f"{reference} is a {type(found).__name__}, not a Stripeline app")
    return found


def _sandbox_class() -> type[Sandbox] | None:
    try:
        from stripeline_sandbox import Sandbox
    except ImportError:
        return None
    return Sandbox


@pytest.fixture(scope="session")
def stripe_sandbox() -> Iterator[Sandbox]:
    """The offline Stripe, one per test session (each test has its own account)."""
    sandbox_class = _sandbox_class()
    if sandbox_class is None:
        pytest.fail(SANDBOX_MISSING, pytrace=False)
    with sandbox_class(webhook_retry_delays=TEST_RETRY_DELAYS, webhook_timeout=5.0) as sandbox:
        yield sandbox


@pytest.fixture
def stripe_key(stripe_sandbox: Sandbox) -> str:
    """A fresh ``sk_test_…`` key: an empty sandbox account for this test."""
    return stripe_sandbox.new_key()


@pytest.fixture
def stripe_client(stripe_sandbox: Sandbox, stripe_key: str) -> Iterator[StripeClient]:
    """The official SDK's client for this test's account (2 network retries)."""
    from stripeline.gateway import open_client

    with open_client(stripe_key, api_base=stripe_sandbox.url, timeout=10) as client:
        yield client


@pytest.fixture
def stripeline_base_app(pytestconfig: pytest.Config) -> Stripeline | None:
    """The app whose handlers tests run: ini ``stripeline_app``, or override this."""
    reference = str(pytestconfig.getini("stripeline_app") or "")
    return _load_app(reference) if reference else None


@pytest.fixture
def stripeline_schema(pytestconfig: pytest.Config) -> Any:
    """The application's own tables, created in each test database by
    ``stripeline_app``: ini ``stripeline_schema``, or override this to return
    a ``MetaData``, a declarative base or a ``callable(engine)`` (``None``: none)."""
    reference = str(pytestconfig.getini("stripeline_schema") or "")
    return _resolve("stripeline_schema", reference) if reference else None


def _create_schema(engine: Engine, schema: Any) -> None:
    """Create ``schema`` (see ``stripeline_schema``) in the database of ``engine``.

    Raises:
        TypeError: ``schema`` is none of a MetaData, a declarative base or a callable.
    """
    from sqlalchemy import MetaData

    if schema is None:
        return
    metadata = schema if isinstance(schema, MetaData) else getattr(schema, "metadata", None)
    if isinstance(metadata, MetaData):
        metadata.create_all(engine)
    elif callable(schema):
        schema(engine)
    else:
        raise TypeError(
            f"stripeline_schema is a {type(schema).__name__}: expected a SQLAlchemy "
            "MetaData, a declarative base or a callable taking the engine"
        )


#: ``_built``'s answers, by class.
_BUILT: dict[type, tuple[str, ...]] = {}


def _built(klass: type) -> tuple[str, ...]:
    """The cached properties of ``klass`` (an app class: metrics, the calls
    ledger, the flows, and a subclass's own): what an app builds once from
    its settings and engine. Found once per class."""
    from functools import cached_property

    found = _BUILT.get(klass)
    if found is None:
        found = _BUILT[klass] = tuple(
            name
            for base in klass.__mro__
            for name, value in vars(base).items()
            if isinstance(value, cached_property)
        )
    return found


@contextmanager
def _pointed_at(base: Stripeline, app: Stripeline) -> Iterator[None]:
    """``base`` (the user's app object) uses ``app``'s settings and database
    meanwhile: a handler that calls ``base.once(…)`` or opens ``base.engine``
    writes to the test database, never to the file or server ``base`` is set up for."""
    names = ("_settings", "_engine", "_fetcher", "_limiter", "_secrets")
    saved = {name: base.__dict__[name] for name in names}
    # What the app builds once from its settings (cached properties: metrics,
    # the calls ledger and its client, the flows) is built afresh meanwhile.
    built = _built(type(base))
    cached = {name: base.__dict__.pop(name) for name in built if name in base.__dict__}
    base.__dict__.update(
        _settings=app.settings, _engine=app.engine, _fetcher=None, _limiter=None, _secrets={}
    )
    try:
        yield
    finally:
        for name in built:
            base.__dict__.pop(name, None)
        base.__dict__.update(saved)
        base.__dict__.update(cached)


@pytest.fixture(scope="session")
def _stripeline_template_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stripeline.db import make_engine, migrate

    path = tmp_path_factory.mktemp("stripeline") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture
def stripeline_app(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripeline_base_app: Stripeline | None,
    stripeline_schema: Any,
    _stripeline_template_database: Path,
    tmp_path: Path,
) -> Iterator[Stripeline]:
    """A ``Stripeline`` app on a fresh migrated SQLite file, set up for the sandbox,
    with the application's tables (``stripeline_schema``)."""
    from pydantic import SecretStr

    from stripeline.app import Stripeline
    from stripeline.settings import Settings

    path = tmp_path / "stripeline.db"
    path.write_bytes(_stripeline_template_database.read_bytes())
    settings = Settings(
        stripe_secret_key=SecretStr(stripe_key),
        stripe_webhook_secret=SecretStr(stripe_sandbox.webhook_secret),
        stripe_api_base=stripe_sandbox.url,
        database_url=f"sqlite:///{path}",
        # Nothing to save by coalescing in a test: a tie is read at once.
        mirror_coalesce_seconds=0,
    )
    app = Stripeline(settings)
    _create_schema(app.engine, stripeline_schema)
    if stripeline_base_app is None:
        yield app
    else:
        app.include(stripeline_base_app)
        with _pointed_at(stripeline_base_app, app):
            yield app
    app.dispose()


@pytest.fixture
def stripeline_env(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: StripeClient,
    stripeline_app: Stripeline,
) -> Iterator[StripelineEnv]:
    """The sandbox account, its client and ``stripeline_app`` receiving its webhooks."""
    env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, stripeline_app)
    yield env
    env.close()


@pytest.fixture
def stripe_event() -> Callable[..., dict[str, Any]]:
    """``make_event``: ``stripe_event("invoice.paid", {"amount_paid": 500})``."""
    return make_event
