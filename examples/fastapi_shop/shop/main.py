"""The shop, served: ``stripeline migrate``, then ``uvicorn shop.main:app``."""

from __future__ import annotations

from shop.app import create_shop
from shop.billing import billing

app = create_shop(billing)
