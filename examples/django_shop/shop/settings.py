"""A small shop selling a subscription, with stripeline (docs/integrations/django.md)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "only-for-the-example-not-a-secret")
DEBUG = os.environ.get("SHOP_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "stripeline.contrib.django",  # webhooks, migrations, admin, `manage.py stripeline`
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _database() -> dict[str, object]:
    """SQLite next to manage.py, or PostgreSQL when SHOP_DATABASE_URL says so."""
    url = os.environ.get("SHOP_DATABASE_URL", "")
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        parts = urlsplit(url)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/"),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    name = Path(url.removeprefix("sqlite:///")) if url else BASE_DIR / "db.sqlite3"
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name,
        # A file, not Django's default in-memory test database: `manage.py
        # stripeline …` (its own connection) sees the test database too.
        "TEST": {"NAME": name.with_name(f"test-{name.name}")},
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# stripeline: keys are its settings' names; what is not here comes from the
# environment (STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET …). The database is
# DATABASES["default"].
STRIPELINE = {
    "app": "shop.billing:app",
    "stripe_secret_key": os.environ.get("STRIPE_SECRET_KEY"),
    "stripe_webhook_secret": os.environ.get("STRIPE_WEBHOOK_SECRET"),
    "stripe_api_base": os.environ.get("STRIPELINE_STRIPE_API_BASE"),
}
