"""The Django app, through the example shop's own tests (``manage.py test``).

Django configures itself once per process, so its tests run in a process of
their own, by Django's test runner, on SQLite and on PostgreSQL. What they
prove (examples/django_shop/shop/tests.py): ``migrate`` puts stripeline's
tables in the test database; the webhook view stores a signed event and
refuses bad ones (under WSGI and Django's ASGI handler); the worker runs the handler on Django's connection, so its
ORM write commits with the event's processed mark, or (the handler raises
after writing) neither does and the event is retried; a handler given up
past its timeout commits nothing and cannot write afterwards; readiness; the admin
pages and the retry action; ``manage.py stripeline events list``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL, _admin_engine

SHOP = Path(__file__).resolve().parent.parent / "examples" / "django_shop"


def run_shop_tests(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE", "DJANGO"))}
    env["SHOP_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "manage.py", "test", "shop", "--noinput", "-v", "2"],
        cwd=SHOP,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def check(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-6000:]
    assert "Ran 9 tests" in result.stderr
    assert "\nOK" in result.stderr
    assert "test_a_handler_that_raises_after_its_orm_write_leaves_no_row_and_is_retried" in (
        result.stderr
    )


@pytest.mark.slow
def test_the_shop_tests_pass_on_sqlite(tmp_path: Path) -> None:
    check(run_shop_tests(f"sqlite:///{tmp_path / 'shop.sqlite3'}"))


@pytest.mark.slow
@pytest.mark.postgres
def test_the_shop_tests_pass_on_postgresql() -> None:
    if not POSTGRES_URL:
        pytest.skip("STRIPELINE_TEST_POSTGRES_URL is not set")
    name = f"shop_{uuid.uuid4().hex[:10]}"  # Django tests in test_<name>, dropped after
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        check(run_shop_tests(url))
    finally:
        admin = _admin_engine()
        with admin.connect() as conn:
            from sqlalchemy import text

            conn.execute(text(f'DROP DATABASE IF EXISTS "test_{name}" WITH (FORCE)'))
        admin.dispose()
