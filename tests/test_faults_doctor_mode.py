"""``stripeline doctor`` compares the configured mode with the events the
database already holds: a live key on a database of test-mode events (or the
other way round) fails the mode check, saying which and how many."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from stripeline.cli import main
from stripeline.db import make_engine
from tests.factories import store_events

TEST_KEY = "sk_test_51DoctorModeKeyQWERTYz"
LIVE_KEY = "sk_live_51DoctorModeLiveASDFGH"
SECRET = "whsec_DoctorModeSecretPoiuyt12"
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def store(engine: Engine, count: int, *, livemode: bool, status: str = "pending") -> None:
    payloads = [
        json.dumps(
            {
                "id": f"evt_{'live' if livemode else 'test'}_{status}_{i:05d}",
                "object": "event",
                "type": "customer.created",
                "created": int(T0.timestamp()),
                "livemode": livemode,
                "api_version": "2026-10-28.endive",
                "data": {"object": {"id": f"cus_{i:05d}", "object": "customer"}},
            }
        ).encode()
        for i in range(count)
    ]
    store_events(engine, payloads, at=T0, status=status)


def mode_line(result: Result) -> str:
    (line,) = [
        line
        for line in result.stdout.splitlines()
        if line.startswith(("pass", "FAIL")) and line.split(None, 1)[1].startswith("mode ")
    ]
    return line


@pytest.fixture
def configured(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    return make_engine(database_url)


def doctor() -> Result:
    return CliRunner().invoke(main, ["doctor"])


def test_live_key_on_test_mode_events_fails(
    configured: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(configured, 250, livemode=False)
    configured.dispose()
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)
    result = doctor()
    assert result.exit_code == 1, result.output
    line = mode_line(result)
    assert line.startswith("FAIL"), line
    assert "live mode" in line and "250 test-mode events" in line, line
    assert "1 of 10 checks failed" in result.stdout
    assert LIVE_KEY[8:] not in result.output


def test_test_key_on_live_mode_events_fails(
    configured: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(configured, 3, livemode=True)
    store(configured, 2, livemode=False)
    configured.dispose()
    monkeypatch.setenv("STRIPE_SECRET_KEY", TEST_KEY)
    result = doctor()
    assert result.exit_code == 1, result.output
    line = mode_line(result)
    assert line.startswith("FAIL"), line
    assert "test mode" in line and "3 live-mode events" in line and "2 test-mode" in line, line


def test_matching_events_and_ignored_other_mode_events_pass(
    configured: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Events of the other mode received while the settings were right are
    # stored `ignored`: they say nothing about a wrong database.
    store(configured, 4, livemode=True)
    store(configured, 5, livemode=False, status="ignored")
    configured.dispose()
    monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)
    result = doctor()
    assert result.exit_code == 0, result.output
    assert mode_line(result).startswith("pass")
