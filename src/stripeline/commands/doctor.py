"""``stripeline doctor``: check the configuration and the database, one line per check.

Each check is judged on its own, from the environment as given, so that one
problem does not hide the others. Secrets are never printed: a key shows its
type prefix (``sk_test_``), a webhook secret nothing beyond ``whsec_``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import stripe
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from stripeline.commands._common import console, short_error
from stripeline.db.engine import current_revision, head_revision, null_pool_engine
from stripeline.errors import ConfigError
from stripeline.settings import DEFAULT_DATABASE_URL, key_mode, load_settings

# The settings module owns the formats; doctor reports on them one by one.
from stripeline.settings import KEY_PATTERN as KEY_FORMAT
from stripeline.settings import WEBHOOK_SECRET_PATTERN as WEBHOOK_SECRET_FORMAT


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value and value.strip() else None


def check_secret_key() -> Check:
    key = _env("STRIPE_SECRET_KEY")
    if key is None:
        return Check("secret key", True, "not set: the offline sandbox is used (test mode)")
    key = key.strip()
    if not KEY_FORMAT.match(key):
        return Check(
            "secret key",
            False,
            "STRIPE_SECRET_KEY is malformed: expected sk_test_…, sk_live_…, rk_test_… or rk_live_…",
        )
    kind = "restricted key" if key.startswith("rk_") else "secret key"
    return Check("secret key", True, f"{key[:8]}… {kind}, {key_mode(key)} mode")


def check_mode() -> Check:
    key = _env("STRIPE_SECRET_KEY")
    key_given = key is not None and KEY_FORMAT.match(key.strip()) is not None
    from_key = key_mode(key.strip()) if key is not None and key_given else None
    mode = _env("STRIPELINE_MODE")
    if mode is not None and mode not in ("test", "live"):
        return Check("mode", False, f"STRIPELINE_MODE={mode!r}: expected test or live")
    if mode is not None and from_key is not None and mode != from_key:
        return Check(
            "mode",
            False,
            f"STRIPELINE_MODE={mode} but STRIPE_SECRET_KEY is a {from_key} key: "
            "use a key of that mode or change STRIPELINE_MODE",
        )
    if mode == "live" and key is None:
        return Check("mode", False, "STRIPELINE_MODE=live needs STRIPE_SECRET_KEY")
    if mode is not None and from_key is not None:
        return Check("mode", True, f"{mode}: STRIPELINE_MODE agrees with the key")
    if from_key is not None:
        return Check("mode", True, f"{from_key}, from the key (STRIPELINE_MODE not set)")
    return Check("mode", True, f"{mode or 'test'}" + ("" if mode else " (the default)"))


def _secret_entries(name: str) -> tuple[list[str], list[int]]:
    raw = _env(name) or ""
    entries = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [i for i, entry in enumerate(entries, 1) if not WEBHOOK_SECRET_FORMAT.match(entry)]
    return entries, bad


def check_webhook_secrets() -> Check:
    name = "webhook secrets"
    entries, bad = _secret_entries("STRIPE_WEBHOOK_SECRET")
    if bad:
        which = ", ".join(str(i) for i in bad)
        return Check(
            name,
            False,
            f"STRIPE_WEBHOOK_SECRET entry {which} of {len(entries)} is malformed: expected whsec_…",
        )
    if entries:
        plural = "secret" if len(entries) == 1 else "secrets (rotation)"
        return Check(name, True, f"{len(entries)} {plural}, well-formed (whsec_…)")
    if _env("STRIPE_SECRET_KEY") is None:
        return Check(name, True, "not set: the offline sandbox signs with its own secret")
    return Check(
        name,
        False,
        "STRIPE_WEBHOOK_SECRET is not set: webhooks from Stripe cannot be verified "
        "(copy the endpoint's signing secret, or the one `stripe listen` prints)",
    )


def check_connect_webhook_secrets() -> Check:
    name = "connect webhook secrets"
    entries, bad = _secret_entries("STRIPE_CONNECT_WEBHOOK_SECRET")
    if bad:
        which = ", ".join(str(i) for i in bad)
        return Check(
            name,
            False,
            f"STRIPE_CONNECT_WEBHOOK_SECRET entry {which} of {len(entries)} is malformed: "
            "expected whsec_…",
        )
    if entries:
        return Check(name, True, f"{len(entries)} well-formed (whsec_…)")
    return Check(name, True, "not set (no Connect endpoint)")


def check_settings() -> Check:
    try:
        load_settings()
    except ConfigError as exc:
        return Check("settings", False, exc.message)
    return Check("settings", True, "every STRIPELINE_ setting is valid")


def _database_url() -> str:
    return _env("STRIPELINE_DATABASE_URL") or DEFAULT_DATABASE_URL


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def check_database(url: str) -> tuple[Check, Engine | None]:
    name = "database"
    shown = _shown(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        return Check(name, False, "STRIPELINE_DATABASE_URL is not a database URL"), None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not Path(database).exists():
            # Connecting would create an empty file; say what to do instead.
            return Check(
                name, False, f"{shown}: the file does not exist (run `stripeline migrate`)"
            ), None
    try:
        engine = null_pool_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        return Check(name, False, f"{shown} unreachable: {short_error(exc)}"), None
    return Check(name, True, f"{shown} reachable"), engine


def check_migrations(engine: Engine | None) -> Check:
    name = "migrations"
    if engine is None:
        return Check(name, False, "not checked: the database is unreachable")
    head = head_revision()
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        return Check(name, False, short_error(exc))
    if current != head:
        return Check(
            name, False, f"at {current or 'none'}, newest is {head}: run `stripeline migrate`"
        )
    return Check(name, True, f"current ({head})")


def check_api_version() -> Check:
    version = getattr(stripe, "api_version", None)
    if not version:
        return Check("API version", False, "the stripe SDK pins no API version")
    return Check(
        "API version",
        True,
        f"{version}, pinned by stripe {stripe.VERSION} "
        "(set your webhook endpoints to the same version)",
    )


def run_checks() -> list[Check]:
    """Every check, in the order printed."""
    checks: list[Check] = []
    simple: list[Callable[[], Check]] = [
        check_secret_key,
        check_mode,
        check_webhook_secrets,
        check_connect_webhook_secrets,
        check_settings,
    ]
    checks.extend(check() for check in simple)
    database, engine = check_database(_database_url())
    checks.append(database)
    try:
        checks.append(check_migrations(engine))
    finally:
        if engine is not None:
            engine.dispose()
    checks.append(check_api_version())
    return checks


@click.command()
def doctor() -> None:
    """Check keys, mode, webhook secrets, database and migrations; exit 1 on any failure."""
    checks = run_checks()
    out = console()
    width = max(len(check.name) for check in checks)
    for check in checks:
        mark = "[green]pass[/]" if check.ok else "[bold red]FAIL[/]"
        out.print(f"{mark}  {check.name.ljust(width)}  ", end="")
        out.print(check.detail, markup=False, highlight=False)
    failed = [check for check in checks if not check.ok]
    if failed:
        out.print(f"\n{len(failed)} of {len(checks)} checks failed")
        sys.exit(1)
    out.print(f"\nall {len(checks)} checks passed")
