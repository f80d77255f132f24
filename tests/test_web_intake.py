"""The webhook route for synchronous servers (``WebhookIntake.receive``):
the same answers as the ASGI route, each decided once in ``web.intake``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, text

from stripeline.app import Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import Event
from stripeline.settings import Settings
from stripeline.web.intake import WebhookIntake, readiness
from tests.factories import SECRET, encode, event, signed


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    settings = Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=database_url)
    application = Stripeline(settings, engine=make_engine(database_url))
    yield application
    application.dispose()


def stored(app: Stripeline) -> list[tuple[str, int]]:
    with connect(app.engine, readonly=True) as conn:
        return [tuple(r) for r in conn.execute(select(Event.id, Event.deliveries))]  # type: ignore[misc]


def receive(intake: WebhookIntake, body: bytes, headers: dict[str, str] | None = None) -> Any:
    signature = (headers if headers is not None else signed(body)).get("Stripe-Signature")
    return intake.receive("account", body, signature, client="127.0.0.1")


def test_a_signed_event_is_stored_once_and_each_delivery_counted(app: Stripeline) -> None:
    woken: list[int] = []
    intake = WebhookIntake(app, on_commit=lambda: woken.append(1))
    body = encode(event(id="evt_sync_1"))
    first = receive(intake, body)
    again = receive(intake, body)
    assert (first.status, first.outcome, first.body["duplicate"]) == (200, "stored", False)
    assert (again.status, again.outcome, again.body["duplicate"]) == (200, "duplicate", True)
    assert stored(app) == [("evt_sync_1", 2)]
    assert woken == [1]  # the worker is woken for the new event only
    assert b'"received":true' in first.content()


def test_refusals_store_nothing(app: Stripeline) -> None:
    intake = WebhookIntake(app)
    body = encode(event())
    bad = receive(intake, body, signed(body, "whsec_someone_else"))
    missing = receive(intake, body, {})
    not_json = receive(intake, b"{", signed(b"{"))
    too_large = receive(intake, b" " * (app.settings.body_limit + 1), {})
    assert [bad.status, missing.status, not_json.status, too_large.status] == [400, 400, 400, 413]
    assert [bad.outcome, not_json.outcome, too_large.outcome] == [
        "bad_signature",
        "bad_payload",
        "too_large",
    ]
    assert stored(app) == []


def test_connect_without_a_secret_is_404(app: Stripeline) -> None:
    body = encode(event())
    answer = WebhookIntake(app).receive("connect", body, signed(body)["Stripe-Signature"])
    assert answer.status == 404
    assert answer.body["error"] == "not_configured"


def test_a_value_the_database_refuses_is_400_and_retrying_is_pointless(
    app: Stripeline, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the refusal is made with a SQLite trigger")
    with connect(app.engine) as conn:
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON stripeline_events "
                "WHEN NEW.id = 'evt_refused' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
    answer = receive(WebhookIntake(app), encode(event(id="evt_refused")))
    assert (answer.status, answer.outcome) == (400, "bad_payload")
    assert stored(app) == []


def test_an_unreachable_database_is_503_with_retry_after(tmp_path: Any) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
    settings = Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=url)
    app = Stripeline(settings, engine=make_engine(url))
    try:
        answer = receive(WebhookIntake(app), encode(event()))
        assert (answer.status, answer.outcome) == (503, "unavailable")
        assert answer.headers["Retry-After"] == "5"
        ready, checks = readiness(app)
        assert not ready
        assert checks["database"].startswith("unreachable")
    finally:
        app.dispose()


def test_readiness_of_a_migrated_database(app: Stripeline) -> None:
    ready, checks = readiness(app)
    assert ready, checks
    assert checks == {"database": "ok", "migrations": "ok", "writes": "ok"}
    with connect(app.engine, readonly=True) as conn:
        assert conn.scalar(select(func.count()).select_from(Event)) == 0


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (needs root and ``mount``; skipped without them)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root")
    volume = tmp_path / "volume"
    volume.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(volume)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"tmpfs cannot be mounted here: {mounted.stderr.decode().strip()}")
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


def test_a_sqlite_database_on_a_full_volume_is_not_ready(
    small_volume: Path, sqlite_template: Path
) -> None:
    """The write probe rolls back before SQLite needs a page, so a full disk
    passed it while every commit failed; the volume's free space is read."""
    shutil.copyfile(sqlite_template, small_volume / "stripeline.db")
    url = f"sqlite:///{small_volume}/stripeline.db"
    app = Stripeline(Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=url))
    filler = small_volume / "filler"
    try:
        assert readiness(app) == (True, {"database": "ok", "migrations": "ok", "writes": "ok"})
        free = shutil.disk_usage(small_volume).free
        with filler.open("wb") as f:
            f.write(b"\0" * (free - 1024 * 1024))
        ready, checks = readiness(app)
        assert not ready
        assert checks["writes"].startswith("refused: the database's volume has ")
        assert "less than the 8192 KiB needed" in checks["writes"]
        filler.unlink()
        assert readiness(app)[0]
    finally:
        app.dispose()
