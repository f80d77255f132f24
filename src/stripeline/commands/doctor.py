"""``stripeline doctor``: check the configuration and the database, one line per check.

Each check is judged on its own, so that one problem does not hide the
others: it builds ``Settings`` from the environment's values of the settings
it judges, every other setting at its default, and reports what ``Settings``
says of them. The mode is also compared with the events the database
already holds: a live key on a database of test-mode events fails. Secrets
are never printed: a key shows its type prefix (``sk_test_``), a webhook
secret nothing beyond ``whsec_``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import AliasChoices
from pydantic_settings import EnvSettingsSource
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from stripeline import inbox
from stripeline.commands._common import console, short_error
from stripeline.db.engine import (
    VERSION_TABLE,
    connect,
    current_revision,
    head_revision,
    legacy_revision,
    null_pool_engine,
)
from stripeline.errors import ConfigError
from stripeline.settings import Settings, load_settings

#: A well-formed webhook secret standing in for the real ones while a key or
#: the mode is judged (a live key needs one; the webhook check judges them).
_STAND_IN_SECRET = "whsec_" + "0" * 32


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def _environment() -> dict[str, Any]:
    """The values ``Settings`` reads from the environment, by field name."""
    found = EnvSettingsSource(Settings)()
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        names = [name]
        if isinstance(field.validation_alias, AliasChoices):
            names += [n for n in field.validation_alias.choices if isinstance(n, str)]
        for key in names:
            if key in found:
                values[name] = found[key]
                break
    return values


def _judge(**values: Any) -> Settings | ConfigError:
    """``Settings`` of ``values``, every other setting at its default (the
    environment ignored), or the error that says what is wrong with them."""
    defaults = {
        name: field.get_default(call_default_factory=True)
        for name, field in Settings.model_fields.items()
        if name not in values
    }
    try:
        return load_settings(**defaults, **values)
    except ConfigError as exc:
        return exc


def _secret_key(env: dict[str, Any]) -> str | None:
    key = env.get("stripe_secret_key")
    return None if key is None else str(key)


def check_secret_key(env: dict[str, Any]) -> Check:
    key = _secret_key(env)
    if key is None:
        return Check("secret key", True, "not set: the offline sandbox is used (test mode)")
    judged = _judge(stripe_secret_key=key, stripe_webhook_secret=_STAND_IN_SECRET)
    if isinstance(judged, ConfigError):
        return Check("secret key", False, judged.message)
    kind = "restricted key" if key.strip().startswith("rk_") else "secret key"
    return Check("secret key", True, f"{key.strip()[:8]}… {kind}, {judged.effective_mode} mode")


@dataclass(frozen=True, slots=True)
class StoredModes:
    """How many events the inbox holds of each mode, the ``ignored`` ones
    (received under the other mode's settings and never processed) left out."""

    test: int
    live: int

    def of(self, mode: str) -> int:
        return self.live if mode == "live" else self.test


def stored_modes(engine: Engine) -> StoredModes:
    """The modes of the events this database has processed or will process."""
    events = inbox.events
    with engine.connect() as conn:
        counts: dict[bool, int] = dict(
            conn.execute(
                select(events.c.livemode, func.count())
                .where(events.c.status != "ignored")
                .group_by(events.c.livemode)
            ).all()
        )
    return StoredModes(test=int(counts.get(False, 0)), live=int(counts.get(True, 0)))


def check_mode(env: dict[str, Any], stored: StoredModes | None = None) -> Check:
    """The mode setting judged with the key, then against the events the
    database already holds (``stored``, when it could be read)."""
    key = _secret_key(env)
    if key is not None and isinstance(
        _judge(stripe_secret_key=key, stripe_webhook_secret=_STAND_IN_SECRET), ConfigError
    ):
        key = None  # malformed: the key's own check says so; judge the mode alone
    mode = env.get("mode")
    judged = _judge(
        stripe_secret_key=key,
        mode=mode,
        stripe_webhook_secret=_STAND_IN_SECRET if key is not None else None,
    )
    if isinstance(judged, ConfigError):
        return Check("mode", False, judged.message)
    effective = judged.effective_mode
    other = "test" if effective == "live" else "live"
    if stored is not None and stored.of(other):
        source = f"a {key.strip()[:8]}… key" if key is not None else "the settings (no key)"
        return Check(
            "mode",
            False,
            f"{effective} mode from {source}, but the database holds "
            f"{stored.of(other)} {other}-mode events (and {stored.of(effective)} {effective}-mode): "
            f"use the {other} key or point STRIPELINE_DATABASE_URL at the {effective} database",
        )
    if judged.mode is not None and key is not None:
        return Check("mode", True, f"{judged.mode}: STRIPELINE_MODE agrees with the key")
    if key is not None:
        return Check("mode", True, f"{effective}, from the key (STRIPELINE_MODE not set)")
    return Check("mode", True, effective + ("" if judged.mode else " (the default)"))


def _secret_entries(
    env: dict[str, Any], field: str
) -> tuple[Settings | ConfigError, list[str], list[int]]:
    """The setting judged whole, its entries, and the numbers of the malformed ones."""
    raw = env.get(field)
    entries = [part.strip() for part in str(raw or "").split(",") if part.strip()]
    bad = [
        i for i, entry in enumerate(entries, 1) if isinstance(_judge(**{field: entry}), ConfigError)
    ]
    return _judge(**{field: raw}), entries, bad


def check_webhook_secrets(env: dict[str, Any]) -> Check:
    name = "webhook secrets"
    judged, entries, bad = _secret_entries(env, "stripe_webhook_secret")
    if bad or isinstance(judged, ConfigError):
        which = ", ".join(str(i) for i in bad)
        return Check(
            name,
            False,
            f"STRIPE_WEBHOOK_SECRET entry {which} of {len(entries)} is malformed: expected whsec_…",
        )
    if judged.webhook_secrets:
        count = len(judged.webhook_secrets)
        plural = "secret" if count == 1 else "secrets (rotation)"
        return Check(name, True, f"{count} {plural}, well-formed (whsec_…)")
    if _secret_key(env) is None:
        return Check(name, True, "not set: the offline sandbox signs with its own secret")
    return Check(
        name,
        False,
        "STRIPE_WEBHOOK_SECRET is not set: webhooks from Stripe cannot be verified "
        "(copy the endpoint's signing secret, or the one `stripe listen` prints)",
    )


def check_connect_webhook_secrets(env: dict[str, Any]) -> Check:
    name = "connect webhook secrets"
    judged, entries, bad = _secret_entries(env, "stripe_connect_webhook_secret")
    if bad or isinstance(judged, ConfigError):
        which = ", ".join(str(i) for i in bad)
        return Check(
            name,
            False,
            f"STRIPE_CONNECT_WEBHOOK_SECRET entry {which} of {len(entries)} is malformed: "
            "expected whsec_…",
        )
    if judged.connect_webhook_secrets:
        return Check(name, True, f"{len(judged.connect_webhook_secrets)} well-formed (whsec_…)")
    return Check(name, True, "not set (no Connect endpoint)")


def check_settings(env: dict[str, Any]) -> Check:
    try:
        load_settings()
    except ConfigError as exc:
        return Check("settings", False, exc.message)
    return Check("settings", True, "every STRIPELINE_ setting is valid")


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(unparseable URL)"


def _database_url(env: dict[str, Any]) -> str | Check:
    """The database URL as ``Settings`` accepts it, or the failed check."""
    judged = _judge(database_url=env["database_url"]) if "database_url" in env else _judge()
    if isinstance(judged, ConfigError):
        return Check("database", False, judged.message)
    return judged.database_url


def check_database(url: str) -> tuple[Check, Engine | None]:
    name = "database"
    shown = _shown(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
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
        legacy = legacy_revision(engine) if current is None else None
    except SQLAlchemyError as exc:
        return Check(name, False, short_error(exc))
    if legacy is not None:
        return Check(
            name,
            False,
            f"at {legacy} in alembic_version (the old layout), newest is {head}: "
            f"run `stripeline migrate` (it moves the revision to {VERSION_TABLE})",
        )
    if current != head:
        return Check(
            name, False, f"at {current or 'none'}, newest is {head}: run `stripeline migrate`"
        )
    return Check(name, True, f"current ({head})")


#: Error types of a call Stripe refused for the key itself (401, 403).
KEY_REFUSED = ("StripeAuthenticationError", "StripePermissionError")


def check_stripe_writes(engine: Engine | None) -> Check:
    """The flows' writes (``stripeline_calls``): fails while the newest call
    that Stripe answered at all was refused for the key (401 or 403), which a
    key rotated away or a restricted key without write access gives."""
    name = "Stripe writes"
    if engine is None:
        return Check(name, False, "not checked: the database is unreachable")
    from stripeline.flows.calls import calls

    try:
        with connect(engine, readonly=True) as conn:
            row = conn.execute(
                select(calls.c.key, calls.c.error_type, calls.c.error_message, calls.c.updated_at)
                .where(calls.c.attempts > 0)
                .where(calls.c.status.in_(("done", "failed")) | calls.c.error_type.in_(KEY_REFUSED))
                .order_by(calls.c.updated_at.desc())
                .limit(1)
            ).first()
    except SQLAlchemyError as exc:
        return Check(name, False, short_error(exc))
    if row is None:
        return Check(name, True, "none made yet")
    if row.error_type in KEY_REFUSED:
        return Check(
            name,
            False,
            f"the last write ({row.key}, {row.updated_at:%Y-%m-%d %H:%M} UTC) was refused "
            f"for the key: {row.error_message}; check STRIPE_SECRET_KEY (a restricted key "
            "needs write access to the resources the flows write)",
        )
    return Check(name, True, f"the last write ({row.key}) was answered")


def check_delivery_health(engine: Engine | None) -> Check:
    """Stripe's ``v2.core.health.*`` events (from an Event Destination): fails
    while the newest one received says event delivery is failing (a type not
    ending in ``.resolved``)."""
    name = "event delivery health"
    if engine is None:
        return Check(name, False, "not checked: the database is unreachable")
    from stripeline.inbox import events

    try:
        with connect(engine, readonly=True) as conn:
            row = conn.execute(
                select(events.c.id, events.c.type, events.c.received_at)
                .where(events.c.type.like("v2.core.health.%"))
                .order_by(events.c.received_at.desc(), events.c.id.desc())
                .limit(1)
            ).first()
    except SQLAlchemyError as exc:
        return Check(name, False, short_error(exc))
    if row is None:
        return Check(name, True, "no health event received from Stripe")
    when = f"{row.received_at:%Y-%m-%d %H:%M} UTC"
    if str(row.type).endswith(".resolved"):
        return Check(name, True, f"the newest health event ({row.type}, {when}) is a resolution")
    return Check(
        name,
        False,
        f"Stripe reported {row.type} ({row.id}, {when}): events may be missing; run "
        "`stripeline sync events`, then `stripeline verify` once Stripe reports it resolved",
    )


def check_api_version() -> Check:
    from stripeline.gateway import API_VERSION, SDK_VERSION

    if not API_VERSION:
        return Check("API version", False, "the stripe SDK pins no API version")
    return Check(
        "API version",
        True,
        f"{API_VERSION}, pinned by stripe {SDK_VERSION} "
        "(set your webhook endpoints to the same version)",
    )


def run_checks() -> list[Check]:
    """Every check, in the order printed (the mode's is judged last: it
    compares the settings with the events the database holds)."""
    env = _environment()
    url = _database_url(env)
    if isinstance(url, Check):
        database, engine = url, None
    else:
        database, engine = check_database(url)
    stored: StoredModes | None = None
    writes: Check | None = None
    health: Check | None = None
    try:
        migrations = check_migrations(engine)
        if engine is not None and migrations.ok:
            try:
                stored = stored_modes(engine)
            except SQLAlchemyError:
                stored = None  # the migrations check passed: a passing blip, not a mode
            writes = check_stripe_writes(engine)
            health = check_delivery_health(engine)
    finally:
        if engine is not None:
            engine.dispose()
    checks = [check_secret_key(env), check_mode(env, stored)]
    simple: list[Callable[[dict[str, Any]], Check]] = [
        check_webhook_secrets,
        check_connect_webhook_secrets,
        check_settings,
    ]
    checks.extend(check(env) for check in simple)
    checks += [database, migrations]
    if writes is not None:
        checks.append(writes)
    if health is not None:
        checks.append(health)
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
