"""Django integration: ``INSTALLED_APPS += ["stripeline.contrib.django"]``.

What it brings (docs/integrations/django.md):

* ``path("stripe/", include("stripeline.contrib.django.urls"))``: the webhook
  endpoints (``webhooks/stripe``, ``webhooks/stripe/connect``), ``healthz`` and
  ``readyz``;
* ``manage.py migrate`` creates stripeline's tables in Django's database
  (the test database included);
* ``manage.py stripeline …``: the ``stripeline`` command with these settings
  (``manage.py stripeline worker``);
* read-only admin pages for the inbox and the mirror;
* a handler's ORM writes commit with the event's ``processed`` mark.

Settings: ``settings.STRIPELINE`` (see ``conf``). This package imports Django
only from its modules, never from here: listing it in ``INSTALLED_APPS``
loads nothing before Django is ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stripeline.app import Stripeline

__all__ = ["get_app"]


def get_app() -> Stripeline:
    """The project's ``Stripeline`` on Django's database (``conf.get_app``)."""
    from stripeline.contrib.django.conf import get_app as _get_app

    return _get_app()
