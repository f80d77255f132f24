"""``stripeline migrate``, ``serve`` and ``worker``: running the engine."""

from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from stripeline import retention
from stripeline.app import Stripeline
from stripeline.commands._common import (
    fail,
    load_settings_or_exit,
    require_current_schema,
    short_error,
)
from stripeline.errors import ConfigError


@click.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from stripeline.db import make_engine
    from stripeline.db import migrate as run_migrations
    from stripeline.db.engine import VERSION_TABLE, move_version_table

    settings = load_settings_or_exit()
    engine = make_engine(settings.database_url)
    try:
        if move_version_table(engine):
            click.echo(f"moved stripeline's revision from alembic_version to {VERSION_TABLE}")
        run_migrations(engine)
    except SQLAlchemyError as exc:
        fail(f"migration failed: {short_error(exc)}")
    finally:
        engine.dispose()
    click.echo("database is at the newest migration")


def load_app(spec: str | None) -> Stripeline:
    """The application named by ``--app module:attribute`` (or a default one).

    The attribute may be a ``Stripeline`` or a function returning one.
    """
    if not spec:
        return Stripeline(load_settings_or_exit())
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(
            "expected module:attribute, e.g. myproject.billing:app", param_hint="--app"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name}: {exc}", param_hint="--app") from exc
    except ConfigError as exc:  # the module reads its settings on import
        _config_error(exc)
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise click.BadParameter(
            f"{module_name} has no attribute {attribute}", param_hint="--app"
        ) from None
    if not isinstance(target, Stripeline) and callable(target):
        try:
            target = target()
        except ConfigError as exc:
            _config_error(exc)
    if not isinstance(target, Stripeline):
        raise click.BadParameter(f"{spec} is not a stripeline.Stripeline", param_hint="--app")
    load_settings_or_exit(lambda: target.settings)  # read and check the settings now
    return target


def _config_error(exc: ConfigError) -> NoReturn:
    """The one configuration error line and exit 2 (as ``load_settings_or_exit``)."""
    click.echo(f"stripeline: configuration error: {exc.message}", err=True)
    sys.exit(2)


_APP_OPTION = click.option(
    "--app", "app_spec", metavar="MODULE:ATTR", help="Your Stripeline object, with its handlers."
)


@click.command()
@_APP_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--no-worker", is_flag=True, help="Only receive webhooks; run `stripeline worker` apart."
)
@click.option(
    "--sandbox-port",
    default=8001,
    show_default=True,
    type=int,
    help="Port of the in-process sandbox (only when no STRIPE_SECRET_KEY is set).",
)
@click.option(
    "--sandbox-state",
    default=None,
    type=click.Path(dir_okay=False),
    envvar="STRIPELINE_SANDBOX_STATE",
    help="Keep the in-process sandbox's key, webhook secret and objects in this file "
    "across restarts (`make run` uses .stripeline/sandbox.json).",
)
def serve(
    app_spec: str | None,
    host: str,
    port: int,
    no_worker: bool,
    sandbox_port: int,
    sandbox_state: str | None,
) -> None:
    """Receive webhooks (and process them, unless --no-worker)."""
    import uvicorn

    from stripeline.log import configure_logging
    from stripeline.web import create_app
    from stripeline.web._guard import ConnectionGuard, connection_cap

    app = load_app(app_spec)
    # Closed by the outer ``finally``: whatever fails once it runs (the banner,
    # building the app, the server) leaves no sandbox thread or port behind.
    sandbox = None
    try:
        settings = app.settings
        configure_logging(settings.log_format, settings.log_level)
        _switch_threads_sooner(settings.thread_switch_interval)
        require_current_schema(app.engine, code=2)
        if settings.uses_sandbox:
            webhook_url = f"http://{host}:{port}/webhooks/stripe"
            sandbox = _start_sandbox(webhook_url, sandbox_port, sandbox_state)
            _use_sandbox(app, sandbox, webhook_url, sandbox_state)
        asgi = create_app(app, run_worker=not no_worker, catch_up=True)
        database = "SQLite" if settings.is_sqlite else "PostgreSQL"
        click.echo(
            f"stripeline serving on http://{host}:{port} ({database}, {settings.effective_mode} mode)"
        )
        click.echo(f"  webhooks: POST http://{host}:{port}/webhooks/stripe")
        click.echo(f"  health:   http://{host}:{port}/healthz   ready: /readyz   metrics: /metrics")
        click.echo(
            f"  worker:   {'separate (stripeline worker)' if no_worker else 'in this process'}"
        )
        max_connections, fd_limit = connection_cap(settings.max_connections)
        guard = ConnectionGuard(
            max_connections=max_connections, header_timeout=settings.header_timeout
        )
        click.echo(
            f"  limits:   {max_connections} connections (open files {fd_limit}), "
            f"headers {settings.header_timeout:g} s, body {settings.body_timeout:g} s, "
            f"keep-alive {settings.keep_alive_timeout} s"
        )
        stop_pruning = threading.Event()
        if retention.start_pruning(app.engine, settings, stop_pruning) is not None:
            click.echo(f"  inbox:    processed events kept {settings.inbox_retention_days} days")
        try:
            uvicorn.run(
                asgi,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                http=guard.protocol(),
                timeout_keep_alive=settings.keep_alive_timeout,
            )
        finally:
            guard.flush()
            stop_pruning.set()
    finally:
        if sandbox is not None:
            sandbox.close()
        app.dispose()  # refused (schema not current), failed or stopped


def _switch_threads_sooner(seconds: float) -> None:
    """``sys.setswitchinterval(seconds)`` for this process (0: Python's own).

    The webhook writer thread lets go of the GIL around each database call
    of a group (the write lock, BEGIN, the INSERT, the COMMIT and its fsync)
    and, while the event loop is busy with requests, waits up to the switch
    interval to take it back each time: 5 ms by default, several times per
    group. At 0.5 ms the groups commit sooner (bench/ingest.py, SQLite, no
    worker: +10-15 % events/s; PostgreSQL +5 %; the server's CPU per event
    unchanged). ``serve`` owns its process; an application that mounts the
    webhook route in its own server sets it there (docs/deployment.md)."""
    if seconds > 0:
        sys.setswitchinterval(seconds)


@click.command()
@_APP_OPTION
def worker(app_spec: str | None) -> None:
    """Process the inbox (run as many as you like on PostgreSQL)."""
    import signal

    from stripeline.log import configure_logging
    from stripeline.worker import Worker

    app = load_app(app_spec)
    try:
        configure_logging(app.settings.log_format, app.settings.log_level)
        require_current_schema(app.engine, code=2)
        runner = Worker(app)

        def _stop(signum: int, _frame: object) -> None:
            runner.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        click.echo(f"stripeline worker {runner.id} processing the inbox", err=True)
        runner.run()
    finally:
        app.dispose()  # refused (schema not current) or stopped: no connection left


def _start_sandbox(webhook_url: str, port: int, state_file: str | None) -> Any:
    """No STRIPE_SECRET_KEY: run the offline sandbox in-process (see docs/sandbox.md).

    The sandbox gets this server's webhook route as an endpoint. With
    ``state_file`` its key, webhook secret and objects outlive the process.
    Returned as soon as it runs: the caller closes it, whatever fails next.
    """
    try:
        from stripeline_sandbox import Sandbox, StateFileError
    except ImportError:
        from stripeline.commands.sandbox import SANDBOX_MISSING

        click.echo(
            f"stripeline: configuration error: no STRIPE_SECRET_KEY is set and {SANDBOX_MISSING}",
            err=True,
        )
        sys.exit(2)

    try:
        return Sandbox(port=port, webhook_url=webhook_url, state_file=state_file).start()
    except StateFileError as exc:
        fail(str(exc), code=2)
    except OSError as exc:
        fail(f"cannot start the sandbox on port {port}: {exc.strerror or exc}", code=2)


def _use_sandbox(app: Stripeline, sandbox: Any, webhook_url: str, state_file: str | None) -> None:
    """Point ``app`` at the running ``sandbox`` and say how to reach it.

    Its signing secret is accepted and the gateway is pointed at it: nothing
    else in stripeline knows it is not Stripe.
    """
    from pydantic import SecretStr

    app.add_webhook_secret(sandbox.webhook_secret)
    app.use_settings(
        app.settings.model_copy(
            update={
                "stripe_secret_key": SecretStr(sandbox.secret_key),
                "stripe_api_base": sandbox.url,
            }
        )
    )
    click.echo(f"No STRIPE_SECRET_KEY: running the offline Stripe sandbox at {sandbox.url}")
    if state_file:
        how = "state read from" if sandbox.restored else "state kept in"
        click.echo(f"  {how} {state_file} (delete it to start afresh)")
    click.echo(f"  it sends its events to {webhook_url}, signed")
    click.echo("  to talk to it from another shell (stripeline verify, sync objects, your code):")
    for line in sandbox_exports(sandbox.secret_key, sandbox.url, app.settings.database_url):
        click.echo(f"    {line}")
    click.echo(
        '  then: .venv/bin/python -c "import os, stripe; '
        "c = stripe.StripeClient(os.environ['STRIPE_SECRET_KEY'], "
        "base_addresses={'api': os.environ['STRIPELINE_STRIPE_API_BASE']}); "
        "print(c.v1.customers.create({'email': 'a@example.com'}).id)\""
    )
    click.echo("  and:  .venv/bin/stripeline events list")


def sandbox_exports(secret_key: str, api_base: str, database_url: str) -> list[str]:
    """The shell lines that point another process at this sandbox and database."""
    import shlex

    from stripeline.settings import DEFAULT_DATABASE_URL

    lines = [
        f"export STRIPE_SECRET_KEY={shlex.quote(secret_key)}",
        f"export STRIPELINE_STRIPE_API_BASE={shlex.quote(api_base)}",
    ]
    if database_url != DEFAULT_DATABASE_URL:
        lines.append(f"export STRIPELINE_DATABASE_URL={shlex.quote(database_url)}")
    return lines
