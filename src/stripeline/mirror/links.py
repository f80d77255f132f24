"""Application users ↔ Stripe customers: the one table the mirror's users write.

A link says that an application user *is* a Stripe customer, per account;
a user has at most one customer (``CustomerLinkConflict`` otherwise), a
customer may serve several users. ``Mirror.link_customer`` and its siblings
call these functions with the mirror's engine, or its connection (an
event's: the link then commits with the event, or not at all), and account.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.exc import IntegrityError

from stripeline.db import models
from stripeline.db.engine import connect, insert_for, read
from stripeline.errors import StripelineError
from stripeline.mirror.records import CustomerLink

links = cast(Table, models.CustomerLink.__table__)


class CustomerLinkConflict(StripelineError):
    """This application user is already linked to another Stripe customer."""


@contextmanager
def _writing(bind: Engine | Connection) -> Iterator[Connection]:
    """A transaction of its own on an engine; a connection's own transaction."""
    if isinstance(bind, Connection):
        yield bind
        return
    with connect(bind) as conn:
        yield conn


def link_customer(
    bind: Engine | Connection, account: str, app_user_id: str, customer_id: str
) -> CustomerLink:
    """Record that ``app_user_id`` is Stripe's ``customer_id`` (idempotent).

    Raises:
        CustomerLinkConflict: the user is already linked to another customer.
    """
    now = datetime.now(UTC)
    insert = insert_for(bind)
    statement = (
        insert(links)
        .values(account=account, app_user_id=app_user_id, customer_id=customer_id, created_at=now)
        .on_conflict_do_nothing(index_elements=[links.c.account, links.c.app_user_id])
    )
    try:
        with _writing(bind) as conn:
            conn.execute(statement)
            row = conn.execute(
                select(links).where(links.c.account == account, links.c.app_user_id == app_user_id)
            ).one()
    except IntegrityError as exc:  # pragma: no cover - the ON CONFLICT covers it
        raise CustomerLinkConflict() from exc
    link = CustomerLink(**row._mapping)
    if link.customer_id != customer_id:
        raise CustomerLinkConflict(
            f"app user {app_user_id!r} is already linked to {link.customer_id}"
        )
    return link


def customer_link(bind: Engine | Connection, account: str, app_user_id: str) -> CustomerLink | None:
    """The user's link, or None."""
    query = select(links).where(links.c.account == account, links.c.app_user_id == app_user_id)
    row = read(bind, lambda conn: conn.execute(query).first())
    return None if row is None else CustomerLink(**row._mapping)


def users_for_customer(bind: Engine | Connection, account: str, customer_id: str) -> list[str]:
    """The application users linked to ``customer_id``, sorted."""
    query = (
        select(links.c.app_user_id)
        .where(links.c.account == account, links.c.customer_id == customer_id)
        .order_by(links.c.app_user_id)
    )
    return read(bind, lambda conn: [row.app_user_id for row in conn.execute(query)])


def unlink_customer(bind: Engine | Connection, account: str, app_user_id: str) -> bool:
    """Forget the user's link; True if there was one."""
    with _writing(bind) as conn:
        result = conn.execute(
            links.delete().where(links.c.account == account, links.c.app_user_id == app_user_id)
        )
    return bool(result.rowcount)
