"""The console's mirror, disputes and sync pages over HTTP: a page per mirror
object and the events that made it, the objects an event touched, attempts
numbered across replays, the customer filter, entitlements on the customer
page, disputes due with countdowns, the Sync page (catch-up history, backfill
progress, the last verify report) and its repair action (confirmed, audited,
refused to the read-only role), and the session-expired message."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect
from stripeline.db.models import ConsoleAudit
from stripeline.gateway import Reader
from stripeline.mirror._store import get_object
from stripeline.sync import backfill, catch_up, check_drift
from stripeline.web import create_app
from stripeline.web.console.auth import ENDED_COOKIE, Signer
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox
from tests.console_support import (
    ADMIN,
    CONSOLE_SECRET,
    READER,
    console_app,
    customer_events,
    status_of,
    store,
)
from tests.factories import event
from tests.test_console import BASE, csrf_of, sign_in
from tests.test_verify import plant, world


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    application = console_app(database_url, max_attempts=1)
    yield application
    application.dispose()


@pytest.fixture
def client(app: Stripeline) -> Iterator[TestClient]:
    with TestClient(create_app(app), base_url=BASE, follow_redirects=False) as http:
        yield http


def processed(app: Stripeline, bodies: list[dict[str, Any]]) -> None:
    store(app, bodies)
    Worker(app, listen=False).drain()
    for body in bodies:
        assert status_of(app, body["id"]) == "processed"


def test_a_mirror_object_has_a_page_with_its_json_and_the_events_that_made_it(
    app: Stripeline, client: TestClient
) -> None:
    bodies = customer_events()
    later = event(
        "invoice.updated",
        obj={**bodies[2]["data"]["object"], "description": "secret: sk_test_abcdefghijkl"},
        created=bodies[2]["created"] + 1,
    )
    processed(app, bodies)
    processed(app, [later])
    sign_in(client, ADMIN)
    page = client.get("/console/objects/in_console01")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="object-json"' in html and "GH-0001" in html and "<details" in html
    assert "sk_test_abcdefghijkl" not in html and "[redacted]" in html
    # Both events that made it, the newest marked as the state held.
    assert bodies[2]["id"] in html and later["id"] in html
    held = html.split('data-testid="state-from"')[1].split("</dd>")[0]
    assert later["id"] in held
    assert "/console/customers/cus_console01" in html
    # The first event's page says the mirror holds a newer state, and links it.
    first = client.get(f"/console/events/{bodies[2]['id']}").text
    touched = first.split('data-testid="touched"')[1].split("</table>")[0]
    assert "/console/objects/in_console01" in touched and later["id"] in touched
    latest = client.get(f"/console/events/{later['id']}").text
    mine = latest.split('data-testid="touched"')[1].split("</table>")[0]
    assert "this event" in mine and "/console/objects/in_console01" in mine
    assert client.get("/console/objects/in_nowhere").status_code == 404


def test_a_thin_event_names_its_related_object(app: Stripeline, client: TestClient) -> None:
    processed(app, customer_events())
    thin = {
        "id": "evt_test_thin_console",
        "object": "v2.core.event",
        "type": "v1.customer.updated",
        "created": "2026-11-27T10:00:00.000Z",
        "livemode": False,
        "related_object": {
            "id": "cus_console01",
            "type": "customer",
            "url": "/v1/customers/cus_console01",
        },
        "snapshot_event": "evt_test_thin_snapshot",
    }
    store(app, [thin])
    sign_in(client, ADMIN)
    html = client.get("/console/events/evt_test_thin_snapshot").text
    touched = html.split('data-testid="touched"')[1].split("</table>")[0]
    assert "/console/objects/cus_console01" in touched and "customer" in touched


def test_attempts_are_numbered_in_order_across_a_replay(
    app: Stripeline, client: TestClient
) -> None:
    failing = True

    @app.on("invoice.payment_failed")
    def ledger(e: ReceivedEvent) -> None:
        if failing:
            raise RuntimeError("ledger unavailable")

    body = event("invoice.payment_failed", obj={"id": "in_rounds", "object": "invoice"})
    store(app, [body])
    Worker(app, listen=False).drain()
    assert status_of(app, body["id"]) == "dead"
    token = sign_in(client, ADMIN)
    client.post(f"/console/events/{body['id']}/replay", data={"csrf": token, "confirm": "yes"})
    failing = False
    Worker(app, listen=False).drain()
    html = client.get(f"/console/events/{body['id']}").text
    rows = html.split('data-testid="attempts"')[1].split("</table>")[0].split("<tr class=")[1:]
    assert len(rows) == 2
    assert '<td class="num">1</td><td>1' in rows[0] and "dead" in rows[0]
    assert '<td class="num">2</td><td>2' in rows[1] and "processed" in rows[1]
    assert "2 in all (1 since the last replay or retry)" in html
    listed = client.get("/console/events", params={"object": "in_rounds"}).text
    row = listed.split('data-testid="events"')[1].split("</table>")[0]
    assert '"attempts logged, over every replay and retry">2</td>' in row


def test_the_event_list_filters_by_customer(app: Stripeline, client: TestClient) -> None:
    mine = customer_events()
    theirs = customer_events("cus_console02")
    processed(app, mine)
    processed(app, [event("customer.updated") for _ in range(3)])
    sign_in(client, ADMIN)
    html = client.get("/console/events", params={"customer": "cus_console01"}).text
    listed = html.split('data-testid="events"')[1]
    for body in mine:
        assert body["id"] in listed
    assert listed.count("<tr class=") == len(mine)
    assert 'value="cus_console01"' in html  # the filter is kept in the form
    del theirs


def test_the_customer_page_shows_entitlements_and_the_linked_user(
    app: Stripeline, client: TestClient
) -> None:
    now = int(time.time())
    item = {
        "id": "si_console01",
        "object": "subscription_item",
        "subscription": "sub_console01",
        "quantity": 1,
        "price": {"id": "price_pro", "object": "price", "product": "prod_pro"},
        "current_period_start": now - 3600,
        "current_period_end": now + 30 * 86400,
    }
    bodies = customer_events()
    bodies[1]["data"]["object"]["items"] = {"object": "list", "data": [item], "has_more": False}
    processed(app, bodies)
    app.entitlements.register("price_pro", "reports", "exports")
    app.mirror.link_customer("user_42", "cus_console01")
    sign_in(client, ADMIN)
    html = client.get("/console/customers/cus_console01").text
    granted = html.split('data-testid="entitlements"')[1].split("</table>")[0]
    assert "reports" in granted and "exports" in granted
    assert "user_42" in html.split('data-testid="users"')[1].split("</dd>")[0]
    assert "/console/events?customer=cus_console01" in html


def dispute(dispute_id: str, status: str, due_in: float, **evidence: Any) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "charge": "ch_console01",
        "amount": 4200,
        "currency": "eur",
        "status": status,
        "reason": "fraudulent",
        "created": int(time.time()) - 86400,
        "evidence": {},
        "evidence_details": {
            "due_by": int(time.time() + due_in),
            "has_evidence": bool(evidence.get("has_evidence")),
            "submission_count": int(evidence.get("submission_count", 0)),
            "past_due": False,
        },
        "balance_transactions": [],
    }


def test_the_disputes_page_counts_down_and_shows_evidence_and_outcome(
    app: Stripeline, client: TestClient
) -> None:
    charge = {
        "id": "ch_console01",
        "object": "charge",
        "customer": "cus_console01",
        "amount": 4200,
        "currency": "eur",
        "status": "succeeded",
        "disputed": True,
        "created": int(time.time()) - 86400,
    }
    processed(
        app,
        [
            event("charge.succeeded", obj=charge),
            event(
                "charge.dispute.created",
                obj=dispute("dp_soon", "needs_response", 3 * 86400 - 30),
            ),
            event(
                "charge.dispute.updated",
                obj=dispute("dp_draft", "needs_response", 12 * 86400 - 30, has_evidence=True),
            ),
            event(
                "charge.dispute.closed",
                obj=dispute("dp_won", "won", -86400, has_evidence=True, submission_count=1),
            ),
        ],
    )
    sign_in(client, ADMIN)
    html = client.get("/console/disputes").text
    due = html.split('data-testid="disputes-due"')[1].split("</table>")[0]
    assert due.index("dp_soon") < due.index("dp_draft")  # soonest first
    assert "2d 23h left" in due and "11d 23h left" in due
    assert "none yet" in due and "draft, not submitted" in due
    assert "/console/customers/cus_console01" in due
    other = html.split('data-testid="disputes-other"')[1].split("</table>")[0]
    assert "dp_won" in other and ">won<" in other and "submitted" in other
    assert "<script>" not in html


def test_sign_in_says_the_session_expired(client: TestClient) -> None:
    signer = Signer(CONSOLE_SECRET)
    plain = client.get("/console/login")
    assert 'data-testid="expired"' not in plain.text
    for marker, says in (
        (signer.ended_marker(int(time.time()) - 5), True),
        (signer.ended_marker(int(time.time()) + 600), False),  # not ended: no message
        (Signer("another-secret-of-thirty-two-chars!!").ended_marker(1), False),
        ("123.forged", False),
    ):
        client.cookies.set(ENDED_COOKIE, marker, domain="testserver.local", path="/console")
        page = client.get("/console/login")
        assert ("Your session expired: sign in again." in page.text) is says, marker
        client.cookies.clear()
    # Signing in sets the marker for the session's end; signing out removes it.
    page = client.get("/console/login")
    answer = client.post(
        "/console/login",
        data={"csrf": csrf_of(page.text), "username": ADMIN[0], "password": ADMIN[1]},
    )
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    ended = next(c for c in cookies if c.startswith(ENDED_COOKIE + "="))
    assert "httponly" in ended.lower() and f"max-age={28800 + 7 * 86400}" in ended.lower()
    token = csrf_of(client.get("/console/events").text)
    out = client.post("/console/logout", data={"csrf": token})
    assert any(
        c.startswith(ENDED_COOKIE + "=") and "max-age=0" in c.lower()
        for k, c in out.headers.multi_items()
        if k == "set-cookie"
    )


# -- the Sync page, against the sandbox ------------------------------------------


@pytest.fixture
def synced(
    database_url: str, stripe_sandbox: Sandbox, stripe_key: str
) -> Iterator[tuple[Stripeline, Reader]]:
    application = console_app(
        database_url,
        stripe_secret_key=stripe_key,
        stripe_api_base=stripe_sandbox.url,
        catch_up_interval=0,
    )
    fetcher = application.fetcher
    assert fetcher is not None
    yield application, fetcher.reader  # type: ignore[attr-defined]
    application.dispose()


def drifted(app: Stripeline, reader: Reader, stripe_client: stripe.StripeClient) -> dict[str, str]:
    engine: Engine = app.engine
    ids = world(stripe_client)
    assert backfill(engine, reader, ["customer", "subscription"]).complete
    catch_up(engine, reader, mode="test")
    plant(engine, ids)
    found = check_drift(engine, reader, ["customer", "subscription"])
    assert len(found.drift) == 3
    return ids


def test_the_sync_page_shows_catch_up_backfill_and_the_last_verify_report(
    synced: tuple[Stripeline, Reader], stripe_client: stripe.StripeClient
) -> None:
    app, reader = synced
    ids = drifted(app, reader, stripe_client)
    with TestClient(create_app(app), base_url=BASE, follow_redirects=False) as client:
        sign_in(client, READER)
        html = client.get("/console/sync").text
    runs = html.split('data-testid="catch-up-runs"')[1].split("</table>")[0]
    assert runs.count("complete") == 1
    assert 'data-testid="gap-alarm"' not in html and "no gap" in html
    assert "2 of 2 types finished" in html
    types = html.split('data-testid="backfill-types"')[1].split("</table>")[0]
    assert "customer" in types and "subscription" in types and "finished" in types
    assert "3 drifted objects" in html and "3 not repaired" in html
    drifted_rows = html.split('data-testid="drifted"')[1].split("</table>")[0]
    for object_id in (ids["customer"], ids["subscription"], "cus_ghost000000000001"):
        assert f"/console/objects/{object_id}" in drifted_rows
    assert "missing from the mirror" in drifted_rows and "status" in drifted_rows
    assert 'data-testid="repair-form"' not in html  # read-only: no action


def test_repair_from_the_sync_page_is_confirmed_audited_and_refused_when_read_only(
    synced: tuple[Stripeline, Reader], stripe_client: stripe.StripeClient
) -> None:
    app, reader = synced
    ids = drifted(app, reader, stripe_client)
    with TestClient(create_app(app), base_url=BASE, follow_redirects=False) as client:
        token = sign_in(client, READER)
        report = client.get("/console/sync").text.split('name="report" value="')
        assert len(report) == 1  # no form for the read-only role
        refused = client.post(
            "/console/sync/repair", data={"csrf": token, "confirm": "yes", "report": "1"}
        )
        assert refused.status_code == 403
        client.cookies.clear()

        token = sign_in(client, ADMIN)
        page = client.get("/console/sync").text
        report_id = page.split('name="report" value="')[1].split('"')[0]
        assert client.post("/console/sync/repair", data={"report": report_id}).status_code == 403
        confirm = client.post("/console/sync/repair", data={"csrf": token, "report": report_id})
        assert confirm.status_code == 200 and "Confirm repair" in confirm.text
        assert "3 drifted objects" in confirm.text
        with connect(app.engine, readonly=True) as conn:
            assert get_object(conn, ids["customer"]) is None  # nothing done yet
        done = client.post(
            "/console/sync/repair", data={"csrf": token, "report": report_id, "confirm": "yes"}
        )
        assert done.status_code == 303 and "done=3" in done.headers["location"]
        after = client.get("/console/sync").text
        audit = client.get("/console/audit").text
        assert "a drift check's report" in audit and '"objects"' not in audit
        stale = client.post(
            "/console/sync/repair", data={"csrf": token, "report": report_id, "confirm": "yes"}
        )
        assert stale.status_code == 409  # the report it named is no longer the last one
    assert "console:ada" in after and "3 drifted objects" in after and "0 not repaired" in after
    with connect(app.engine, readonly=True) as conn:
        customer = get_object(conn, ids["customer"])
        subscription = get_object(conn, ids["subscription"])
        repairs = conn.execute(
            select(ConsoleAudit.__table__.c.actor, ConsoleAudit.__table__.c.count).where(
                ConsoleAudit.__table__.c.action == "repair"
            )
        ).all()
    assert customer is not None and subscription is not None
    assert subscription["status"] == "trialing"
    assert [tuple(row) for row in repairs] == [(ADMIN[0], 3)]
    assert check_drift(app.engine, reader, ["customer", "subscription"]).clean


def test_repair_without_an_api_key_is_refused_and_changes_nothing(
    app: Stripeline, client: TestClient
) -> None:
    from stripeline.inbox import utcnow
    from stripeline.sync import history

    report = {
        "sample": None,
        "repair": False,
        "clean": False,
        "drift": 1,
        "unrepaired": 1,
        "types": [
            {
                "object_type": "customer",
                "checked": 1,
                "mirrored": 0,
                "changed": 0,
                "missing": 1,
                "extra": 0,
                "differs": 0,
                "drift": [
                    {
                        "object_type": "customer",
                        "id": "cus_missing",
                        "kind": "missing",
                        "fields": [],
                        "repaired": False,
                    }
                ],
            }
        ],
    }
    with connect(app.engine) as conn:
        history.save_verify_report(conn, report, actor="nightly", now=utcnow())
    token = sign_in(client, ADMIN)
    page = client.get("/console/sync").text
    assert "cus_missing" in page and "disabled" in page.split('data-testid="repair-form"')[1]
    report_id = page.split('name="report" value="')[1].split('"')[0]
    answer = client.post(
        "/console/sync/repair", data={"csrf": token, "report": report_id, "confirm": "yes"}
    )
    assert answer.status_code == 409 and "No Stripe API key" in answer.text
    with connect(app.engine, readonly=True) as conn:
        kept = history.last_verify_report(conn)
        repairs = conn.execute(
            select(ConsoleAudit.__table__).where(ConsoleAudit.__table__.c.action == "repair")
        ).all()
    assert kept is not None and str(kept.id) == report_id and not repairs


def test_the_sync_page_raises_the_gap_alarm(app: Stripeline, client: TestClient) -> None:
    from stripeline.inbox import utcnow
    from stripeline.sync.cursors import COVERED_CURSOR, save_cursor

    now = utcnow()
    old = int(now.timestamp()) - 27 * 86400  # past the alarm, before Stripe's 30 days
    with connect(app.engine) as conn:
        save_cursor(conn, "evt_old", old, now=now)
        save_cursor(conn, "evt_old", old, now=now, name=COVERED_CURSOR)
    sign_in(client, READER)
    html = client.get("/console/sync").text
    alarm = html.split('data-testid="gap-alarm"')[1].split("</p>")[0]
    assert "GAP ALARM" in alarm and "27d 0h ago" in alarm and "stripeline sync events" in alarm
    assert "ALARM" in client.get("/console/").text  # and on the overview's catch-up tile
    with connect(app.engine) as conn:
        save_cursor(conn, "evt_new", int(now.timestamp()) - 60, now=now, name=COVERED_CURSOR)
    assert 'data-testid="gap-alarm"' not in client.get("/console/sync").text
