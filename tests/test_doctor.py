"""``stripeline doctor``: one line per check, exit 1 on any failure, no secret shown."""

from __future__ import annotations

from pathlib import Path

import pytest
import stripe
from click.testing import CliRunner, Result
from pydantic import SecretStr
from sqlalchemy import text

from stripeline.app import Stripeline
from stripeline.cli import main
from stripeline.db import make_engine
from stripeline.errors import StripeAuthenticationError
from stripeline.settings import Settings
from stripeline_sandbox import Sandbox

KEY = "sk_test_51DoctorKeyQWERTYzxcvb"
LIVE_KEY = "sk_live_51DoctorLiveKeyASDFGH"
SECRET = "whsec_DoctorSecretPoiuyt1234"
OLD_SECRET = "whsec_OldRotatedSecretMnbv987"


def doctor() -> Result:
    return CliRunner().invoke(main, ["doctor"])


def lines(result: Result) -> dict[str, str]:
    """Check name → its whole line."""
    found = {}
    for line in result.stdout.splitlines():
        parts = line.split(None, 1)
        if parts and parts[0] in ("pass", "FAIL"):
            for name in (
                "secret key",
                "mode",
                "webhook secrets",
                "connect webhook secrets",
                "settings",
                "database",
                "migrations",
                "Stripe writes",
                "event delivery health",
                "API version",
            ):
                if parts[1].startswith(name + " "):
                    found[name] = line
    return found


def assert_no_secret(result: Result) -> None:
    for secret in (KEY, LIVE_KEY, SECRET, OLD_SECRET):
        assert secret not in result.output
        # Nothing past the type prefix either.
        body = secret.split("_", 2)[-1] if secret.startswith("sk_") else secret[6:]
        assert body[:4] not in result.output


def test_everything_passes(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", KEY)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{SECRET},{OLD_SECRET}")
    monkeypatch.setenv("STRIPELINE_MODE", "test")

    result = doctor()

    assert result.exit_code == 0, result.output
    found = lines(result)
    assert len(found) == 10
    assert all(line.startswith("pass") for line in found.values()), result.output
    assert "none made yet" in found["Stripe writes"]
    assert "sk_test_… secret key, test mode" in found["secret key"]
    assert "agrees with the key" in found["mode"]
    assert "2 secrets" in found["webhook secrets"]
    assert "reachable" in found["database"]
    assert "current" in found["migrations"]
    assert stripe.api_version in found["API version"]
    assert "no health event received" in found["event delivery health"]
    assert "all 10 checks passed" in result.stdout
    assert_no_secret(result)


def test_sandbox_setup_without_keys_passes(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    result = doctor()
    assert result.exit_code == 0, result.output
    assert "offline sandbox" in lines(result)["secret key"]


def test_mode_disagreement_and_bad_secret_fail_without_showing_them(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)
    monkeypatch.setenv("STRIPELINE_MODE", "test")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{SECRET},{OLD_SECRET[6:]}")

    result = doctor()

    assert result.exit_code == 1
    found = lines(result)
    assert found["secret key"].startswith("pass") and "live mode" in found["secret key"]
    assert found["mode"].startswith("FAIL") and "STRIPELINE_MODE=test" in found["mode"]
    assert (
        found["webhook secrets"].startswith("FAIL") and "entry 2 of 2" in found["webhook secrets"]
    )
    assert found["settings"].startswith("FAIL")
    # The database checks still ran.
    assert found["database"].startswith("pass") and found["migrations"].startswith("pass")
    assert "3 of 10 checks failed" in result.stdout
    assert_no_secret(result)


def test_malformed_key_fails(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "pk_test_publishableKeyZZZZ")
    result = doctor()
    assert result.exit_code == 1
    assert lines(result)["secret key"].startswith("FAIL")
    assert "publishableKey" not in result.output


def test_a_real_key_without_webhook_secret_fails(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", KEY)
    result = doctor()
    assert result.exit_code == 1
    assert lines(result)["webhook secrets"].startswith("FAIL")


def test_unmigrated_database_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", url)
    result = doctor()
    assert result.exit_code == 1
    found = lines(result)
    assert found["database"].startswith("pass")
    assert found["migrations"].startswith("FAIL") and "stripeline migrate" in found["migrations"]


def test_missing_sqlite_file_fails_and_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "absent.db"
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", f"sqlite:///{path}")
    result = doctor()
    assert result.exit_code == 1
    assert lines(result)["database"].startswith("FAIL")
    assert not path.exists()


def test_unreachable_postgres_fails_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "STRIPELINE_DATABASE_URL", "postgresql://stripeline:hunter2@127.0.0.1:1/nowhere"
    )
    result = doctor()
    assert result.exit_code == 1
    found = lines(result)
    assert found["database"].startswith("FAIL") and "unreachable" in found["database"]
    assert found["migrations"].startswith("FAIL")
    assert "hunter2" not in result.output


def test_a_write_refused_for_the_key_fails_until_one_is_answered(
    stripe_sandbox: Sandbox, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flows' configuration alarm: a key Stripe refuses (401) shows in doctor."""
    refused = Stripeline(
        Settings(
            stripe_secret_key=SecretStr("rk_test_restricted_doctor"),
            stripe_api_base=stripe_sandbox.url,
            database_url=database_url,
            max_network_retries=0,
        )
    )
    params = {"email": "doctor@example.com"}

    def create(app: Stripeline, reference: str) -> None:
        app.calls.run(
            "customer:create",
            reference,
            params,
            lambda client, key: client.v1.customers.create(params, {"idempotency_key": key}),  # type: ignore[arg-type]
        )

    try:
        with pytest.raises(StripeAuthenticationError):
            create(refused, "doctor")
    finally:
        refused.dispose()
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", database_url)
    result = doctor()
    assert result.exit_code == 1
    line = lines(result)["Stripe writes"]
    assert line.startswith("FAIL") and "customer:create:doctor" in line
    assert "refused for the key" in line and "restricted_doctor" not in result.output

    working = Stripeline(
        Settings(
            stripe_secret_key=SecretStr(stripe_sandbox.new_key()),
            stripe_api_base=stripe_sandbox.url,
            database_url=database_url,
        )
    )
    try:
        create(working, "doctor-2")
    finally:
        working.dispose()
    assert lines(doctor())["Stripe writes"].startswith("pass")
