"""stripeline.contrib.django without a Django project: what it imports and
the environment ``manage.py stripeline`` hands the ``stripeline`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_architecture import SRC, imports_of


def test_only_contrib_django_imports_django() -> None:
    importers = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if any(module.split(".")[0] == "django" for module in imports_of(path))
    }
    assert importers
    assert all(Path(p).parts[:2] == ("contrib", "django") for p in importers), importers


def test_importing_the_package_loads_no_django() -> None:
    # INSTALLED_APPS imports it before Django's settings are ready.
    code = "import sys, stripeline.contrib.django; print('django' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_the_environment_of_manage_py_stripeline(monkeypatch) -> None:
    from stripeline.contrib.django.management.commands.stripeline import environment
    from stripeline.settings import load_settings

    env = environment(
        {
            "stripe_webhook_secret": "whsec_abcdefgh12345678",
            "stripe_secret_key": None,
            "retry_schedule": (1, 2, 3),
            "mirror_policies": {"invoice": "refetch"},
            "body_limit": 4096,
        },
        "sqlite:///shop.sqlite3",
    )
    assert env == {
        "STRIPELINE_DATABASE_URL": "sqlite:///shop.sqlite3",
        "STRIPE_WEBHOOK_SECRET": "whsec_abcdefgh12345678",
        "STRIPELINE_RETRY_SCHEDULE": "1,2,3",
        "STRIPELINE_MIRROR_POLICIES": "invoice=refetch",
        "STRIPELINE_BODY_LIMIT": "4096",
    }
    # What the commands read back from it is what the dict said.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.body_limit == 4096
    assert settings.retry_schedule == (1, 2, 3)
    assert settings.policy_for("invoice") == "refetch"
    assert settings.database_url == "sqlite:///shop.sqlite3"
    assert [s.get_secret_value() for s in settings.webhook_secrets] == ["whsec_abcdefgh12345678"]
