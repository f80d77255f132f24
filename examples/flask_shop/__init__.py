"""A small Flask shop on stripeline: one-time payments and a subscription.

Run it (from ``examples/``)::

    stripeline migrate && flask --app flask_shop init-db
    gunicorn --workers 2 --preload --bind 127.0.0.1:8000 'flask_shop:create_app()'

See README.md beside this file.
"""

from __future__ import annotations

from flask_shop.shop import create_app

__all__ = ["create_app"]
