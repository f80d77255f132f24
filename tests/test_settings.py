"""Settings: read from the environment, refused with one clear line when wrong."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from stripeline.cli import main
from stripeline.errors import ConfigError
from stripeline.settings import load_settings

TEST_KEY = "sk_test_51AbCdEfGhIjKlMnOp"
LIVE_KEY = "sk_live_51AbCdEfGhIjKlMnOp"
WHSEC = "whsec_abcdefghijklmnop"


def test_defaults_without_any_environment() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///./stripeline.db"
    assert settings.effective_mode == "test"
    assert settings.uses_sandbox
    assert settings.webhook_tolerance == 300
    assert settings.body_limit == 2 * 1024 * 1024
    assert settings.webhook_secrets == ()


def test_reads_stripe_names_and_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{WHSEC}, whsec_second_secret_x")
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("STRIPELINE_WEBHOOK_TOLERANCE", "120")
    monkeypatch.setenv("STRIPELINE_RETRY_SCHEDULE", "1,2,3")
    settings = load_settings()
    assert [s.get_secret_value() for s in settings.webhook_secrets] == [
        WHSEC,
        "whsec_second_secret_x",
    ]
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.webhook_tolerance == 120
    assert settings.retry_schedule == (1, 2, 3)
    assert not settings.uses_sandbox


@pytest.mark.parametrize("key", [TEST_KEY, "rk_test_51AbCdEfGhIjKl"])
def test_test_keys_mean_test_mode(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", key)
    assert load_settings().effective_mode == "test"


def test_live_key_means_live_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WHSEC)
    settings = load_settings()
    assert settings.effective_mode == "live"
    assert settings.livemode


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STRIPE_SECRET_KEY": "pk_test_51AbCdEfGhIjKl"}, "STRIPE_SECRET_KEY is malformed"),
        ({"STRIPE_SECRET_KEY": "sk_test_"}, "STRIPE_SECRET_KEY is malformed"),
        ({"STRIPE_SECRET_KEY": "hunter2"}, "STRIPE_SECRET_KEY is malformed"),
        (
            {"STRIPE_SECRET_KEY": TEST_KEY, "STRIPELINE_MODE": "live"},
            "is a test key but STRIPELINE_MODE=live",
        ),
        (
            {
                "STRIPE_SECRET_KEY": LIVE_KEY,
                "STRIPELINE_MODE": "test",
                "STRIPE_WEBHOOK_SECRET": WHSEC,
            },
            "is a live key but STRIPELINE_MODE=test",
        ),
        ({"STRIPE_SECRET_KEY": LIVE_KEY}, "a live key needs STRIPE_WEBHOOK_SECRET"),
        ({"STRIPELINE_MODE": "live"}, "STRIPELINE_MODE=live needs STRIPE_SECRET_KEY"),
        ({"STRIPE_WEBHOOK_SECRET": "not-a-secret"}, "STRIPE_WEBHOOK_SECRET entry 1 is malformed"),
        (
            {"STRIPE_WEBHOOK_SECRET": f"{WHSEC},oops"},
            "STRIPE_WEBHOOK_SECRET entry 2 is malformed",
        ),
        ({"STRIPELINE_DATABASE_URL": "mysql://x"}, "STRIPELINE_DATABASE_URL must be"),
        ({"STRIPELINE_WEBHOOK_TOLERANCE": "0"}, "WEBHOOK_TOLERANCE"),
        ({"STRIPELINE_MODE": "staging"}, "MODE"),
        ({"STRIPELINE_RETRY_SCHEDULE": "10,soon"}, "STRIPELINE_RETRY_SCHEDULE must be"),
        ({"STRIPELINE_RETRY_SCHEDULE": "10,-1"}, "STRIPELINE_RETRY_SCHEDULE must be"),
    ],
)
def test_refuses_to_start_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert message in err.value.message
    assert "\n" not in err.value.message


def test_secrets_never_in_reprs_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_key = "sk_live_51VerySecretValue"
    monkeypatch.setenv("STRIPE_SECRET_KEY", secret_key)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WHSEC)
    settings = load_settings()
    assert secret_key not in repr(settings) and WHSEC not in repr(settings)
    assert secret_key not in str(settings.model_dump())
    monkeypatch.setenv("STRIPELINE_MODE", "test")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert secret_key not in str(err.value) and secret_key not in repr(err.value)


def test_cli_prints_one_line_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_51VerySecretValue")
    with capture_logs():
        result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "stripeline: configuration error: a live key needs STRIPE_WEBHOOK_SECRET: "
        "webhooks cannot be verified"
    ]
    assert "VerySecretValue" not in result.output


def test_mirror_policies_per_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPELINE_MIRROR_POLICIES", "subscription=refetch, invoice=payload")
    monkeypatch.setenv("STRIPELINE_MIRROR_POLICY", "payload")
    settings = load_settings()
    assert settings.policy_for("subscription") == "refetch"
    assert settings.policy_for("invoice") == "payload"
    assert settings.policy_for("customer") == "payload"
    assert settings.reads_per_second == 20.0
    monkeypatch.setenv("STRIPELINE_MIRROR_POLICIES", "subscription=sometimes")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "STRIPELINE_MIRROR_POLICIES must look like" in err.value.message
